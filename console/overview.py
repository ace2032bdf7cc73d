"""What the overview page shows, each figure one query over a window (the last hour by default): lifecycles
per interval by outcome, each step's p50 / p99 with its slowest lifecycle, failures by step and error code,
the failing and the slowest endpoints, and the work waiting now. Each figure links to what is behind it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count
from django.utils import timezone

from console import units
from lifecycle.models import Lifecycle, OutboxMessage
from lifecycle.states import Status
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, WebhookEndpoint

WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "6h": timedelta(hours=6), "24h": timedelta(days=1)}
DEFAULT_WINDOW = "1h"
BUCKETS = 60
LIVE = ("pending", "generating", "delivering", "awaiting_callback")
OUTCOMES = ("completed", "failed", "cancelled", "in progress")
OUTCOME_COLOURS = {"completed": "#14804a", "failed": "#c0362c", "cancelled": "#8a5a44", "in progress": "#2f5bd3"}

_LIFECYCLES = Lifecycle._meta.db_table
# Each step as its timestamps measure it (the same steps as the waterfall's phases).
STEPS = {
    "queued": "generating_at - created_at",
    "generating": "coalesce(delivering_at, finished_at) - generating_at",
    "webhook": "awaiting_callback_at - delivering_at",
    "waiting for the callback": "finished_at - awaiting_callback_at",
    "end to end": "finished_at - created_at",
}


@dataclass(frozen=True)
class Window:
    name: str
    since: datetime
    until: datetime

    @classmethod
    def parse(cls, name: str | None) -> Window:
        name = name if name in WINDOWS else DEFAULT_WINDOW
        until = timezone.now()
        return cls(name, until - WINDOWS[name], until)


def _rows(sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def throughput(window: Window) -> dict[str, Any]:
    """Lifecycles created per interval (a sixtieth of the window), by outcome, laid out as SVG bars."""
    seconds = (window.until - window.since).total_seconds() / BUCKETS
    rows = _rows(
        f"SELECT floor(extract(epoch FROM created_at - %s) / %s)::int AS bucket, "  # noqa: S608
        f"CASE WHEN status IN ('completed', 'failed', 'cancelled') THEN status ELSE 'in progress' END, count(*) "
        f"FROM {_LIFECYCLES} WHERE created_at >= %s AND created_at < %s GROUP BY 1, 2",
        [window.since, seconds, window.since, window.until],
    )
    counts: dict[int, dict[str, int]] = {}
    for bucket, outcome, count in rows:
        counts.setdefault(min(bucket, BUCKETS - 1), {})[outcome] = count
    peak = max((sum(c.values()) for c in counts.values()), default=0)
    bars = []
    for bucket in range(BUCKETS):
        start = window.since + timedelta(seconds=bucket * seconds)
        y = 100.0
        for outcome in OUTCOMES:
            count = counts.get(bucket, {}).get(outcome, 0)
            if not count:
                continue
            height = count / peak * 100
            y -= height
            bars.append(
                {"x": bucket * 10, "y": round(y, 2), "height": round(height, 2), "outcome": outcome, "count": count,
                 "colour": OUTCOME_COLOURS[outcome], "since": start, "until": start + timedelta(seconds=seconds)}
            )  # fmt: skip
    totals = {outcome: sum(c.get(outcome, 0) for c in counts.values()) for outcome in OUTCOMES}
    per = f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
    return {"bars": bars, "peak": peak, "totals": totals, "per": per, "total": sum(totals.values())}


def steps(window: Window) -> list[dict[str, Any]]:
    """Each step's p50 and p99 over the window's lifecycles, and its slowest one, in one statement."""
    columns = []
    for expression in STEPS.values():
        seconds = f"extract(epoch FROM {expression})"
        columns += [
            f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {seconds})",
            f"percentile_cont(0.99) WITHIN GROUP (ORDER BY {seconds})",
            f"(array_agg(id ORDER BY {seconds} DESC NULLS LAST))[1]",
            f"max({seconds})",
        ]
    (row,) = _rows(
        f"SELECT {', '.join(columns)} FROM {_LIFECYCLES} WHERE created_at >= %s AND created_at < %s",  # noqa: S608
        [window.since, window.until],
    )
    out = []
    for index, name in enumerate(STEPS):
        p50, p99, slowest, longest = row[index * 4 : index * 4 + 4]
        out.append({"step": name, "p50": _ms(p50), "p99": _ms(p99), "slowest": slowest if longest else None,
                    "longest": _ms(longest)})  # fmt: skip
    return out


def failures(window: Window) -> list[dict[str, Any]]:
    rows = _rows(
        f"SELECT error->>'step', error->>'code', count(*) FROM {_LIFECYCLES} "  # noqa: S608
        "WHERE status = %s AND created_at >= %s AND created_at < %s GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 20",
        [Status.FAILED.value, window.since, window.until],
    )
    return [{"step": step or "?", "code": code or "?", "count": count} for step, code, count in rows]


_ENDPOINT_ATTEMPTS = (
    f"SELECT e.id, e.url, e.enabled, count(*), count(*) FILTER (WHERE a.outcome <> 'succeeded'), "  # noqa: S608
    "percentile_cont(0.5) WITHIN GROUP (ORDER BY a.latency_ms), "
    "percentile_cont(0.95) WITHIN GROUP (ORDER BY a.latency_ms) "
    f"FROM {DeliveryAttempt._meta.db_table} a JOIN {Delivery._meta.db_table} d ON d.id = a.delivery_id "
    f"JOIN {WebhookEndpoint._meta.db_table} e ON e.id = d.endpoint_id "
    "WHERE a.started_at >= %s AND a.started_at < %s {endpoint} GROUP BY e.id, e.url, e.enabled"
)


def endpoint_attempts(since: datetime, until: datetime, endpoint_id=None) -> list[tuple]:
    """Per endpoint with attempts from ``since`` to ``until`` (or only ``endpoint_id``'s): its id, url,
    whether enabled, attempts, failed attempts, and the p50 and p95 latency in ms."""
    if endpoint_id is None:
        return _rows(_ENDPOINT_ATTEMPTS.format(endpoint=""), [since, until])
    return _rows(_ENDPOINT_ATTEMPTS.format(endpoint="AND e.id = %s"), [since, until, endpoint_id])


def endpoints(window: Window) -> dict[str, list[dict[str, Any]]]:
    """Every endpoint with attempts in the window: attempts, failures, success rate, p50 / p95 latency."""
    found = [
        {"id": id_, "url": url, "enabled": enabled, "attempts": attempts, "failed": failed,
         "success": f"{(attempts - failed) / attempts:.0%}", "p50": units.duration(p50),
         "p95": units.duration(p95), "p95_ms": p95 or 0}
        for id_, url, enabled, attempts, failed, p50, p95 in endpoint_attempts(window.since, window.until)
    ]  # fmt: skip
    failing = sorted((e for e in found if e["failed"]), key=lambda e: (-e["failed"], e["url"]))[:5]
    slowest = sorted(found, key=lambda e: -e["p95_ms"])[:5]
    return {"failing": failing, "slowest": slowest}


def waiting() -> dict[str, Any]:
    """The work in the system now: live lifecycles per status, deliveries due, the outbox backlog."""
    live = dict(
        Lifecycle.objects.filter(status__in=LIVE)
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    return {
        "live": [(status, live.get(status, 0)) for status in LIVE],
        "deliveries_due": Delivery.objects.filter(
            status=DeliveryStatus.PENDING, next_attempt_at__lte=timezone.now()
        ).count(),
        "outbox_backlog": OutboxMessage.objects.filter(published_at__isnull=True).count(),
    }


def consumer_lag() -> list[tuple[str, str, int]] | None:
    """Kafka consumer lag per group and topic; ``None`` when the broker does not answer at once."""
    from orchestrator import metrics

    try:
        return metrics.consumer_lag(timeout=1.0)
    except Exception:  # the page shows the rest; the broker's state is for /readyz to say
        return None


def _ms(seconds: float | None) -> str:
    return units.duration(None if seconds is None else float(seconds) * 1000)
