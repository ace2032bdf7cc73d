"""The lifecycle state machine: every status, every allowed transition, in one place.

``pending`` → ``generating`` → ``delivering`` → ``awaiting_callback`` → ``completed``; any non-terminal
status may end in ``failed`` or ``cancelled``. ``generating`` may go straight to ``completed`` (delivery
mode ``direct``) and ``delivering`` straight to ``completed`` (mode ``webhook``).

Services apply transitions with :func:`lifecycle.services.transition`, which is the only writer of
``Lifecycle.status``.
"""

from __future__ import annotations

from django.db import models


class Status(models.TextChoices):
    PENDING = "pending"
    GENERATING = "generating"
    DELIVERING = "delivering"
    AWAITING_CALLBACK = "awaiting_callback"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
ACTIVE = frozenset(Status) - TERMINAL

_ENDINGS = {Status.FAILED, Status.CANCELLED}

ALLOWED: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.GENERATING, *_ENDINGS}),
    Status.GENERATING: frozenset({Status.DELIVERING, Status.COMPLETED, *_ENDINGS}),
    Status.DELIVERING: frozenset({Status.AWAITING_CALLBACK, Status.COMPLETED, *_ENDINGS}),
    Status.AWAITING_CALLBACK: frozenset({Status.COMPLETED, *_ENDINGS}),
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}

# The timeline event each status change writes.
EVENT_FOR_STATUS: dict[Status, str] = {
    Status.PENDING: "lifecycle.created",
    Status.GENERATING: "lifecycle.generating",
    Status.DELIVERING: "lifecycle.delivering",
    Status.AWAITING_CALLBACK: "lifecycle.awaiting_callback",
    Status.COMPLETED: "lifecycle.completed",
    Status.FAILED: "lifecycle.failed",
    Status.CANCELLED: "lifecycle.cancelled",
}


class ErrorCode(models.TextChoices):
    INVALID_REQUEST = "invalid_request"
    GENERATION_FAILED = "generation_failed"
    OUTPUT_INVALID = "output_invalid"
    WEBHOOK_EXHAUSTED = "webhook_exhausted"
    CALLBACK_TIMEOUT = "callback_timeout"
    BACKEND_REJECTED = "backend_rejected"
    CANCELLED = "cancelled"


def can_transition(current: str, target: str) -> bool:
    return Status(target) in ALLOWED[Status(current)]


def friendly_error(error: dict | None) -> dict:
    """What an end user may see of an error (a browser's stream, a user's own view of a lifecycle): code,
    message and step, never internal details."""
    error = error or {}
    return {
        "code": error.get("code", "failed"),
        "message": error.get("message", "Something went wrong."),
        "step": error.get("step"),
    }
