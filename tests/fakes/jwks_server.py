"""A fake identity provider's key endpoint, run as its own process on loopback: ``PUT /<name>`` sets the
JWKS that ``GET /<name>`` serves (a test rotates keys by putting a new set), and ``GET /fetches/<name>``
says how many times it was fetched."""

from __future__ import annotations

import json
import threading
from collections import Counter

from tests.fakes.http import JsonHandler, serve

documents: dict[str, bytes] = {}
fetches: Counter[str] = Counter()
lock = threading.Lock()


class Handler(JsonHandler):
    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with lock:
            documents[self.path] = body
        self._send(204, b"")

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200)
            return
        if self.path.startswith("/fetches/"):
            with lock:
                self._send(200, json.dumps(fetches["/" + self.path.removeprefix("/fetches/")]).encode())
            return
        with lock:
            fetches[self.path] += 1
            document = documents.get(self.path)
        self._send(200, document) if document is not None else self._send(404)


if __name__ == "__main__":
    serve(Handler)
