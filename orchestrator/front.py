"""The one origin of the embedded default: ``make dev`` serves HTTP and WebSockets on ``PORT``.

In production nginx does this (docker/nginx.conf): ``/ws/`` goes to the realtime process, everything else
to the web process. ``make dev`` runs this small proxy for the same routing, so ``links.websocket`` and
every URL it prints work on one port, whether or not ``PUBLIC_BASE_URL`` is set.

1. A connection is routed by the path of its first request line: ``/ws/`` to the realtime process
   (``REALTIME_PORT``), anything else to the web process (``WEB_PORT``).
2. From then on its bytes pass through both ways untouched, with back-pressure each way (a slow reader
   pauses the other side) and half-closes passed on. A browser opens each WebSocket on a connection of its
   own, so routing once per connection is enough.
3. A first line that is not HTTP, or longer than 8 KiB, gets ``400``; an upstream that refuses gets ``502``;
   both answer in JSON, like the API.

It adds no ``X-Forwarded-For``: nothing in the service reads the client's address, and the embedded
default is a development setup on one machine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import orjson

log = logging.getLogger("orchestrator.front")

MAX_REQUEST_LINE = 8192
REALTIME_PREFIXES = (b"/ws/",)


def _answer(status: str, code: str, message: str) -> bytes:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


class _Side(asyncio.Protocol):
    """One end of a proxied connection: what it receives is written to the other end."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.other: _Side | None = None
        self.ended = False  # this end sent EOF

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.other.transport.write(data)

    def eof_received(self) -> bool:
        self.ended = True
        if self.other.ended or not self.other.transport.can_write_eof():
            self.other.transport.close()
            return False
        self.other.transport.write_eof()
        return True  # half-closed: the other end may still answer

    def connection_lost(self, exc: Exception | None) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.close()

    # The other end reads only as fast as this one writes.
    def pause_writing(self) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.resume_reading()


class _Client(_Side):
    """The client's end: holds what arrives until the request line says where the connection goes."""

    def __init__(self, front: Front) -> None:
        super().__init__()
        self.front = front
        self.head = bytearray()
        self.connecting: asyncio.Future | None = None

    def data_received(self, data: bytes) -> None:
        if self.other is not None:
            super().data_received(data)
            return
        self.head += data
        line_end = self.head.find(b"\r\n")
        if line_end < 0:
            if len(self.head) > MAX_REQUEST_LINE:
                self._refuse(_answer("400 Bad Request", "bad_request", "The request line is too long."))
            return
        parts = bytes(self.head[:line_end]).split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self._refuse(_answer("400 Bad Request", "bad_request", "This port speaks HTTP."))
            return
        self.transport.pause_reading()
        port = self.front.realtime_port if parts[1].startswith(REALTIME_PREFIXES) else self.front.web_port
        self.connecting = asyncio.ensure_future(self._connect(port))

    def eof_received(self) -> bool:
        if self.other is None:  # gone before saying where to
            return False
        return super().eof_received()

    def _refuse(self, answer: bytes) -> None:
        self.transport.write(answer)
        self.transport.close()

    async def _connect(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(_Side, self.front.upstream_host, port)
        except OSError as exc:
            log.warning("front: the process on port %d refused a connection: %s", port, exc)
            self._refuse(_answer("502 Bad Gateway", "unavailable", "The service is starting or restarting."))
            return
        if self.transport.is_closing():
            upstream.transport.close()
            return
        upstream.other, self.other = self, upstream
        upstream.transport.write(bytes(self.head))
        self.head.clear()
        self.transport.resume_reading()


class Front:
    def __init__(self, *, host: str, port: int, web_port: int, realtime_port: int, upstream_host: str = "127.0.0.1"):
        self.host, self.port = host, port
        self.web_port, self.realtime_port = web_port, realtime_port
        self.upstream_host = upstream_host

    async def serve(self, stop: asyncio.Event) -> None:
        server = await asyncio.get_running_loop().create_server(lambda: _Client(self), self.host, self.port)
        log.info(
            "front: HTTP and WebSockets on %s:%d (web on %d, realtime on %d)",
            self.host,
            self.port,
            self.web_port,
            self.realtime_port,
        )
        async with server:
            await stop.wait()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    port = int(os.environ.get("PORT", "8000"))
    front = Front(
        host=os.environ.get("HOST", "127.0.0.1"),
        port=port,
        web_port=int(os.environ.get("WEB_PORT", port + 2)),
        realtime_port=int(os.environ.get("REALTIME_PORT", port + 1)),
    )

    async def run() -> None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await front.serve(stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
