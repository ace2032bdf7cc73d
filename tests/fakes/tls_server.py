"""An HTTPS receiver on loopback, for the sender's TLS tests: ``python -m tests.fakes.tls_server PORT CERT KEY``
serves 200 ``{}`` to every POST with the certificate (and key) in those PEM files."""

from __future__ import annotations

import ssl
import sys
from http.server import ThreadingHTTPServer

from tests.fakes.http import JsonHandler


class Handler(JsonHandler):
    def do_GET(self) -> None:
        self._send(200)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._send(200)


if __name__ == "__main__":
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()
