"""What the fake servers share: a quiet JSON request handler and a threaded server on loopback."""

from __future__ import annotations

import contextlib
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # As real servers do: with Nagle's algorithm on, a body written after its headers waits for the
    # client's delayed ACK (~40 ms) on a kept-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes = b"{}", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        # The caller may have given up already (a webhook past its timeout): that is its business.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)


def serve(handler: type[JsonHandler]) -> None:
    """Serve on 127.0.0.1 at the port given as the first argument, until killed."""
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler)
    server.daemon_threads = True
    server.serve_forever()
