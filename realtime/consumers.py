"""The WebSocket a frontend opens on one lifecycle: ``/ws/lifecycles/{id}?token=<ws_token>&since=<seq>``.

1. The token is checked before the socket is accepted: a wrong, expired or other-scope token gets the
   handshake refused (HTTP 403) and no data at all.
2. The consumer joins the lifecycle's channel group *before* reading the database, then sends a
   ``snapshot`` and every timeline event after ``since``; from then on it sends what the group brings, once
   and in order (realtime/follower.py, which the Server-Sent Events stream shares: realtime/sse.py).
3. Live events follow as ``{"type": "event", "lifecycle_id", "seq", "event", "at", "data"}``; the last one is
   ``lifecycle.completed`` (with ``result``) or ``lifecycle.failed`` / ``lifecycle.cancelled`` (with
   ``error``), after which the server closes the socket (1000).
4. While a model streams (``params.stream``), ``{"type": "delta", "event": "generation.delta", "text",
   "offset"}`` messages carry its output as it comes, coalesced; they have no ``seq`` and are not replayed.
5. A token may hold ``REALTIME_MAX_CONNECTIONS_PER_TOKEN`` sockets at once; one more is closed with 4429.
6. Clients only listen: ``{"type": "ping"}`` gets ``{"type": "pong"}``; any other frame (text or binary,
   JSON or not) gets ``{"type": "error", "error": {"code": "invalid_message", ...}}`` and the socket
   stays open.
7. When the channel layer's Redis connection comes back after it was lost, and every ``REALTIME_RESYNC_S``
   besides, the sockets that missed something read it from the database. One task per process does this
   for all its sockets (realtime/resync.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from urllib.parse import parse_qs

import orjson
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from lifecycle.states import TERMINAL
from orchestrator import metrics
from orchestrator.outages import Outage, transient
from realtime import limits, tokens
from realtime.follower import LifecycleFollower
from realtime.groups import lifecycle_group, subscriber_group
from realtime.messages import in_db_thread, is_uuid, opening, snapshot
from realtime.payloads import browser_data
from realtime.resync import resync

log = logging.getLogger(__name__)
_outage = Outage("realtime: PostgreSQL or Redis (opening sockets)", log)


CLOSE_NORMAL = 1000
CLOSE_TOO_MANY = 4429
# 1013 (try again later) would say it, but the protocol keeps 1001-2999 for itself: autobahn refuses to send
# them from an application, so it is 4013 here.
CLOSE_TRY_AGAIN_LATER = 4013
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_KEY_REVOKED = 4403
MAX_MESSAGE = 4096  # characters: a ping is 16


class _CountedSocket(AsyncJsonWebsocketConsumer):
    """What both sockets share: the per-token connection count, and one channel-layer group to follow."""

    group: str | None = None
    key_id: int | None = None  # the API key that minted the token (revoked: the socket closes)
    counted_token: str | None = None
    expiry: asyncio.TimerHandle | None = None
    closing_for_expiry: asyncio.Future | None = None

    async def dispatch(self, message: dict) -> None:
        """Hand ``message`` to its handler. Channels' own dispatch first runs ``close_old_connections`` on the
        process's one sync thread before every message a socket gets (its connect, each event, its close): a
        thread hop per message per socket, for connections this process never opens there. Every database
        call of a socket goes through :func:`realtime.messages.in_db_thread`, whose thread closes stale
        connections before and after the call, so the hop bought nothing."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.scope.get("query_string", b"").decode(errors="replace"))

    async def admit(self, token: str) -> bool:
        """Count the socket against its token; past the limit, close it with 4429 and return False."""
        if not await limits.acquire(token):
            await self.accept()
            await self.close(code=CLOSE_TOO_MANY, reason="too many connections for this token")
            return False
        self.counted_token = token
        # A token is short-lived, and so is what it opens: the socket closes when the token expires.
        delay = max(0.0, tokens.expires_at(token) - time.time())
        self.expiry = asyncio.get_running_loop().call_later(delay, self._token_expired)
        return True

    def _token_expired(self) -> None:
        self.closing_for_expiry = asyncio.ensure_future(self.close(code=CLOSE_TOKEN_EXPIRED, reason="token expired"))

    async def revoke(self) -> None:
        """The API key that minted the token was revoked: what it opened closes."""
        self.finished = True
        await self.close(code=CLOSE_KEY_REVOKED, reason="token revoked")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs) -> None:
        """Whatever a client sends is parsed here, never by the base class (which would raise on a binary
        frame or malformed JSON and drop the socket)."""
        try:
            content = orjson.loads(text_data) if text_data is not None and len(text_data) <= MAX_MESSAGE else None
        except orjson.JSONDecodeError:
            content = None
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})
            return
        error = {"code": "invalid_message", "message": 'This socket only listens; send {"type": "ping"} to check it.'}
        await self.send_json({"type": "error", "error": error})

    async def join(self, group: str) -> None:
        """Follow ``group``: returns once the channel layer receives what is published to it."""
        self.group = group
        await self.channel_layer.group_add(group, self.channel_name)
        if settings.REALTIME_RESYNC_S > 0:
            resync.add(self)

    async def leave(self) -> None:
        resync.discard(self)
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None

    async def _try_again_later(self, exc: BaseException) -> None:
        """PostgreSQL or Redis is away: accept and close at once with 4013 (try again later), which clients
        answer by reconnecting with backoff and ``since=`` (a refused handshake would read as a bad token)."""
        _outage.failed(exc)
        with contextlib.suppress(Exception):
            await self.leave()
        await self.accept()
        await self.close(code=CLOSE_TRY_AGAIN_LATER)

    @property
    def lifecycle_id(self) -> str | None:
        """The lifecycle whose timeline this socket follows (none, for a live-only stream)."""
        return None

    def behind(self, last_seqs: dict[str, int]) -> bool:
        """Whether the database holds events this socket has not sent."""
        return False

    async def catch_up(self) -> None:
        """Send what the socket may have missed while its group was forgotten (nothing, for a live-only
        stream)."""

    async def disconnect(self, code: int) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
        await self.leave()
        if self.counted_token:
            await limits.release(self.counted_token)


class LifecycleConsumer(LifecycleFollower, _CountedSocket):
    counted_socket: bool = False  # in the websocket_connections gauge

    async def connect(self) -> None:
        query = self.query()
        lifecycle_id = self.scope["url_route"]["kwargs"]["lifecycle_id"]
        token = (query.get("token") or [""])[0]
        scope = tokens.verify(token)
        if scope is None or not is_uuid(lifecycle_id) or scope.lifecycle_id not in (None, lifecycle_id):
            await self.close()  # refused before any database read: the handshake fails, nothing is sent
            return
        self.key_id = scope.key_id
        try:
            since = max(0, int((query.get("since") or ["0"])[0]))
        except ValueError:
            since = 0
        # Join the group before reading: whatever commits from now on also comes through the group. One
        # trip to the database for the lifecycle (which also authorises a subscriber's token) and its events.
        try:
            await self.join(lifecycle_group(lifecycle_id))
            lifecycle, events = await in_db_thread(opening)(lifecycle_id, since, scope.key_id)
        except Exception as exc:
            if not transient(exc):
                raise
            await self._try_again_later(exc)
            return
        allowed = (
            lifecycle is not None
            and not lifecycle.key_revoked
            and scope.allows(
                project_id=str(lifecycle.project_id),
                lifecycle_id=str(lifecycle.id),
                user_id=lifecycle.subscriber.get("user_id"),
            )
        )
        if not allowed:
            await self.leave()
            await self.close()
            return
        if not await self.admit(token):
            await self.leave()
            return
        self.lifecycle = lifecycle
        await self.accept()
        metrics.WEBSOCKETS.inc()
        self.counted_socket = True
        await self.send_json(snapshot(lifecycle))
        self.last_seq = since
        await self.send_events(events)
        if not self.finished and lifecycle.status in TERMINAL:
            # Already over and the client had seen the end: the snapshot says it all.
            await self.close(code=CLOSE_NORMAL)
            self.finished = True

    async def emit(self, message: dict) -> None:
        await self.send_json(message)

    async def end(self) -> None:
        await self.close(code=CLOSE_NORMAL)

    async def disconnect(self, code: int) -> None:
        if self.counted_socket:
            metrics.WEBSOCKETS.dec()
        await super().disconnect(code)

    async def lifecycle_event(self, message: dict) -> None:
        await self.on_event(message)

    async def lifecycle_delta(self, message: dict) -> None:
        await self.on_delta(message)


class SubscriberConsumer(_CountedSocket):
    """``/ws/subscriber?token=<subscriber token>``: the live events of every lifecycle of one subscriber
    (``subscriber.user_id``) of one project, as the relay routes them by the trusted identity in the outbox
    headers. Live only: for catch-up, open the lifecycle's own socket with ``since``."""

    async def connect(self) -> None:
        token = (self.query().get("token") or [""])[0]
        scope = tokens.verify(token)
        if scope is None or scope.user_id is None:
            await self.close()  # only subscriber-scoped tokens open this stream
            return
        self.key_id = scope.key_id
        try:
            if scope.key_id is not None and await in_db_thread(tokens.revoked_keys)({scope.key_id}):
                await self.close()
                return
            if not await self.admit(token):
                return
            await self.join(subscriber_group(scope.project_id, scope.user_id))
        except Exception as exc:
            if not transient(exc):
                raise
            await self._try_again_later(exc)
            return
        await self.accept()

    async def lifecycle_event(self, message: dict) -> None:
        event = message["event"]
        await self.send_json(
            {"type": "event", "lifecycle_id": event["lifecycle_id"]}
            | {k: event[k] for k in ("seq", "event", "at")}
            | {"data": browser_data(event["event"], event.get("data"))}
        )
