"""Webhook endpoints, deliveries and their attempts. Every write about webhooks goes through here.

A delivery's retry schedule lives on its row; attempts are Celery tasks, but no broker ETA holds a retry:
the due-deliveries sweep queues whatever is due, so a task lost with Redis is queued again.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from lifecycle import delivery as delivery_routing
from lifecycle import services as lifecycle_services
from lifecycle.models import Lifecycle, Project
from lifecycle.states import ErrorCode, Status
from orchestrator import metrics, telemetry
from orchestrator.logs import log_context
from webhooks import callbacks, sender, signing, ssrf
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, WebhookEndpoint

log = logging.getLogger(__name__)

GENERATED = "lifecycle.generated"
EVENT_TYPES = (GENERATED,)


class EndpointInvalid(ValueError):
    pass


# --- endpoints -----------------------------------------------------------------------------------


def _check_url(url: str) -> None:
    """Refuse what can never be delivered to: other schemes, credentials, addresses in blocked ranges. A
    name that does not resolve yet is accepted (its DNS may come later); every attempt vets it again."""
    try:
        ssrf.resolve(url)
    except ssrf.HostUnresolvable:
        pass
    except ssrf.TargetRefused as exc:
        raise EndpointInvalid(str(exc)) from exc


def endpoint_create(
    *, project: Project, url: str, description: str = "", event_types: list[str] | None = None
) -> WebhookEndpoint:
    _check_url(url)
    return WebhookEndpoint.objects.create(
        project=project,
        url=url,
        description=description,
        event_types=event_types or [],
        secret=signing.new_secret(),
    )


def endpoint_update(*, endpoint: WebhookEndpoint, **changes: Any) -> WebhookEndpoint:
    if "url" in changes:
        _check_url(changes["url"])
    for name in ("url", "description", "event_types"):
        if name in changes:
            setattr(endpoint, name, changes[name])
    if "enabled" in changes:
        if changes["enabled"] and not endpoint.enabled:
            endpoint.disabled_reason, endpoint.disabled_at, endpoint.failing_since = "", None, None
        elif not changes["enabled"] and endpoint.enabled:
            endpoint.disabled_reason = changes.get("disabled_reason") or "disabled through the API"
            endpoint.disabled_at = timezone.now()
        endpoint.enabled = changes["enabled"]
    endpoint.save()
    return endpoint


def endpoint_rotate_secret(*, endpoint: WebhookEndpoint, grace_s: int | None = None) -> WebhookEndpoint:
    """A new secret; the old one keeps signing (beside the new) for ``grace_s``."""
    grace = settings.WEBHOOK_SECRET_GRACE_S if grace_s is None else grace_s
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = timezone.now() + timedelta(seconds=grace)
    endpoint.secret = signing.new_secret()
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at", "updated_at"])
    return endpoint


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    live = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > now:
        live.append(endpoint.previous_secret)
    return live


# --- choosing where a lifecycle goes (the lifecycle engine's delivery backend) --------------------


def _default_endpoint(project: Project) -> WebhookEndpoint | None:
    for endpoint in WebhookEndpoint.objects.filter(project=project, enabled=True):
        if endpoint.receives(GENERATED):
            return endpoint
    return None


class WebhookDeliveryBackend:
    def resolve(self, *, project: Project, requested: dict[str, Any]) -> dict[str, Any]:
        endpoint_id = requested.get("endpoint_id")
        if requested.get("mode") == delivery_routing.DIRECT and not endpoint_id:
            return {"mode": delivery_routing.DIRECT}  # no endpoint to look up
        if endpoint_id:
            endpoint = WebhookEndpoint.objects.filter(project=project, id=endpoint_id).first()
            if endpoint is None:
                raise delivery_routing.DeliveryConfigError("no such webhook endpoint")
            if not endpoint.enabled:
                raise delivery_routing.DeliveryConfigError("that webhook endpoint is disabled")
        else:
            endpoint = _default_endpoint(project)
        mode = requested.get("mode") or (delivery_routing.WEBHOOK_CALLBACK if endpoint else delivery_routing.DIRECT)
        if mode == delivery_routing.DIRECT:
            return {"mode": mode}
        if endpoint is None:
            raise delivery_routing.DeliveryConfigError(f"mode {mode!r} needs an enabled webhook endpoint")
        resolved = {"mode": mode, "endpoint_id": str(endpoint.id)}
        if mode == delivery_routing.WEBHOOK_CALLBACK:
            resolved["callback_timeout_s"] = requested.get(
                "callback_timeout_s", delivery_routing.DEFAULT_CALLBACK_TIMEOUT_S
            )
        return resolved

    def start(self, *, lifecycle: Lifecycle) -> None:
        delivery_create(lifecycle=lifecycle)


def generated_payload(lifecycle: Lifecycle, schedule: list[int], now: datetime) -> dict[str, Any]:
    data: dict[str, Any] = {
        "lifecycle_id": str(lifecycle.id),
        "status": lifecycle.status,
        "model": lifecycle.model_used or lifecycle.model,
        "output": lifecycle.output,
        "usage": lifecycle.usage,
        "metadata": lifecycle.metadata,
        "subscriber": lifecycle.subscriber,
    }
    if lifecycle.delivery.get("mode") == delivery_routing.WEBHOOK_CALLBACK:
        # The body is the same on every retry, so the token must outlive the whole schedule plus the wait.
        expires_at = now + timedelta(seconds=sum(schedule) + lifecycle.delivery["callback_timeout_s"] + 60)
        data["callback"] = {
            "url": f"{settings.PUBLIC_BASE_URL}/v1/lifecycles/{lifecycle.id}/callback",
            "token": callbacks.mint_token(lifecycle_id=str(lifecycle.id), expires_at=expires_at),
            "expires_at": expires_at.isoformat(),
        }
    return {"type": GENERATED, "timestamp": now.isoformat(), "data": data}


def delivery_create(*, lifecycle: Lifecycle) -> Delivery:
    """Create the ``lifecycle.generated`` delivery and queue its first attempt once the transaction commits."""
    now = timezone.now()
    schedule = list(settings.WEBHOOK_RETRY_SCHEDULE)
    delivery = Delivery.objects.create(
        lifecycle=lifecycle,
        endpoint_id=lifecycle.delivery["endpoint_id"],
        event_type=GENERATED,
        webhook_id=f"msg_{uuid.uuid4().hex}",
        payload=generated_payload(lifecycle, schedule, now),
        schedule=schedule,
        next_attempt_at=now,
        enqueued_at=now,
    )
    transaction.on_commit(lambda: _queue_attempt(delivery.id))
    return delivery


def _queue_attempt(delivery_id) -> None:
    """Hand the attempt to a Celery worker. The delivery row is the durable part: if the broker cannot take
    the task (Redis down or restarting), the row is marked not queued and the next sweep queues it again,
    so whatever committed the delivery (a generation, a resend) is never failed by the queue."""
    from webhooks.tasks import attempt_delivery

    try:
        attempt_delivery.apply_async((str(delivery_id),), retry=False)
    except Exception as exc:
        log.warning("webhooks: could not queue delivery %s (the sweep will): %s", delivery_id, exc)
        Delivery.objects.filter(id=delivery_id).update(enqueued_at=None)


# --- attempts ------------------------------------------------------------------------------------


def _claim(delivery_id) -> Delivery | None:
    """Compare-and-swap ``pending`` → ``sending``; anyone else's claim makes this a no-op.

    An endpoint gets at most ``WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT`` attempts at once, so a slow or dead
    endpoint holds only that many worker slots and never delays other endpoints' deliveries; its extra
    deliveries wait a second and are queued again by the sweep.
    """
    now = timezone.now()
    with transaction.atomic():
        endpoint_id = (
            Delivery.objects.filter(id=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
            .values_list("endpoint_id", flat=True)
            .first()
        )
        if endpoint_id is None:
            return None
        # Claims for one endpoint take turns on its row, so the in-flight count below is exact.
        WebhookEndpoint.objects.select_for_update().filter(id=endpoint_id).first()
        in_flight = Delivery.objects.filter(
            endpoint_id=endpoint_id, status=DeliveryStatus.SENDING, lease_expires_at__gt=now
        ).count()
        if in_flight >= settings.WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT:
            Delivery.objects.filter(id=delivery_id, status=DeliveryStatus.PENDING).update(
                next_attempt_at=now + timedelta(seconds=1), enqueued_at=None
            )
            return None
        lease = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT_S + settings.WEBHOOK_LEASE_GRACE_S)
        claimed = Delivery.objects.filter(
            id=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now
        ).update(status=DeliveryStatus.SENDING, lease_expires_at=lease, attempt_count=F("attempt_count") + 1)
    if claimed != 1:
        return None
    return Delivery.objects.select_related("endpoint", "lifecycle").get(id=delivery_id)


def delivery_attempt(*, delivery_id) -> str | None:
    """Make one attempt at a due delivery; returns its outcome, or ``None`` if it was not ours to make."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return None
    lifecycle = delivery.lifecycle
    with log_context(lifecycle_id=lifecycle.id, project_id=lifecycle.project_id, traceparent=lifecycle.traceparent):
        return _attempt(delivery, lifecycle)


def _attempt(delivery: Delivery, lifecycle: Lifecycle) -> str:
    if lifecycle.status == Status.CANCELLED:
        # Cancelled while waiting: the backend has nothing to act on any more. (A completed or failed
        # lifecycle's delivery is still sent when an operator resends it.)
        Delivery.objects.filter(id=delivery.id).update(status=DeliveryStatus.CANCELLED, lease_expires_at=None)
        return DeliveryStatus.CANCELLED
    endpoint = delivery.endpoint
    now = timezone.now()
    if not endpoint.enabled:
        result = sender.AttemptResult(
            outcome="failed", latency_ms=0, error=f"endpoint disabled: {endpoint.disabled_reason}"
        )
    else:
        body = orjson.dumps(delivery.payload)
        headers = signing.signed_headers(
            signing_secrets(endpoint, now), delivery.webhook_id, int(now.timestamp()), body
        )
        # Each attempt is a span of the lifecycle's trace; the receiver gets the span's own traceparent.
        with telemetry.span("webhook.attempt", parent=lifecycle.traceparent, attempt=delivery.attempt_count) as span:
            headers["traceparent"] = span
            result = sender.send(endpoint.url, headers=headers, body=body)
    metrics.WEBHOOK_ATTEMPTS.labels(status_class=metrics.status_class(result.status_code, result.outcome)).inc()
    if result.outcome == "succeeded":
        _succeeded(delivery, now, result)
    elif result.outcome == "aborted":
        _finish_failed(
            delivery,
            now,
            result,
            DeliveryStatus.ABORTED,
            "The receiver asked us to stop (webhook-delivery: abort-message).",
        )
    elif not endpoint.enabled or delivery.schedule_position >= len(delivery.schedule):
        _finish_failed(
            delivery,
            now,
            result,
            DeliveryStatus.EXHAUSTED,
            f"Webhook delivery failed after {delivery.attempt_count} attempts.",
        )
    else:
        _retry_later(delivery, now, result)
    log.info("webhook attempt %d to %s: %s", delivery.attempt_count, endpoint.url, result.outcome)
    return result.outcome


def _attempt_row(delivery: Delivery, started_at: datetime, result: sender.AttemptResult) -> DeliveryAttempt:
    return DeliveryAttempt(
        delivery=delivery,
        number=delivery.attempt_count,
        started_at=started_at,
        latency_ms=result.latency_ms,
        outcome=result.outcome,
        status_code=result.status_code,
        response_excerpt=result.response_excerpt,
        error=result.error,
    )


def _attempt_step(delivery: Delivery, result: sender.AttemptResult) -> lifecycle_services.Step:
    """The attempt as a step on the lifecycle's timeline."""
    payload = {
        "delivery_id": str(delivery.id),
        "endpoint_id": str(delivery.endpoint_id),
        "webhook_id": delivery.webhook_id,
        "attempt": delivery.attempt_count,
        "outcome": result.outcome,
        "status_code": result.status_code,
        "latency_ms": round(result.latency_ms, 2),
        "error": result.error,
        "response_excerpt": result.response_excerpt[:200],
    }
    return lifecycle_services.Step("webhook.attempt", payload, result.latency_ms)


def _record_attempt(delivery: Delivery, started_at: datetime, result: sender.AttemptResult) -> None:
    """A failed (or refused, or aborted) attempt that the schedule retries: its step on the lifecycle's
    timeline (the lifecycle's row locked first, as every transition does) and its row."""
    step = _attempt_step(delivery, result)
    lifecycle_services.record_event(
        lifecycle_id=delivery.lifecycle_id, event=step.event, payload=step.payload, duration_ms=step.duration_ms
    )
    _attempt_row(delivery, started_at, result).save(force_insert=True)


def _succeeded(delivery: Delivery, started_at: datetime, result: sender.AttemptResult) -> None:
    """The attempt got through: in one transaction, the lifecycle moves on with the attempt on its timeline
    (its row locked first, as every transition does), the attempt is recorded and the delivery is done."""
    now = timezone.now()
    timeout_s = delivery.lifecycle.delivery.get("callback_timeout_s", delivery_routing.DEFAULT_CALLBACK_TIMEOUT_S)
    with transaction.atomic():
        lifecycle_services.delivery_succeeded(
            lifecycle_id=delivery.lifecycle_id,
            callback_deadline=now + timedelta(seconds=timeout_s),
            attempt=_attempt_step(delivery, result),
        )
        _attempt_row(delivery, started_at, result).save(force_insert=True)
        Delivery.objects.filter(id=delivery.id).update(
            status=DeliveryStatus.SUCCEEDED, delivered_at=now, lease_expires_at=None, last_error=""
        )
        if delivery.endpoint.failing_since is not None:
            WebhookEndpoint.objects.filter(id=delivery.endpoint_id).update(failing_since=None)


def _finish_failed(
    delivery: Delivery, started_at: datetime, result: sender.AttemptResult, status: DeliveryStatus, message: str
) -> None:
    """The last attempt failed: in one transaction, the lifecycle fails with the attempt on its timeline
    (its row locked first), the attempt is recorded and the delivery is final, so neither can be left
    without the other."""
    with transaction.atomic():
        lifecycle_services.delivery_failed(
            lifecycle_id=delivery.lifecycle_id,
            code=ErrorCode.WEBHOOK_EXHAUSTED,
            message=message,
            details={"delivery_id": str(delivery.id), "attempts": delivery.attempt_count},
            attempt=_attempt_step(delivery, result),
        )
        _attempt_row(delivery, started_at, result).save(force_insert=True)
        Delivery.objects.filter(id=delivery.id).update(status=status, lease_expires_at=None, last_error=message)
        _note_endpoint_failure(delivery.endpoint_id, message)


def _retry_later(delivery: Delivery, started_at: datetime, result: sender.AttemptResult) -> None:
    delay = delivery.schedule[delivery.schedule_position]
    error = result.error or f"HTTP {result.status_code}"
    with transaction.atomic():
        _record_attempt(delivery, started_at, result)
        Delivery.objects.filter(id=delivery.id, status=DeliveryStatus.SENDING).update(
            status=DeliveryStatus.PENDING,
            schedule_position=F("schedule_position") + 1,
            next_attempt_at=timezone.now() + timedelta(seconds=delay),
            lease_expires_at=None,
            enqueued_at=None,
            last_error=error[:1000],
        )
        _note_endpoint_failure(delivery.endpoint_id, error)


def _note_endpoint_failure(endpoint_id, error: str) -> None:
    """Start (or continue) the endpoint's failing run; disable it once the run is too long."""
    now = timezone.now()
    WebhookEndpoint.objects.filter(id=endpoint_id, failing_since=None).update(failing_since=now)
    cutoff = now - timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_S)
    WebhookEndpoint.objects.filter(id=endpoint_id, enabled=True, failing_since__lt=cutoff).update(
        enabled=False,
        disabled_at=now,
        disabled_reason=f"failing for over {settings.WEBHOOK_DISABLE_AFTER_S} s; last error: {error}"[:500],
    )


def endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Delete an endpoint and (by cascade) its deliveries. A lifecycle whose result was still on its way to
    it fails in the same transaction, saying so, instead of waiting in ``delivering`` for good."""
    with transaction.atomic():
        waiting = Delivery.objects.filter(
            endpoint=endpoint,
            status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING],
            lifecycle__status=Status.DELIVERING,
        ).values_list("lifecycle_id", "id")
        for lifecycle_id, delivery_id in list(waiting):
            lifecycle_services.delivery_failed(
                lifecycle_id=lifecycle_id,
                code=ErrorCode.WEBHOOK_EXHAUSTED,
                message="The webhook endpoint was deleted before the result was delivered.",
                details={"delivery_id": str(delivery_id), "reason": "endpoint_deleted"},
            )
        endpoint.delete()


def delivery_resend(*, delivery: Delivery) -> Delivery:
    """Send a delivery again (same webhook-id, a fresh retry series), whatever became of it."""
    Delivery.objects.filter(id=delivery.id).exclude(status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.PENDING, schedule_position=0, next_attempt_at=timezone.now(), enqueued_at=timezone.now()
    )
    transaction.on_commit(lambda: _queue_attempt(delivery.id))
    delivery.refresh_from_db()
    return delivery


# --- sweeps --------------------------------------------------------------------------------------


def deliveries_queue_due(*, limit: int = 1000) -> int:
    """Queue an attempt for every due delivery not queued recently, and put back deliveries whose worker
    died mid-attempt. Returns how many were queued."""
    now = timezone.now()
    Delivery.objects.filter(status=DeliveryStatus.SENDING, lease_expires_at__lt=now).update(
        status=DeliveryStatus.PENDING, lease_expires_at=None, next_attempt_at=now, enqueued_at=None
    )
    not_queued = Q(enqueued_at=None)
    if _broker_queue_empty():
        # Nothing is waiting in the broker, so a delivery queued a while ago whose attempt never ran was
        # lost (a Redis restart, a worker gone with its task). While tasks still wait, they are only slow:
        # queueing them again would pile duplicates onto a backlog.
        requeue_before = now - timedelta(seconds=settings.WEBHOOK_REQUEUE_AFTER_S)
        not_queued |= Q(enqueued_at__lt=requeue_before)
    due = list(
        Delivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(not_queued)
        .values_list("id", flat=True)[:limit]
    )
    if due:
        Delivery.objects.filter(id__in=due).update(enqueued_at=now)
        for delivery_id in due:
            _queue_attempt(delivery_id)
    return len(due)


STRANDED_AFTER_S = 10


def lifecycles_end_stranded(*, limit: int = 500) -> int:
    """End lifecycles left in ``delivering`` with no delivery under way: whatever slipped past the
    transactions that move them (a delivery deleted by hand, a failure between two writes in an older
    version). A delivery that succeeded moves its lifecycle on; anything else fails it, with the reason on
    the timeline. (A delivery is created in the transaction that moves its lifecycle to ``delivering``, so
    a missing one is never a delivery about to be made; the grace is for clocks and older versions.)"""
    grace = timedelta(seconds=STRANDED_AFTER_S)
    under_way = Delivery.objects.filter(
        lifecycle=OuterRef("pk"), status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING]
    )
    stranded = list(
        Lifecycle.objects.filter(status=Status.DELIVERING, delivering_at__lt=timezone.now() - grace)
        .exclude(Exists(under_way))
        .values_list("id", flat=True)[:limit]
    )
    ended = 0
    for lifecycle_id in stranded:
        last = Delivery.objects.filter(lifecycle_id=lifecycle_id).order_by("-created_at").first()
        if last is not None and last.status == DeliveryStatus.SUCCEEDED:
            timeout_s = last.lifecycle.delivery.get("callback_timeout_s", delivery_routing.DEFAULT_CALLBACK_TIMEOUT_S)
            moved = lifecycle_services.delivery_succeeded(
                lifecycle_id=lifecycle_id,
                callback_deadline=(last.delivered_at or timezone.now()) + timedelta(seconds=timeout_s),
            )
        else:
            reason = "no_delivery" if last is None else f"delivery_{last.status}"
            moved = lifecycle_services.delivery_failed(
                lifecycle_id=lifecycle_id,
                code=ErrorCode.WEBHOOK_EXHAUSTED,
                message="The result could not be delivered to the backend.",
                details={"reason": reason, "delivery_id": str(last.id) if last else None, "swept": True},
            )
        if moved is not None:
            ended += 1
            log.warning("webhooks: ended lifecycle %s stranded in delivering (%s)", lifecycle_id, moved.status)
    return ended


def _broker_queue_empty() -> bool:
    from orchestrator.celery import app

    try:
        with app.connection_for_read() as connection:
            _, waiting, _ = connection.default_channel.queue_declare(queue="deliveries")
    except Exception as exc:  # no broker: nothing can be queued anyway
        log.warning("webhooks: could not read the task queue's length: %s", exc)
        return False
    return waiting == 0


def deliveries_prune(*, older_than: timedelta) -> int:
    """Drop the bodies of finished deliveries (the generated output, the callback token) and the response
    excerpts of their attempts once they are older than ``older_than``; statuses and attempts stay."""
    cutoff = timezone.now() - older_than
    finished = Delivery.objects.filter(created_at__lt=cutoff).exclude(
        status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING]
    )
    pruned = finished.exclude(payload={}).update(payload={})
    DeliveryAttempt.objects.filter(delivery__in=finished).exclude(response_excerpt="").update(response_excerpt="")
    return pruned
