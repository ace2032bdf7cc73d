"""A lifecycle's steps on one time axis, as the console draws them (server-side, no JavaScript): each phase
(queued, generating, webhook, waiting for the callback) a bar from where it started to where it ended, the
provider and webhook attempts inside it as bars of their own, and the moments that are not spans (a
re-drive, a reclaim, the final event that goes to the sockets) as marks. A failed step is red with its
error code; the slowest phase is marked, so the step to blame is found at a glance."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from console import units
from lifecycle.models import Lifecycle, TimelineEvent
from lifecycle.states import TERMINAL, Status

FAILED_OUTCOMES = frozenset({"error", "failed", "refused", "aborted"})
MARKS = {
    "lifecycle.redriven": "re-driven (its request was published again)",
    "generation.reclaimed": "reclaimed (its generator's lease ran out)",
    "generation.abandoned": "abandoned",
    "callback.received": "callback received",
}
FINAL = {
    "lifecycle.completed": "completed: final event to the sockets",
    "lifecycle.failed": "failed: final event to the sockets",
    "lifecycle.cancelled": "cancelled: final event to the sockets",
}


@dataclass
class Bar:
    label: str
    start: datetime
    end: datetime
    kind: str  # phase, attempt or mark
    state: str = "ok"  # ok, bad, live
    note: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    slowest: bool = False
    step: str | None = None  # a phase's step, as errors name it
    left: float = 0.0  # percent of the axis
    width: float = 0.0

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start).total_seconds() * 1000

    @property
    def duration(self) -> str:
        return units.duration(self.duration_ms)

    @property
    def payload_json(self) -> str:
        return json.dumps(self.payload, default=str, ensure_ascii=False, indent=1) if self.payload else ""


def _attempt_span(event: TimelineEvent) -> tuple[datetime, datetime]:
    latency = float((event.payload or {}).get("latency_ms") or 0)
    return event.at - timedelta(milliseconds=latency), event.at


def _attempt(event: TimelineEvent, label: str) -> Bar:
    payload = event.payload or {}
    start, end = _attempt_span(event)
    status = payload.get("http_status") or payload.get("status_code")
    failed = payload.get("outcome") in FAILED_OUTCOMES
    note = " · ".join(str(part) for part in (status and f"HTTP {status}", payload.get("error")) if part)
    return Bar(label, start, end, "attempt", "bad" if failed else "ok", note[:160], payload)


def build(lifecycle: Lifecycle, events: list[TimelineEvent]) -> dict[str, Any]:
    """The bars and the axis of one lifecycle (its events in ``seq`` order)."""
    now = timezone.now()
    live = lifecycle.status not in TERMINAL
    end = lifecycle.finished_at or now
    error = lifecycle.error or {}
    failed_step = error.get("step") if lifecycle.status == Status.FAILED else None
    phases = [
        ("queued", lifecycle.created_at, lifecycle.generating_at, None),
        ("generating", lifecycle.generating_at, lifecycle.delivering_at, "generation"),
        ("webhook", lifecycle.delivering_at, lifecycle.awaiting_callback_at, "webhook"),
        ("waiting for the callback", lifecycle.awaiting_callback_at, None, "callback"),
    ]
    bars: list[Bar] = []
    for index, (label, started, next_started, step) in enumerate(phases):
        if started is None:
            continue
        later = [at for _, at, _, _ in phases[index + 1 :] if at is not None]
        stopped = next_started or (later[0] if later else end)
        state = "live" if live and next_started is None and not later else "ok"
        note = ""
        if label == "generating" and lifecycle.params.get("stream"):
            note = "streamed: deltas went to the sockets as they came (not kept on the timeline)"
        bars.append(Bar(label, started, stopped, "phase", state, note))
        bars[-1].step = step
        bars.extend(_inside(label, events, lifecycle))
    if failed_step:  # the phase of the failed step, else the last one reached, in red with the error
        phases_reached = [bar for bar in bars if bar.kind == "phase"]
        blamed = next((bar for bar in phases_reached if bar.step == failed_step), phases_reached[-1])
        blamed.state, blamed.note = "bad", f"{error.get('code')} at step {failed_step}: {error.get('message', '')}"
    for event in events:
        if event.event in MARKS:
            bars.append(Bar(MARKS[event.event], event.at, event.at, "mark", payload=event.payload or {}))
        elif event.event in FINAL:
            state = "bad" if event.event == "lifecycle.failed" else "ok"
            bars.append(Bar(FINAL[event.event], event.at, event.at, "mark", state, payload=event.payload or {}))
    return _laid_out(bars, lifecycle.created_at, max(end, *(bar.end for bar in bars), lifecycle.created_at))


def _inside(phase: str, events: list[TimelineEvent], lifecycle: Lifecycle) -> list[Bar]:
    if phase == "generating":
        attempts = [event for event in events if event.event == "generation.attempt"]
        return [_attempt(event, _provider_label(event, lifecycle)) for event in attempts]
    if phase == "webhook":
        return [
            _attempt(event, f"webhook attempt {(event.payload or {}).get('attempt', '')}")
            for event in events
            if event.event == "webhook.attempt"
        ]
    return []


def _provider_label(event: TimelineEvent, lifecycle: Lifecycle) -> str:
    payload = event.payload or {}
    model = payload.get("model", "")
    fallback = " (fallback)" if model and model != lifecycle.model else ""
    return f"{model}{fallback} · attempt {payload.get('attempt', '')}"


def _laid_out(bars: list[Bar], start: datetime, end: datetime) -> dict[str, Any]:
    total_ms = max((end - start).total_seconds() * 1000, 1.0)
    for bar in bars:
        bar.left = min(100.0, max(0.0, (bar.start - start).total_seconds() * 1000 / total_ms * 100))
        bar.width = min(100.0 - bar.left, max(0.4, bar.duration_ms / total_ms * 100))
    phases = [bar for bar in bars if bar.kind == "phase"]
    if len(phases) > 1:
        max(phases, key=lambda bar: bar.duration_ms).slowest = True
    ticks = [{"left": share * 100, "label": units.duration(total_ms * share)} for share in (0, 0.25, 0.5, 0.75, 1)]
    return {"bars": bars, "ticks": ticks, "total": units.duration(total_ms)}
