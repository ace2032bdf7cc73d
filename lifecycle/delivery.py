"""Where a generated result goes next: the seam between the lifecycle engine and the delivery app.

The engine knows the delivery modes of the contract but not how a webhook is sent. The ``webhooks`` app
registers a :class:`DeliveryBackend` when Django starts, so ``lifecycle`` never imports ``webhooks``
(the dependency points one way: ``webhooks`` → ``lifecycle``).

Modes: ``direct`` (complete when the generation completes), ``webhook`` (complete once the webhook is
delivered), ``webhook_callback`` (deliver, then wait for the backend's callback; the default when the
project has an endpoint).
"""

from __future__ import annotations

from typing import Any, Protocol

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
