"""Lifecycles with full timelines, built through the services (no processes needed)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from lifecycle.services import LifecycleRequest, lifecycle_create, lifecycle_fail, record_event, transition
from lifecycle.states import ErrorCode, Status
from webhooks.models import Callback, Delivery, DeliveryAttempt, DeliveryStatus, WebhookEndpoint


def rich_lifecycle(project, *, attempts: int = 3, deliveries: int = 1, fail: bool = False):
    """A lifecycle that went through every step: two provider attempts, webhook attempts, a callback."""
    request = LifecycleRequest(
        model="openai/gpt-test",
        messages=[{"role": "user", "content": "hi"}],
        params={},
        response_format=None,
        fallbacks=["echo/backup"],
        delivery={"mode": "webhook_callback", "callback_timeout_s": 60},
        metadata={"order": "A-1001", "customer": "ada"},
        subscriber={"user_id": "u1"},
    )
    lifecycle, _ = lifecycle_create(project=project, request=request)
    transition(lifecycle_id=lifecycle.id, to=Status.GENERATING)
    record_event(
        lifecycle_id=lifecycle.id,
        event="generation.attempt",
        payload={"model": "openai/gpt-test", "attempt": 1, "outcome": "error", "http_status": 429, "latency_ms": 12.5,
                 "error": "provider answered 429", "retryable": True},
    )  # fmt: skip
    record_event(
        lifecycle_id=lifecycle.id,
        event="generation.attempt",
        payload={"model": "openai/gpt-test", "attempt": 2, "outcome": "ok", "http_status": 200, "latency_ms": 840.0,
                 "usage": {"input_tokens": 10, "output_tokens": 20}},
    )  # fmt: skip
    transition(
        lifecycle_id=lifecycle.id, to=Status.DELIVERING, fields={"output": "hello", "model_used": "openai/gpt-test"}
    )
    endpoint = WebhookEndpoint.objects.create(project=project, url="https://backend.example/hooks", secret="whsec_eA==")
    for d in range(deliveries):
        delivery = Delivery.objects.create(
            lifecycle=lifecycle, endpoint=endpoint, event_type="lifecycle.generated",
            webhook_id=f"msg_{lifecycle.id.hex}{d}", payload={}, schedule=[5, 300],
            status=DeliveryStatus.SUCCEEDED, attempt_count=attempts,
        )  # fmt: skip
        for n in range(1, attempts + 1):
            ok = n == attempts
            DeliveryAttempt.objects.create(
                delivery=delivery, number=n, started_at=timezone.now() - timedelta(seconds=attempts - n),
                latency_ms=30.0 * n, outcome="succeeded" if ok else "failed", status_code=200 if ok else 500,
                response_excerpt="ok" if ok else "boom",
            )  # fmt: skip
            record_event(
                lifecycle_id=lifecycle.id,
                event="webhook.attempt",
                payload={"attempt": n, "outcome": "succeeded" if ok else "failed", "status_code": 200 if ok else 500,
                         "latency_ms": 30.0 * n},
            )  # fmt: skip
    transition(lifecycle_id=lifecycle.id, to=Status.AWAITING_CALLBACK)
    if fail:
        Callback.objects.create(lifecycle=lifecycle, body={"error": {}}, body_hash="x")
        record_event(lifecycle_id=lifecycle.id, event="callback.received", payload={"outcome": "error"})
        lifecycle_fail(
            lifecycle_id=lifecycle.id, code=ErrorCode.BACKEND_REJECTED, message="Out of stock.", step="callback",
            details={"backend_code": "out_of_stock"},
        )  # fmt: skip
    else:
        record_event(lifecycle_id=lifecycle.id, event="callback.received", payload={"outcome": "data"})
        transition(lifecycle_id=lifecycle.id, to=Status.COMPLETED, fields={"result": {"ok": True}})
    lifecycle.refresh_from_db()
    return lifecycle
