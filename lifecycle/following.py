"""How a frontend follows a lifecycle: the seam between the lifecycle engine and the realtime app.

The ``202`` of a create carries a token that opens the lifecycle's stream and the stream's URLs, and the
relay hands each batch of events it publishes to the streams live. The engine does not know how any of it is
done: the ``realtime`` app registers a :class:`Following` when Django starts,
so ``lifecycle`` never imports ``realtime`` (the dependency points one way: ``realtime`` → ``lifecycle``,
as ``webhooks`` → ``lifecycle`` for delivery).
"""

from __future__ import annotations

from typing import Protocol

from lifecycle.models import Lifecycle


class Following(Protocol):
    def token(self, lifecycle: Lifecycle, *, key_id: int) -> str:
        """A short-lived token that opens this lifecycle's stream, and nothing else, for as long as the API
        key ``key_id`` that asked for it is not revoked."""

    def links(self, lifecycle: Lifecycle) -> dict[str, str]:
        """Where its stream is followed (``websocket``, ``events``)."""

    def live(self) -> LiveEvents:
        """For the relay: what hands each batch it publishes to the streams following those lifecycles."""


class LiveEvents(Protocol):
    def __call__(self, rows: list[tuple]) -> None:
        """``rows`` as the relay claimed them, ``(id, topic, key, payload text, headers)``; never raises, and
        never holds the relay up for long."""

    def close(self) -> None: ...


_following: Following | None = None


def register(following: Following) -> None:
    global _following
    _following = following


def token(lifecycle: Lifecycle, *, key_id: int) -> str | None:
    return _following.token(lifecycle, key_id=key_id) if _following is not None else None


def links(lifecycle: Lifecycle) -> dict[str, str]:
    return _following.links(lifecycle) if _following is not None else {}


def live() -> LiveEvents | None:
    return _following.live() if _following is not None else None
