"""How a frontend follows a lifecycle: the seam between the lifecycle engine and the realtime app.

The ``202`` of a create carries a token that opens the lifecycle's stream and the stream's URLs. The engine
does not know how either is made: the ``realtime`` app registers a :class:`Following` when Django starts,
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


_following: Following | None = None


def register(following: Following) -> None:
    global _following
    _following = following


def token(lifecycle: Lifecycle, *, key_id: int) -> str | None:
    return _following.token(lifecycle, key_id=key_id) if _following is not None else None


def links(lifecycle: Lifecycle) -> dict[str, str]:
    return _following.links(lifecycle) if _following is not None else {}
