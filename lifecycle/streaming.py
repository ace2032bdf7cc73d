"""Token streaming: partial model output sent straight to the lifecycle's live group on the channel layer.

Deltas are ephemeral: they are not timeline events (no ``seq``), not in the database and not on Kafka; a
client that misses some still gets the whole result in the final event. They are coalesced so a fast model
sends at most one message per ``REALTIME_DELTA_INTERVAL_MS`` instead of one per token.
"""

from __future__ import annotations

import asyncio
import logging
import time

from channels.layers import get_channel_layer
from django.conf import settings

log = logging.getLogger(__name__)


def live_group(lifecycle_id: str) -> str:
    """The channel-layer group of everyone watching a lifecycle (the realtime app's sockets join it)."""
    return f"lifecycle.{lifecycle_id}"


class DeltaStream:
    def __init__(self, lifecycle_id: str) -> None:
        self.group = live_group(lifecycle_id)
        self.layer = get_channel_layer()
        self.interval = settings.REALTIME_DELTA_INTERVAL_MS / 1000
        self.buffer: list[str] = []
        self.offset = 0  # characters sent so far, so a client can place each piece
        self.last_flush = 0.0
        self.pending: asyncio.Task | None = None
        self.messages = 0

    async def add(self, text: str) -> None:
        self.buffer.append(text)
        wait = self.last_flush + self.interval - time.monotonic()
        if wait <= 0:
            await self.flush()
        elif self.pending is None:
            self.pending = asyncio.create_task(self._flush_later(wait))

    async def _flush_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self.pending = None
        await self.flush()

    async def flush(self) -> None:
        if not self.buffer:
            return
        text, self.buffer = "".join(self.buffer), []
        message = {"type": "lifecycle.delta", "delta": {"text": text, "offset": self.offset}}
        self.offset += len(text)
        self.last_flush = time.monotonic()
        try:
            await self.layer.group_send(self.group, message)
            self.messages += 1
        except Exception as exc:  # a lost delta costs nothing: the final result carries all of it
            log.warning("streaming: could not send a delta: %s", exc)

    async def close(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
        await self.flush()
