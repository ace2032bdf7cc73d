"""The WebSocket a frontend opens on one lifecycle: ``/ws/lifecycles/{id}?token=<ws_token>&since=<seq>``.

1. The token is checked before the socket is accepted: a wrong, expired or other-scope token gets the
   handshake refused (HTTP 403) and no data at all.
2. The consumer joins the lifecycle's channel group *before* reading the database, then sends a
   ``snapshot`` and every timeline event after ``since``. Events published meanwhile arrive through the
   group too; anything at or below the last ``seq`` sent is dropped, and a gap is filled from the database,
   so the hand-over loses nothing and duplicates nothing.
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
   for all its sockets (:class:`Resync`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from urllib.parse import parse_qs

import orjson
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from lifecycle import selectors
from lifecycle.models import Lifecycle
from lifecycle.states import TERMINAL
from orchestrator import metrics
from orchestrator.outages import Outage, transient
from realtime import limits, tokens
from realtime.groups import lifecycle_group, subscriber_group
from realtime.payloads import browser_data, friendly_error

log = logging.getLogger(__name__)
_outage = Outage("realtime: PostgreSQL or Redis (opening sockets)", log)


def in_db_thread(fn):
    """``fn`` run on a worker thread, many side by side: channels' default runs every socket's database
    work on one thread per process, which queued handshakes behind each other under a connect storm. The
    realtime process's connections come from psycopg's pool (``DB_POOL_MAX_SIZE``), which bounds them."""
    return database_sync_to_async(fn, thread_sensitive=False)


FINAL_EVENTS = {"lifecycle.completed", "lifecycle.failed", "lifecycle.cancelled"}
CLOSE_NORMAL = 1000
CLOSE_TOO_MANY = 4429
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_TOKEN_EXPIRED = 4401
MAX_MESSAGE = 4096  # characters: a ping is 16


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _load(lifecycle_id: str) -> Lifecycle | None:
    return Lifecycle.objects.filter(id=uuid.UUID(lifecycle_id)).first() if _is_uuid(lifecycle_id) else None


def _opening(lifecycle_id: str, since: int) -> tuple[Lifecycle | None, list[dict]]:
    """What a socket opens with, in one trip to a database thread: the lifecycle and its events after
    ``since``."""
    lifecycle = _load(lifecycle_id)
    return lifecycle, (_events_after(lifecycle, since) if lifecycle is not None else [])


def _events_after(lifecycle: Lifecycle, seq: int) -> list[dict]:
    return [
        {"seq": e.seq, "event": e.event, "at": e.at.isoformat(), "data": e.payload}
        for e in selectors.timeline(lifecycle=lifecycle, after_seq=seq)
    ]


def final_outcome(lifecycle_id: str) -> dict:
    """What a final event carries to the browser: ``result`` when completed, else a friendly ``error``."""
    lifecycle = Lifecycle.objects.filter(id=lifecycle_id).only("status", "result", "error").first()
    if lifecycle is None:
        return {"error": friendly_error(None)}
    if lifecycle.status == "completed":
        return {"result": lifecycle.result}
    return {"error": friendly_error(lifecycle.error)}


def outcome_in(event: dict) -> dict | None:
    """A final event's outcome as its ``lifecycle.events`` message carries it (docs/events.md), or ``None``
    when it does not (a result too big for the message): then :func:`final_outcome` reads it."""
    if event.get("event") == "lifecycle.completed":
        return {"result": event["result"]} if "result" in event else None
    error = (event.get("data") or {}).get("error")
    return {"error": friendly_error(error)} if isinstance(error, dict) and "code" in error else None


def snapshot(lifecycle: Lifecycle) -> dict:
    return {
        "type": "snapshot",
        "lifecycle": {
            "id": str(lifecycle.id),
            "status": lifecycle.status,
            "model": lifecycle.model,
            "created_at": lifecycle.created_at.isoformat(),
            "metadata": lifecycle.metadata,
            "result": lifecycle.result if lifecycle.status == "completed" else None,
            "error": friendly_error(lifecycle.error) if lifecycle.error else None,
            "last_seq": lifecycle.last_seq,
        },
    }


def _chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _last_seqs(lifecycle_ids: list[str]) -> dict[str, int]:
    """How far each lifecycle's timeline has got, in as few queries as there are thousands of ids."""
    seqs: dict[str, int] = {}
    for chunk in _chunks(lifecycle_ids, 1000):
        rows = Lifecycle.objects.filter(id__in=chunk).values_list("id", "last_seq")
        seqs.update((str(lifecycle_id), last_seq) for lifecycle_id, last_seq in rows)
    return seqs


class Resync:
    """For all of this process's sockets at once, when the channel layer has subscribed again after losing
    Redis (whatever was published meanwhile never reached this process) and every ``REALTIME_RESYNC_S``
    besides (a live message dropped for a full queue, with no later event to reveal the gap):

    1. One query reads how far each followed lifecycle has got.
    2. Only the sockets behind catch up from the database: after a resubscription, behind what the database
       holds now; otherwise behind what it held at the previous resync. (An event committed a moment ago is
       most likely on its way live: at the end of a burst, reading it from the database as well made
       thousands of sockets query at once.)

    (Each socket did this on its own timer before: 5,000 sockets made ~170 database reads a second while
    nothing happened, and that load delayed the live events they were waiting for.)
    """

    AT_ONCE = 100  # catch-ups in flight together

    def __init__(self) -> None:
        self.sockets: set[_CountedSocket] = set()
        self.task: asyncio.Task | None = None
        self.now: asyncio.Event | None = None
        self.previous: dict[str, int] = {}  # how far each lifecycle had got at the previous resync

    def add(self, socket: _CountedSocket) -> None:
        self.sockets.add(socket)
        if self.task is None or self.task.done():
            self.now = asyncio.Event()
            self.task = asyncio.create_task(self._run())
            with contextlib.suppress(AttributeError):  # a layer without reconnects to tell of
                socket.channel_layer.on_resubscribed(self.soon)

    def discard(self, socket: _CountedSocket) -> None:
        self.sockets.discard(socket)

    def soon(self) -> None:
        """Resync now rather than at the next period."""
        if self.now is not None:
            self.now.set()

    async def _run(self) -> None:
        while self.sockets:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.now.wait(), timeout=settings.REALTIME_RESYNC_S)
            resubscribed = self.now.is_set()
            self.now.clear()
            try:
                await self.once(resubscribed=resubscribed)
            except Exception as exc:  # the database away: try again next time
                log.warning("realtime: resync of %d sockets failed: %s", len(self.sockets), exc)

    async def once(self, *, resubscribed: bool = True) -> None:
        sockets = list(self.sockets)
        following = sorted({socket.lifecycle_id for socket in sockets} - {None})
        seqs = await in_db_thread(_last_seqs)(following) if following else {}
        reference, self.previous = (seqs if resubscribed else self.previous), seqs
        behind = [socket for socket in sockets if socket.behind(reference)]
        failed = 0
        for chunk in _chunks(behind, self.AT_ONCE):
            results = await asyncio.gather(*(socket.catch_up() for socket in chunk), return_exceptions=True)
            failed += sum(isinstance(result, Exception) for result in results)
        if failed:
            log.warning("realtime: resync: catching up failed for %d of %d sockets", failed, len(behind))


resync = Resync()


class _CountedSocket(AsyncJsonWebsocketConsumer):
    """What both sockets share: the per-token connection count, and one channel-layer group to follow."""

    group: str | None = None
    counted_token: str | None = None
    expiry: asyncio.TimerHandle | None = None
    closing_for_expiry: asyncio.Future | None = None

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
        """PostgreSQL or Redis is away: accept and close at once with 1013 (try again later), which clients
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


class LifecycleConsumer(_CountedSocket):
    lifecycle: Lifecycle | None = None  # set once the socket is accepted
    last_seq: int = 0
    finished: bool = False
    counted_socket: bool = False  # in the websocket_connections gauge

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sending = asyncio.Lock()  # live events and the periodic catch-up take turns

    async def connect(self) -> None:
        query = self.query()
        lifecycle_id = self.scope["url_route"]["kwargs"]["lifecycle_id"]
        token = (query.get("token") or [""])[0]
        scope = tokens.verify(token)
        if scope is None or not _is_uuid(lifecycle_id) or scope.lifecycle_id not in (None, lifecycle_id):
            await self.close()  # refused before any database read: the handshake fails, nothing is sent
            return
        try:
            since = max(0, int((query.get("since") or ["0"])[0]))
        except ValueError:
            since = 0
        # Join the group before reading: whatever commits from now on also comes through the group. One
        # trip to the database for the lifecycle (which also authorises a subscriber's token) and its events.
        try:
            await self.join(lifecycle_group(lifecycle_id))
            lifecycle, events = await in_db_thread(_opening)(lifecycle_id, since)
        except Exception as exc:
            if not transient(exc):
                raise
            await self._try_again_later(exc)
            return
        allowed = lifecycle is not None and scope.allows(
            project_id=str(lifecycle.project_id),
            lifecycle_id=str(lifecycle.id),
            user_id=lifecycle.subscriber.get("user_id"),
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
        await self._send_events(events)
        if not self.finished and lifecycle.status in TERMINAL:
            # Already over and the client had seen the end: the snapshot says it all.
            await self.close(code=CLOSE_NORMAL)
            self.finished = True

    async def disconnect(self, code: int) -> None:
        if self.counted_socket:
            metrics.WEBSOCKETS.dec()
        await super().disconnect(code)

    async def lifecycle_event(self, message: dict) -> None:
        """A live event from the bridge (channel-layer type ``lifecycle.event``)."""
        if self.finished or self.lifecycle is None:
            return  # over, or not accepted (an event that reached the group while the handshake was refused)
        event = message["event"]
        seq = int(event["seq"])
        if seq <= self.last_seq:
            return  # already sent during catch-up
        if seq > self.last_seq + 1:
            # Something is missing in between (a bridge restart, a reordering): fill from the database.
            await self.catch_up()
            return
        # A final event comes with its outcome, read once by the bridge rather than once per socket.
        outcome = {"outcome": message["outcome"]} if "outcome" in message else {}
        await self._send_events([{k: event[k] for k in ("seq", "event", "at")} | {"data": event["data"]} | outcome])

    async def lifecycle_delta(self, message: dict) -> None:
        """Streamed model output from a generator (channel-layer type ``lifecycle.delta``)."""
        if not self.finished and self.lifecycle is not None:
            await self.send_json(
                {
                    "type": "delta",
                    "lifecycle_id": str(self.lifecycle.id),
                    "event": "generation.delta",
                    **message["delta"],
                }
            )

    @property
    def lifecycle_id(self) -> str | None:
        return str(self.lifecycle.id) if self.lifecycle is not None and not self.finished else None

    def behind(self, last_seqs: dict[str, int]) -> bool:
        return self.lifecycle_id is not None and last_seqs.get(self.lifecycle_id, 0) > self.last_seq

    async def catch_up(self) -> None:
        if not self.finished and self.lifecycle is not None:
            await self._send_events(await in_db_thread(_events_after)(self.lifecycle, self.last_seq))

    async def _send_events(self, events: list[dict]) -> None:
        async with self.sending:
            await self._send_in_order(events)

    async def _send_in_order(self, events: list[dict]) -> None:
        for event in events:
            if event["seq"] <= self.last_seq:
                continue
            event = dict(event)
            outcome = event.pop("outcome", None)
            event["data"] = browser_data(event["event"], event.get("data"))
            message = {"type": "event", "lifecycle_id": str(self.lifecycle.id), **event}
            final = event["event"] in FINAL_EVENTS
            if final:
                message |= outcome or await in_db_thread(final_outcome)(str(self.lifecycle.id))
            await self.send_json(message)
            self.last_seq = event["seq"]
            if final:
                await self.close(code=CLOSE_NORMAL)
                self.finished = True
                return


class SubscriberConsumer(_CountedSocket):
    """``/ws/subscriber?token=<subscriber token>``: the live events of every lifecycle of one subscriber
    (``subscriber.user_id``) of one project, as the bridge routes them by the trusted identity in the Kafka
    headers. Live only: for catch-up, open the lifecycle's own socket with ``since``."""

    async def connect(self) -> None:
        token = (self.query().get("token") or [""])[0]
        scope = tokens.verify(token)
        if scope is None or scope.user_id is None:
            await self.close()  # only subscriber-scoped tokens open this stream
            return
        try:
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
