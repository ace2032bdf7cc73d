"""``GET /v1/lifecycles/{id}/events``: a lifecycle's stream as Server-Sent Events, for clients that cannot or
would rather not open a WebSocket (shared/ARCHITECTURE.md, Realtime).

1. The same token as the socket's (``ws_token``, or a subscriber's), as ``?token=`` or
   ``Authorization: Bearer``, from any origin (CORS). A missing or bad token gets ``401``, a lifecycle the
   token does not open ``404``, one stream too many for the token ``429``, PostgreSQL or Redis away
   ``503`` with ``Retry-After``: all JSON, like the rest of the API.
2. The same messages as the socket, each as one ``data:`` line of the same JSON; a timeline event's
   ``id:`` is its ``seq``, so a reconnecting ``EventSource`` resumes after what it had (``Last-Event-ID``;
   ``?since=`` does the same for other clients). After the final event the response ends, and a client
   that comes back with nothing left to hear gets ``204``, which tells ``EventSource`` to stop.
3. A comment every ``KEEPALIVE_S`` keeps proxies from timing an idle stream out and finds a client that
   has gone. The stream ends when its token expires, after ``{"type": "error", "error": {"code":
   "token_expired"}}``: the client mints a new token and reconnects with ``Last-Event-ID``.

Served by the realtime process (daphne), where a stream is a coroutine and holds no thread; the web
process (gunicorn's sync workers, a thread each) answers ``421`` and says so. nginx and ``make dev``'s
front route the path to the realtime process.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from lifecycle.states import TERMINAL
from orchestrator import metrics
from orchestrator.errors import json_error, unavailable
from orchestrator.outages import Outage, transient
from realtime import limits, tokens
from realtime.follower import LifecycleFollower
from realtime.groups import lifecycle_group
from realtime.messages import in_db_thread, opening, snapshot
from realtime.resync import resync

log = logging.getLogger(__name__)
_outage = Outage("realtime: PostgreSQL or Redis (opening event streams)", log)

KEEPALIVE_S = 15.0
RETRY_MS = 2000  # how long EventSource waits before it reconnects


def frame(message: dict, seq: int | None = None) -> bytes:
    """One Server-Sent Event. orjson escapes every newline, so the JSON is one ``data:`` line."""
    head = b"id: %d\n" % seq if seq is not None else b""
    return head + b"data: " + orjson.dumps(message) + b"\n\n"


def _token(request: HttpRequest) -> str:
    if token := request.GET.get("token"):
        return token
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def _since(request: HttpRequest) -> int:
    raw = request.headers.get("Last-Event-ID") or request.GET.get("since") or "0"
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


class EventStream(LifecycleFollower):
    """One open stream: what the channel layer brings goes through the follower's ordering into ``out``,
    which the response reads."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.key_id: int | None = None
        self.channel_layer = get_channel_layer()
        self.channel: str | None = None
        self.out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.counted = False  # against the token's limit
        self.started = False  # the response is reading the body
        self.abandoned = False

    async def emit(self, message: dict) -> None:
        self.out.put_nowait(frame(message, message.get("seq") if message["type"] == "event" else None))

    async def end(self) -> None:
        self.out.put_nowait(None)

    async def join(self, lifecycle_id: str) -> None:
        self.channel = await self.channel_layer.new_channel("sse.")
        await self.channel_layer.group_add(lifecycle_group(lifecycle_id), self.channel)

    async def abandon(self) -> None:
        """Let go of what the stream holds (its group, its count against the token), once, however it
        ends: the body done, the client gone before it started, an error."""
        if self.abandoned:
            return
        self.abandoned = True
        resync.discard(self)
        if self.channel is not None:
            await self.channel_layer.forget(self.channel)  # and with it, its group
        if self.counted:
            await limits.release(self.token)

    def closed(self) -> None:
        """The response was closed (from a thread of Django's): if the body never ran, abandon here."""
        if not self.started:
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.abandon()))

    async def _pump(self) -> None:
        """Hands what the channel layer brings to the follower, until the stream ends."""
        try:
            while not self.finished:
                message = await self.channel_layer.receive(self.channel)
                if message.get("type") == "lifecycle.event":
                    await self.on_event(message)
                elif message.get("type") == "lifecycle.delta":
                    await self.on_delta(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a catch-up that met the database away: the client resumes from its last id
            log.warning("realtime: an event stream of %s ends early: %s", self.lifecycle_id, exc)
            await self.end()

    async def revoke(self) -> None:
        """The API key that minted the token was revoked: the stream ends, saying so."""
        self.finished = True
        self._end_with_error("token_revoked", "The key that issued this token was revoked.")

    def _token_expired(self) -> None:
        self._end_with_error("token_expired", "The token has expired; reconnect with a new one.")

    def _end_with_error(self, code: str, message: str) -> None:
        self.out.put_nowait(frame({"type": "error", "error": {"code": code, "message": message}}))
        self.out.put_nowait(None)

    async def body(self, events: list[dict]):
        self.started = True
        expiry = self.loop.call_later(max(0.0, tokens.expires_at(self.token) - time.time()), self._token_expired)
        metrics.EVENT_STREAMS.inc()
        pump = None
        try:
            # What the stream opens with is queued before anything live is taken from the channel.
            await self.emit(snapshot(self.lifecycle))
            await self.send_events(events)
            pump = asyncio.create_task(self._pump())
            if settings.REALTIME_RESYNC_S > 0:
                resync.add(self)
            yield b"retry: %d\n\n" % RETRY_MS
            while True:
                try:
                    chunk = await asyncio.wait_for(self.out.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                chunks = [chunk]
                while chunk is not None and not self.out.empty():  # what is ready goes out in one write
                    chunk = self.out.get_nowait()
                    chunks.append(chunk)
                if chunks[-1] is None:
                    if len(chunks) > 1:
                        yield b"".join(chunks[:-1])
                    return
                yield b"".join(chunks)
        finally:
            expiry.cancel()
            if pump is not None:
                pump.cancel()
            metrics.EVENT_STREAMS.dec()
            await self.abandon()


class _EventStreamResponse(StreamingHttpResponse):
    def __init__(self, stream: EventStream, events: list[dict]) -> None:
        super().__init__(stream.body(events), content_type="text/event-stream")
        self.stream = stream
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"  # nginx passes each event on at once

    def close(self) -> None:
        super().close()
        self.stream.closed()


# A frontend on the customer's own domain is the intended client, and the token, not a cookie, is what
# grants access (as for sockets, which have no origin check): any origin may read a stream it holds a
# token for, and send the token as a Bearer header after a preflight.
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Last-Event-ID",
    "Access-Control-Max-Age": "600",
}


async def lifecycle_events(request: HttpRequest, lifecycle_id) -> HttpResponse:
    if request.method == "OPTIONS":
        response = HttpResponse(status=204)
    elif request.method != "GET":
        response = json_error(405, "method_not_allowed", "Event streams are read with GET.")
    else:
        response = await _events(request, lifecycle_id)
    for name, value in CORS.items():
        response[name] = value
    return response


async def _events(request: HttpRequest, lifecycle_id) -> HttpResponse:
    token = _token(request)
    scope = tokens.verify(token) if token else None
    if scope is None:
        return json_error(401, "unauthorized", "A valid realtime token is required, as ?token= or a Bearer header.")
    lifecycle_id = str(lifecycle_id)
    if scope.lifecycle_id not in (None, lifecycle_id):
        return json_error(404, "not_found", "No such lifecycle.")
    since = _since(request)
    stream = EventStream(token)
    stream.key_id = scope.key_id
    try:
        response = await _open(stream, scope, lifecycle_id, since)
    except BaseException:  # the client gone (cancelled) or an error: nothing stays held
        await stream.abandon()
        raise
    if not isinstance(response, _EventStreamResponse):
        await stream.abandon()
    return response


async def _open(stream: EventStream, scope: tokens.RealtimeScope, lifecycle_id: str, since: int) -> HttpResponse:
    try:
        # Join the group before reading, as a socket does: nothing committed from now on is missed.
        await stream.join(lifecycle_id)
        lifecycle, events = await in_db_thread(opening)(lifecycle_id, since, scope.key_id)
    except Exception as exc:
        if not transient(exc):
            raise
        _outage.failed(exc)
        return unavailable()
    _outage.ok()
    if lifecycle is not None and lifecycle.key_revoked:
        return json_error(401, "unauthorized", "The key that issued this token was revoked.")
    allowed = lifecycle is not None and scope.allows(
        project_id=str(lifecycle.project_id), lifecycle_id=lifecycle_id, user_id=lifecycle.subscriber.get("user_id")
    )
    if not allowed:
        return json_error(404, "not_found", "No such lifecycle.")
    if lifecycle.status in TERMINAL and since >= lifecycle.last_seq:
        return HttpResponse(status=204)  # heard to the end already: EventSource stops reconnecting
    if not await limits.acquire(stream.token):
        return json_error(429, "too_many_streams", "This token has as many streams open as it may.")
    stream.counted = True
    stream.lifecycle, stream.last_seq = lifecycle, since
    return _EventStreamResponse(stream, events)


def served_elsewhere(request: HttpRequest, lifecycle_id) -> HttpResponse:
    """The web process's answer: its workers hold a thread per request, so streams are the realtime
    process's to serve (nginx and make dev's front route them there)."""
    return json_error(
        421, "misdirected_request", "Event streams are served by the realtime process; route this path to it."
    )
