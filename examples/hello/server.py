#!/usr/bin/env python3
"""hello: the example application that cutover's demo and end-to-end tests deploy.

GET /        -> "hello from <VERSION> (revision <REVISION>, <COLOR>)"
GET /health  -> 200 "ok"  (the target health check and liveness check)
GET /version -> the version alone

The version comes from the VERSION file next to this script; cutover sets PORT, REVISION, COLOR.
"""
import http.server
import os
import signal
import socketserver
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "VERSION")) as f:
    VERSION = f.read().strip()
REVISION = os.environ.get("REVISION", "unknown")[:7]
COLOR = os.environ.get("COLOR", "-")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/health":
            body = b"ok\n"
        elif self.path == "/version":
            body = (VERSION + "\n").encode()
        else:
            body = f"hello from {VERSION} (revision {REVISION}, {COLOR})\n".encode()
        self.send_response(200)
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
