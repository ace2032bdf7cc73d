"""What every stream on one lifecycle does, whatever carries it (a WebSocket, Server-Sent Events): send
each timeline event once and in order, fill a gap from the database, end after the final event.

A stream joins the lifecycle's channel group *before* it reads the database, then sends what it read.
Events published meanwhile arrive through the group too: anything at or below the last ``seq`` sent is
dropped, and a gap is filled from the database, so the hand-over loses nothing and duplicates nothing.
"""

from __future__ import annotations

import asyncio

from lifecycle.models import Lifecycle
from lifecycle.states import TERMINAL
from realtime.messages import FINAL_EVENTS, events_after, final_outcome, in_db_thread, outcome_of
from realtime.payloads import browser_data


class LifecycleFollower:
    """Subclasses say how a message goes out (:meth:`emit`) and how the stream ends (:meth:`end`)."""

    lifecycle: Lifecycle | None = None  # set once the stream is open
    last_seq: int = 0
    finished: bool = False
    _sending: asyncio.Lock | None = None

    async def emit(self, message: dict) -> None:
        raise NotImplementedError

    async def end(self) -> None:
        """After the final event: nothing more will be sent."""
        raise NotImplementedError

    @property
    def sending(self) -> asyncio.Lock:
        """Live events and the periodic catch-up take turns."""
        if self._sending is None:
            self._sending = asyncio.Lock()
        return self._sending

    async def on_event(self, message: dict) -> None:
        """A live event from the relay (channel-layer type ``lifecycle.event``)."""
        if self.finished or self.lifecycle is None:
            return  # over, or not open (an event that reached the group while the stream was refused)
        event = message["event"]
        seq = int(event["seq"])
        if seq <= self.last_seq:
            return  # already sent during catch-up
        if seq > self.last_seq + 1:
            # Something is missing in between (a live copy lost while Redis was away): fill from the database.
            await self.catch_up()
            return
        # A final event comes with its outcome, read once by the relay rather than once per stream.
        outcome = {"outcome": message["outcome"]} if "outcome" in message else {}
        await self.send_events([{k: event[k] for k in ("seq", "event", "at")} | {"data": event["data"]} | outcome])

    async def on_delta(self, message: dict) -> None:
        """Streamed model output from a generator (channel-layer type ``lifecycle.delta``): no ``seq``, not
        replayed."""
        if not self.finished and self.lifecycle is not None:
            delta = {"type": "delta", "lifecycle_id": str(self.lifecycle.id), "event": "generation.delta"}
            await self.emit(delta | message["delta"])

    @property
    def lifecycle_id(self) -> str | None:
        return str(self.lifecycle.id) if self.lifecycle is not None and not self.finished else None

    def behind(self, last_seqs: dict[str, int]) -> bool:
        """Whether the database holds events this stream has not sent."""
        return self.lifecycle_id is not None and last_seqs.get(self.lifecycle_id, 0) > self.last_seq

    async def catch_up(self) -> None:
        if not self.finished and self.lifecycle is not None:
            await self.send_events(await in_db_thread(events_after)(self.lifecycle, self.last_seq))

    async def send_events(self, events: list[dict]) -> None:
        async with self.sending:
            for event in events:
                if event["seq"] <= self.last_seq:
                    continue
                event = dict(event)
                outcome = event.pop("outcome", None)
                event["data"] = browser_data(event["event"], event.get("data"))
                message = {"type": "event", "lifecycle_id": str(self.lifecycle.id), **event}
                final = event["event"] in FINAL_EVENTS
                if final:
                    if not outcome and self.lifecycle.status in TERMINAL:
                        outcome = outcome_of(self.lifecycle)  # the row the stream opened with had ended
                    message |= outcome or await in_db_thread(final_outcome)(str(self.lifecycle.id))
                await self.emit(message)
                self.last_seq = event["seq"]
                if final:
                    self.finished = True
                    await self.end()
                    return
