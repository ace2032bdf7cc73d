"""The one origin of the embedded default: ``make dev`` serves HTTP and WebSockets on ``PORT``.

In production nginx does this (docker/nginx.conf). ``make dev`` runs this small proxy for the same routing,
so ``links.websocket``, ``links.events`` and every URL it prints work on one port, whether or not
``PUBLIC_BASE_URL`` is set.

1. Each request is routed by its head: to the realtime process (``REALTIME_PORT``) a WebSocket under
   ``/ws/``, an event stream (``/v1/lifecycles/{id}/events``), a chat completion
   (``/v1/chat/completions``) and a request that asks to wait (``Prefer: wait=N``), since that process
   holds them as coroutines; anything else to the web process
   (``WEB_PORT``). A keep-alive connection may alternate: a browser's ``EventSource`` can reuse the
   connection of an earlier ``fetch``. Each upstream gets a connection of its own, kept for the next
   request that goes there.
2. Request bodies are framed by ``Content-Length``; a chunked body or a protocol switch (``Upgrade``) pins
   the connection to its upstream from then on. Responses pass through untouched: clients wait for an
   answer before the next request (none pipelines across our two processes, and a pipelined request
   to the same upstream keeps its order).
3. Bytes pass through both ways with back-pressure (a slow reader pauses the other side) and half-closes
   passed on. When the upstream of the request in hand closes, so does the client's connection (gunicorn's
   sync workers close after each answer, and say so).
4. A head that is not HTTP, or longer than 64 KiB, gets ``400``; an upstream that refuses gets ``502``;
   both answer in JSON, like the API.

It adds no ``X-Forwarded-For``: nothing in the service reads the client's address, and the embedded
default is a development setup on one machine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys

import orjson

log = logging.getLogger("orchestrator.front")

MAX_HEAD = 65536
_EVENTS_PATH = re.compile(rb"^/v1/lifecycles/[^/?#]+/events(?:[?#]|$)")
_CHAT_PATH = re.compile(rb"^/v1/chat/completions(?:[?#]|$)")
_WAIT = re.compile(rb"(?:^|[,\s])wait\s*=", re.IGNORECASE)


def _answer(status: str, code: str, message: str) -> bytes:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


def _to_realtime(target: bytes, headers: dict[bytes, bytes]) -> bool:
    return (
        target.startswith(b"/ws/")
        or _EVENTS_PATH.match(target) is not None
        or _CHAT_PATH.match(target) is not None
        or _WAIT.search(headers.get(b"prefer", b"")) is not None
    )


class _Upstream(asyncio.Protocol):
    """The front's connection to one process, on behalf of one client connection."""

    def __init__(self, client: _Client, port: int) -> None:
        self.client, self.port = client, port
        self.transport: asyncio.Transport | None = None
        self.ended = False  # this end sent EOF

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.client.writing_paused:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)

    def eof_received(self) -> bool:
        self.ended = True
        return self.client.upstream_ended(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_lost(self)

    # The client sends only as fast as this upstream reads.
    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.transport.resume_reading()


class _Client(asyncio.Protocol):
    """The client's end: reads each request's head, and forwards it and its body to where it goes."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.body_left = 0  # bytes of the current request's body still to forward
        self.pinned = False  # a chunked body or a protocol switch: everything goes to ``current`` from now on
        self.current: _Upstream | None = None  # where the request in hand went
        self.upstreams: dict[int, _Upstream] = {}
        self.pending: list[bytes] = []  # for ``current`` while it connects
        self.connecting: asyncio.Future | None = None
        self.writing_paused = False
        self.ended = False  # the client sent EOF

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._forward()

    def _forward(self) -> None:
        while self.buffer and self.connecting is None:
            if self.pinned:
                self._send(bytes(self.buffer))
                self.buffer.clear()
            elif self.body_left:
                part = bytes(self.buffer[: self.body_left])
                del self.buffer[: len(part)]
                self.body_left -= len(part)
                self._send(part)
            elif not self._next_request():
                return

    def _next_request(self) -> bool:
        """Route the request whose head starts the buffer; False until the whole head is there."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self._refuse(_answer("400 Bad Request", "bad_request", "The request head is too long."))
            return False
        head = bytes(self.buffer[: end + 4])
        del self.buffer[: end + 4]
        lines = head[:end].split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self._refuse(_answer("400 Bad Request", "bad_request", "This port speaks HTTP."))
            return False
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        try:
            self.body_left = int(headers.get(b"content-length", b"0"))
        except ValueError:
            self._refuse(_answer("400 Bad Request", "bad_request", "Content-Length is not a number."))
            return False
        self.pinned = b"chunked" in headers.get(b"transfer-encoding", b"").lower() or b"upgrade" in headers
        port = self.front.realtime_port if _to_realtime(parts[1], headers) else self.front.web_port
        self._route(port)
        self._send(head)
        return True

    def _route(self, port: int) -> None:
        upstream = self.upstreams.get(port)
        if upstream is not None and upstream.transport is not None and not upstream.transport.is_closing():
            self.current = upstream
            return
        self.current = None
        self.transport.pause_reading()
        self.connecting = asyncio.ensure_future(self._connect(port))

    def _send(self, data: bytes) -> None:
        if self.current is None:
            self.pending.append(data)
        else:
            self.current.transport.write(data)

    async def _connect(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(lambda: _Upstream(self, port), self.front.upstream_host, port)
        except OSError as exc:
            log.warning("front: the process on port %d refused a connection: %s", port, exc)
            self._refuse(_answer("502 Bad Gateway", "unavailable", "The service is starting or restarting."))
            return
        if self.transport.is_closing():
            upstream.transport.close()
            return
        self.upstreams[port] = self.current = upstream
        for data in self.pending:
            upstream.transport.write(data)
        self.pending.clear()
        self.connecting = None
        if self.ended:
            self._pass_eof()
        self.transport.resume_reading()
        self._forward()

    def _refuse(self, answer: bytes) -> None:
        self.transport.write(answer)
        self.transport.close()

    # An upstream's end

    def upstream_ended(self, upstream: _Upstream) -> bool:
        if upstream is not self.current:
            upstream.transport.close()  # an idle one, between requests: forget it
            return False
        if self.ended or not self.transport.can_write_eof():
            self.transport.close()
            return False
        self.transport.write_eof()
        return True  # half-closed: the client may still send

    def upstream_lost(self, upstream: _Upstream) -> None:
        if self.upstreams.get(upstream.port) is upstream:
            del self.upstreams[upstream.port]
        if upstream is self.current:
            self.transport.close()

    # The client's end

    def eof_received(self) -> bool:
        self.ended = True
        if self.current is None:
            # Passed on once connected; or gone between requests, or before saying where to.
            return self.connecting is not None
        self._pass_eof()
        return True

    def _pass_eof(self) -> None:
        for upstream in list(self.upstreams.values()):
            if upstream is self.current and not upstream.ended and upstream.transport.can_write_eof():
                upstream.transport.write_eof()
            else:
                upstream.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connecting is not None:
            self.connecting.cancel()
        for upstream in list(self.upstreams.values()):
            upstream.transport.close()

    # The client reads slowly: every upstream waits.
    def pause_writing(self) -> None:
        self.writing_paused = True
        for upstream in self.upstreams.values():
            upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        for upstream in self.upstreams.values():
            upstream.transport.resume_reading()


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
