"""One webhook endpoint's health, as its console page shows it: success rate and latency over the last day,
its recent attempts with their lifecycles, and whether it is disabled and why."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from webhooks.models import Delivery, DeliveryAttempt, WebhookEndpoint

RECENT = 50
DAY = timedelta(days=1)

_HEALTH = (
    "SELECT count(*), count(*) FILTER (WHERE a.outcome <> 'succeeded'), "  # noqa: S608
    "percentile_cont(0.5) WITHIN GROUP (ORDER BY a.latency_ms), "
    "percentile_cont(0.95) WITHIN GROUP (ORDER BY a.latency_ms) "
    f"FROM {DeliveryAttempt._meta.db_table} a JOIN {Delivery._meta.db_table} d ON d.id = a.delivery_id "
    "WHERE d.endpoint_id = %s AND a.started_at >= %s"
)


def context(endpoint: WebhookEndpoint) -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute(_HEALTH, [endpoint.id, timezone.now() - DAY])
        total, failed, p50, p95 = cursor.fetchone()
    recent = DeliveryAttempt.objects.filter(delivery__endpoint=endpoint).select_related("delivery")
    return {
        "endpoint_obj": endpoint,
        "health": {
            "attempts": total,
            "failed": failed,
            "success": f"{(total - failed) / total:.1%}" if total else "-",
            "p50": _ms(p50),
            "p95": _ms(p95),
        },
        "recent_attempts": list(recent.order_by("-started_at")[:RECENT]),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"
