"""One task per realtime process that catches up, from the database, every stream (socket or SSE) that may
have missed a live event: when the channel layer has subscribed again after losing Redis, and every
``REALTIME_RESYNC_S`` besides."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from django.conf import settings

from lifecycle.models import Lifecycle
from realtime import tokens
from realtime.messages import in_db_thread

log = logging.getLogger(__name__)


class Followed(Protocol):
    """A stream the resync looks after."""

    channel_layer: object
    key_id: int | None  # the API key that minted the stream's token

    @property
    def lifecycle_id(self) -> str | None: ...

    def behind(self, last_seqs: dict[str, int]) -> bool: ...

    async def catch_up(self) -> None: ...

    async def revoke(self) -> None: ...


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

    0. Streams opened with tokens of an API key since revoked close (one query for every key in use).
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
        self.sockets: set[Followed] = set()
        self.task: asyncio.Task | None = None
        self.now: asyncio.Event | None = None
        self.previous: dict[str, int] = {}  # how far each lifecycle had got at the previous resync

    def add(self, socket: Followed) -> None:
        self.sockets.add(socket)
        if self.task is None or self.task.done():
            self.now = asyncio.Event()
            self.task = asyncio.create_task(self._run())
            with contextlib.suppress(AttributeError):  # a layer without reconnects to tell of
                socket.channel_layer.on_resubscribed(self.soon)

    def discard(self, socket: Followed) -> None:
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
        sockets = await self._without_revoked(list(self.sockets))
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

    async def _without_revoked(self, sockets: list[Followed]) -> list[Followed]:
        """Close what tokens of revoked API keys opened (one query for every key in use), and return the
        rest. A revoked key's streams so end within ``REALTIME_RESYNC_S``; new ones are refused at once."""
        keys = {socket.key_id for socket in sockets} - {None}
        revoked = await in_db_thread(tokens.revoked_keys)(keys) if keys else set()
        if not revoked:
            return sockets
        gone = [socket for socket in sockets if socket.key_id in revoked]
        for socket in gone:
            self.discard(socket)
        await asyncio.gather(*(socket.revoke() for socket in gone), return_exceptions=True)
        log.info("realtime: closed %d streams opened with tokens of a revoked API key", len(gone))
        return [socket for socket in sockets if socket.key_id not in revoked]


resync = Resync()
