"""What a browser may see of a lifecycle: statuses, results, deltas and a friendly error, never what is
meant for operators (webhook response excerpts, endpoint and delivery ids, provider error text, HTTP
statuses of our calls, ``error.details``). Operators keep all of it on the timeline.

Each event's ``data`` is cut down to the fields named here for its event; an event not named here carries
no data to a browser at all, so a field added to the timeline later stays internal until it is listed.
"""

from __future__ import annotations

from typing import Any

from lifecycle.states import friendly_error

_STATUS_CHANGE = ("from",)
BROWSER_FIELDS: dict[str, tuple[str, ...]] = {
    "lifecycle.created": ("model",),
    "lifecycle.generating": _STATUS_CHANGE,
    "lifecycle.delivering": _STATUS_CHANGE,
    "lifecycle.awaiting_callback": _STATUS_CHANGE,
    "lifecycle.completed": (*_STATUS_CHANGE, "model", "usage"),
    "generation.attempt": ("model", "attempt", "outcome", "latency_ms", "usage"),
    "webhook.attempt": ("attempt", "outcome", "latency_ms"),
    "callback.received": ("outcome",),
}
_WITH_ERROR = {"lifecycle.failed", "lifecycle.cancelled"}


def browser_data(event: str, data: dict[str, Any] | None) -> dict[str, Any]:
    """``data`` of a timeline event as a browser may see it."""
    data = data if isinstance(data, dict) else {}
    if event in _WITH_ERROR:
        shown = {k: data[k] for k in _STATUS_CHANGE if k in data}
        return shown | ({"error": friendly_error(data["error"])} if isinstance(data.get("error"), dict) else {})
    return {k: data[k] for k in BROWSER_FIELDS.get(event, ()) if k in data}
