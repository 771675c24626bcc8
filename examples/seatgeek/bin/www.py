#!/usr/bin/env python3
"""The example's `app-www` service: the public page, built from a call to
the api through this node's local load balancer ($API_URL, which Gantry
resolves to the frontend on this node).

GET /        the page (502 when the api cannot be reached)
GET /status  200 while it can serve (Gantry's health check)
"""
import html
import json
import os
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "8080"))
API_URL = os.environ["API_URL"]


def events(request_id):
    request = urllib.request.Request(f"{API_URL}/events", headers={"X-Request-ID": request_id})
    with urllib.request.urlopen(request, timeout=2) as answer:
        return json.load(answer)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        request_id = self.headers.get("X-Request-ID", "-")
        if self.path == "/status":
            code, body = 200, "ok\n"
        else:
            try:
                data = events(request_id)
                items = "".join(f"<li>{html.escape(e['title'])} at {html.escape(e['venue'])}</li>" for e in data["events"])
                code = 200
                body = (
                    "<!doctype html><title>SeatGeek</title><h1>Upcoming events</h1>"
                    f"<ul>{items}</ul><p>page by www at {HOST}:{PORT}; events from api at "
                    f"{html.escape(data['served_by'])} through {html.escape(API_URL)}</p>\n"
                )
            except Exception as error:  # the api is down or moving: say so
                code, body = 502, f"api unavailable through {API_URL}: {error}\n"
        print(f"GET {self.path} {code} request-id={request_id}", flush=True)
        encoded = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    def log_message(self, *args):
        pass


ThreadingHTTPServer.allow_reuse_address = True
print(f"www listening on {HOST}:{PORT}, api at {API_URL}", flush=True)
ThreadingHTTPServer((HOST, PORT), Handler).serve_forever()
