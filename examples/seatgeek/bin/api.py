#!/usr/bin/env python3
"""The example's `api` service: upcoming events as JSON.

GET /events   the events (what www shows)
GET /status   200 while it can serve (Gantry's health check)
GET /metrics  Prometheus text: requests by path and status, a latency
              histogram (what an application exports; Gantry's discovery
              finds it because api.json declares "metrics")
Listens on $HOST:$PORT (set by the Gantry agent); logs each request with
the X-Request-ID its load balancer gave it.
"""
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "1100"))
EVENTS = [
    {"id": 1, "title": "Mets at Yankees", "venue": "Yankee Stadium"},
    {"id": 2, "title": "Radiohead", "venue": "Madison Square Garden"},
    {"id": 3, "title": "Hamilton", "venue": "Richard Rodgers Theatre"},
]

# Application metrics: requests by (path, code), latency histogram.
BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)
LOCK = threading.Lock()
REQUESTS = {}
LATENCY = [0] * (len(BUCKETS) + 1)
LATENCY_SUM = [0.0]


def observe(path, code, seconds):
    path = path if path in ("/", "/events", "/status", "/metrics") else "other"
    with LOCK:
        REQUESTS[(path, code)] = REQUESTS.get((path, code), 0) + 1
        LATENCY[next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))] += 1
        LATENCY_SUM[0] += seconds


def exposition():
    lines = ["# HELP api_requests_total Requests served, by path and status code.",
             "# TYPE api_requests_total counter"]
    with LOCK:
        for (path, code), count in sorted(REQUESTS.items()):
            lines.append(f'api_requests_total{{path="{path}",code="{code}"}} {count}')
        lines += ["# HELP api_request_duration_seconds Time to answer a request.",
                  "# TYPE api_request_duration_seconds histogram"]
        total = 0
        for bound, count in zip(BUCKETS + ("+Inf",), LATENCY):
            total += count
            lines.append(f'api_request_duration_seconds_bucket{{le="{bound}"}} {total}')
        lines.append(f"api_request_duration_seconds_sum {LATENCY_SUM[0]}")
        lines.append(f"api_request_duration_seconds_count {total}")
    return ("\n".join(lines) + "\n").encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        started = time.monotonic()
        if self.path == "/metrics":
            code, body, kind = 200, exposition(), "text/plain; version=0.0.4"
        elif self.path == "/status":
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
        observe(self.path, code, time.monotonic() - started)

    def log_message(self, *args):
        pass


ThreadingHTTPServer.allow_reuse_address = True
print(f"api listening on {HOST}:{PORT}", flush=True)
ThreadingHTTPServer((HOST, PORT), Handler).serve_forever()
