"""Realtime tokens: short-lived, signed, scoped to one lifecycle or to one subscriber of one project.

They are Django signed values (HMAC with SECRET_KEY and a salt of their own), so the web process checks
them without a database read, and a token minted for one scope opens nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core import signing

from lifecycle.models import ApiKey, Lifecycle
from realtime.fanout import FanOut

SALT = "realtime.token.v1"


@dataclass(frozen=True)
class RealtimeScope:
    project_id: str
    lifecycle_id: str | None = None  # one lifecycle...
    user_id: str | None = None  # ...or every lifecycle of this subscriber
    key_id: int | None = None  # the API key that minted it: revoking the key closes what the token opened

    def allows(self, *, project_id: str, lifecycle_id: str, user_id: str | None) -> bool:
        if project_id != self.project_id:
            return False
        if self.lifecycle_id is not None:
            return lifecycle_id == self.lifecycle_id
        return self.user_id is not None and user_id == self.user_id


def mint(scope: RealtimeScope) -> str:
    data = {"p": scope.project_id, "l": scope.lifecycle_id, "u": scope.user_id, "k": scope.key_id}
    return signing.dumps(data, salt=SALT)


def verify(token: str) -> RealtimeScope | None:
    """The scope of a valid, unexpired token; ``None`` for anything else."""
    try:
        data = signing.loads(token, salt=SALT, max_age=settings.REALTIME_TOKEN_TTL_S)
        return RealtimeScope(project_id=data["p"], lifecycle_id=data["l"], user_id=data["u"], key_id=data.get("k"))
    except (signing.BadSignature, KeyError, TypeError):
        return None


def expires_at(token: str) -> float:
    """When a token :func:`verify` accepted stops being valid (Unix time): its signing time, which the
    signature covers (``value:timestamp:signature``), plus ``REALTIME_TOKEN_TTL_S``."""
    return signing.b62_decode(token.rsplit(":", 2)[-2]) + settings.REALTIME_TOKEN_TTL_S


class StreamFollowing:
    """What the ``202`` of a create carries to follow the lifecycle (lifecycle/following.py)."""

    def token(self, lifecycle: Lifecycle, *, key_id: int) -> str:
        scope = RealtimeScope(project_id=str(lifecycle.project_id), lifecycle_id=str(lifecycle.id), key_id=key_id)
        return mint(scope)

    def links(self, lifecycle: Lifecycle) -> dict[str, str]:
        return {
            "websocket": socket_url(lifecycle.id),
            # Served where the sockets are (the realtime process, behind the same origin in production).
            "events": f"{settings.PUBLIC_WS_URL.replace('ws', 'http', 1)}/v1/lifecycles/{lifecycle.id}/events",
        }

    def live(self) -> FanOut:
        return FanOut()


def socket_url(lifecycle_id=None) -> str:
    """The WebSocket a token opens: one lifecycle's, or (none given) a subscriber's."""
    if lifecycle_id is None:
        return f"{settings.PUBLIC_WS_URL}/ws/subscriber"
    return f"{settings.PUBLIC_WS_URL}/ws/lifecycles/{lifecycle_id}"


def revoked_keys(key_ids: set[int]) -> set[int]:
    """Which of these API keys have been revoked (one query)."""
    return set(ApiKey.objects.filter(pk__in=key_ids, revoked_at__isnull=False).values_list("pk", flat=True))
