"""One webhook endpoint's health, as its console page shows it: success rate and latency over the last day,
its recent attempts with their lifecycles, and whether it is disabled and why."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from console.overview import endpoint_attempts
from webhooks.models import DeliveryAttempt, WebhookEndpoint

RECENT = 50
DAY = timedelta(days=1)


def context(endpoint: WebhookEndpoint) -> dict[str, Any]:
    now = timezone.now()
    found = endpoint_attempts(now - DAY, now, endpoint_id=endpoint.id)
    total, failed, p50, p95 = found[0][3:] if found else (0, 0, None, None)
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
