"""Where a generated result goes next: the two-way port between the lifecycle engine and the delivery app.

The engine knows the delivery modes of the contract but not how a webhook is sent. The ``webhooks`` app
registers a :class:`DeliveryBackend` when Django starts, so ``lifecycle`` never imports ``webhooks``
(the dependency points one way: ``webhooks`` → ``lifecycle``).

Engine → backend: :func:`resolve` (where a new lifecycle's result will go) and :func:`start` (deliver it).
Backend → engine: :func:`attempts_recorded` (attempts made, each retried, succeeded or failed for good),
:func:`failed` (a delivery ended without an attempt: its endpoint deleted, nothing left to send) and
:func:`callback_received`. The engine owns every lock, timeline step and transition of a lifecycle: the
backend hands it what happened, inside the backend's own transaction, and writes only its own rows.

Modes: ``direct`` (complete when the generation completes), ``webhook`` (complete once the webhook is
delivered), ``webhook_callback`` (deliver, then wait for the backend's callback; the default when the
project has an endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from lifecycle.models import Lifecycle, Project

DIRECT = "direct"
WEBHOOK = "webhook"
WEBHOOK_CALLBACK = "webhook_callback"
MODES = (WEBHOOK_CALLBACK, WEBHOOK, DIRECT)
DEFAULT_CALLBACK_TIMEOUT_S = 3600


class DeliveryConfigError(ValueError):
    """The requested delivery cannot be honoured (no such endpoint, none configured, ...)."""


class DeliveryBackend(Protocol):
    def resolve(self, *, project: Project, requested: dict[str, Any]) -> dict[str, Any]:
        """The full delivery settings for a new lifecycle, from what the caller asked for."""

    def start(self, *, lifecycle: Lifecycle) -> None:
        """Begin delivering ``lifecycle``'s result. Called inside the transaction that moved it to
        ``delivering``, so the delivery exists if and only if the move commits."""


_backend: DeliveryBackend | None = None


def register(backend: DeliveryBackend) -> None:
    global _backend
    _backend = backend


def resolve(*, project: Project, requested: dict[str, Any]) -> dict[str, Any]:
    if _backend is None:
        mode = requested.get("mode", DIRECT)
        if mode != DIRECT:
            raise DeliveryConfigError(f"mode {mode!r} needs the webhooks app")
        return {"mode": DIRECT}
    return _backend.resolve(project=project, requested=requested)


def start(*, lifecycle: Lifecycle) -> None:
    assert _backend is not None, "a lifecycle reached delivering without a delivery backend"
    _backend.start(lifecycle=lifecycle)


# --- backend → engine ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """A webhook attempt made for a lifecycle, and what it means for the lifecycle: ``retry`` (it stays
    delivering), ``succeeded`` (it moves on: awaits the callback, or completes in mode ``webhook``) or
    ``failed`` (no attempt is left: it fails with ``webhook_exhausted`` and ``message``)."""

    lifecycle_id: Any
    verdict: Literal["retry", "succeeded", "failed"]
    at: datetime
    payload: dict[str, Any] | None  # the ``webhook.attempt`` step's payload; None: no attempt to show
    latency_ms: float | None = None
    message: str = ""  # for ``failed``: the lifecycle's error message
    details: dict[str, Any] | None = None  # for ``failed``: the error's details


class NotAwaitingCallback(Exception):
    """The lifecycle takes no callback in its status (the message says which)."""


def attempts_recorded(attempts: list[Attempt]) -> None:
    """Put ``attempts`` on their lifecycles' timelines and move each lifecycle as its attempt says, in the
    caller's transaction: the lifecycles locked in id order, every write in one round trip."""
    from lifecycle import services

    services.delivery_attempts_recorded(attempts=attempts)


def failed(*, lifecycle_id, message: str, details: dict[str, Any]) -> Lifecycle | None:
    """The delivery of the lifecycle's result ended without reaching the backend and without an attempt
    to show for it (its endpoint deleted, the delivery gone): fail it with ``webhook_exhausted``."""
    from lifecycle import services

    return services.delivery_failed(lifecycle_id=lifecycle_id, message=message, details=details)


def callback_received(*, lifecycle_id, body: dict[str, Any]) -> Lifecycle:
    """The backend's (validated) callback: ``{"data"}`` completes the lifecycle with it as the result,
    ``{"error"}`` fails it with ``backend_rejected``; both on the timeline, in the caller's transaction.
    Raises :class:`NotAwaitingCallback` if the lifecycle is not waiting for one, ``Lifecycle.DoesNotExist``
    if there is none."""
    from lifecycle import services

    return services.delivery_callback_received(lifecycle_id=lifecycle_id, body=body)
