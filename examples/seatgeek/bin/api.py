#!/usr/bin/env python3
"""The example's `api` service: upcoming events as JSON.

GET /events  the events (what www shows)
GET /status  200 while it can serve (Gantry's health check)
Listens on $HOST:$PORT (set by the Gantry agent); logs each request with
the X-Request-ID its load balancer gave it.
"""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "1100"))
EVENTS = [
    {"id": 1, "title": "Mets at Yankees", "venue": "Yankee Stadium"},
    {"id": 2, "title": "Radiohead", "venue": "Madison Square Garden"},
    {"id": 3, "title": "Hamilton", "venue": "Richard Rodgers Theatre"},
]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/status":
            code, body, kind = 200, b"ok\n", "text/plain"
        elif self.path in ("/", "/events"):
            payload = {"events": EVENTS, "served_by": f"{HOST}:{PORT}"}
            code, body, kind = 200, json.dumps(payload).encode(), "application/json"
        else:
            code, body, kind = 404, b"not found\n", "text/plain"
        print(f"{self.command} {self.path} {code} request-id={self.headers.get('X-Request-ID', '-')}", flush=True)
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer.allow_reuse_address = True
print(f"api listening on {HOST}:{PORT}", flush=True)
ThreadingHTTPServer((HOST, PORT), Handler).serve_forever()
