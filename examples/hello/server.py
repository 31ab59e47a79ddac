#!/usr/bin/env python3
"""hello: the example application that cutover's demo and end-to-end tests deploy.

GET /        -> "hello from <VERSION> (revision <REVISION>, <COLOR>)"
GET /health  -> 200 "ok"  (the target health check and liveness check)
GET /version -> the version alone

The version comes from the VERSION file next to this script; cutover sets PORT, REVISION, COLOR.
Two knobs, set as env in cutover.yaml, let the end-to-end tests ship a bad release:
  FAIL_PERCENT=N  -> every request to / is answered 500 with probability N% (a broken version)
  UNHEALTHY=1     -> /health answers 503 (a version that never passes its health checks)
  UNHEALTHY_AFTER=S -> /health answers 503 once the process has run S seconds (a version that
                     breaks after it went live)
"""
import http.server
import os
import random
import signal
import socketserver
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "VERSION")) as f:
    VERSION = f.read().strip()
REVISION = os.environ.get("REVISION", "unknown")[:7]
COLOR = os.environ.get("COLOR", "-")
FAIL_PERCENT = float(os.environ.get("FAIL_PERCENT", "0"))
UNHEALTHY = os.environ.get("UNHEALTHY", "") not in ("", "0")
UNHEALTHY_AFTER = float(os.environ.get("UNHEALTHY_AFTER", "0"))
STARTED = time.monotonic()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        status = 200
        if self.path == "/health":
            broken = UNHEALTHY or (
                UNHEALTHY_AFTER > 0 and time.monotonic() - STARTED >= UNHEALTHY_AFTER)
            status, body = (503, b"unhealthy\n") if broken else (200, b"ok\n")
        elif self.path == "/version":
            body = (VERSION + "\n").encode()
        elif FAIL_PERCENT > 0 and random.uniform(0, 100) < FAIL_PERCENT:
            status, body = 500, f"{VERSION} failed\n".encode()
        else:
            body = f"hello from {VERSION} (revision {REVISION}, {COLOR})\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))
        sys.stdout.flush()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    port = int(os.environ.get("PORT", "8080"))
    server = Server(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"hello {VERSION} listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
