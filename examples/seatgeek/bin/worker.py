#!/usr/bin/env python3
"""The example's `worker`: a scheduled service (`"count": 3`), placed by
Gantry's scheduler on whichever local nodes have memory for it.

GET /status  200 (Gantry's health check)
GET /        which allocation this is, and the API it works against
Listens on $HOST:$PORT: the port the scheduler assigned this allocation.
"""
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ["PORT"])
API_URL = os.environ.get("API_URL", "-")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/status":
            body = b"ok\n"
        else:
            body = f"worker on {HOST}:{PORT}, working against {API_URL}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer.allow_reuse_address = True
print(f"worker listening on {HOST}:{PORT}, API at {API_URL}", flush=True)
ThreadingHTTPServer((HOST, PORT), Handler).serve_forever()
