"""Webhook endpoints, deliveries and their attempts. Every write about webhooks goes through here.

A delivery's retry schedule lives on its row, and so does its lease: the delivery workers
(:mod:`webhooks.worker`) claim what is due in batches, make the attempts, and record them in batches. No
broker holds an attempt, so none can be lost with one. The lifecycle's own steps and moves go through the
lifecycle app's port (:mod:`lifecycle.delivery`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from lifecycle import delivery as delivery_routing
from lifecycle.models import Lifecycle, Project
from lifecycle.states import Status
from orchestrator import crypto, ssrf
from webhooks import callbacks, sender, signing
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, WebhookEndpoint

log = logging.getLogger(__name__)

GENERATED = "lifecycle.generated"
# Operational events (Svix's names): sent only to the endpoints that list them in their event_types.
ENDPOINT_DISABLED = "endpoint.disabled"
ATTEMPT_EXHAUSTED = "message.attempt.exhausted"
EVENT_TYPES = (GENERATED, ENDPOINT_DISABLED, ATTEMPT_EXHAUSTED)


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


# --- choosing where a lifecycle goes (the lifecycle engine's delivery backend) --------------------


# Choosing an endpoint needs no secret: left encrypted, unread (only attempts sign).
_WITHOUT_SECRETS = ("secret", "previous_secret")


def _default_endpoint(project: Project) -> WebhookEndpoint | None:
    for endpoint in WebhookEndpoint.objects.filter(project=project, enabled=True).defer(*_WITHOUT_SECRETS):
        if endpoint.receives(GENERATED):
            return endpoint
    return None


class WebhookDeliveryBackend:
    def resolve(self, *, project: Project, requested: dict[str, Any]) -> dict[str, Any]:
        endpoint_id = requested.get("endpoint_id")
        if requested.get("mode") == delivery_routing.DIRECT and not endpoint_id:
            return {"mode": delivery_routing.DIRECT}  # no endpoint to look up
        if endpoint_id:
            endpoint = WebhookEndpoint.objects.filter(project=project, id=endpoint_id).defer(*_WITHOUT_SECRETS).first()
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


DUE_CHANNEL = "webhook_deliveries_due"


def delivery_create(*, lifecycle: Lifecycle) -> Delivery:
    """Create the ``lifecycle.generated`` delivery, due at once. A trigger NOTIFYs :data:`DUE_CHANNEL` when the
    transaction commits, which wakes the delivery workers."""
    now = timezone.now()
    schedule = list(settings.WEBHOOK_RETRY_SCHEDULE)
    return Delivery.objects.create(
        lifecycle=lifecycle,
        endpoint_id=lifecycle.delivery["endpoint_id"],
        event_type=GENERATED,
        webhook_id=f"msg_{uuid.uuid4().hex}",
        payload=generated_payload(lifecycle, schedule, now),
        schedule=schedule,
        next_attempt_at=now,
    )


# --- attempts: claimed in batches, recorded in batches (webhooks.worker runs them) ------------------


@dataclass(frozen=True)
class Claimed:
    """A delivery a worker holds (``status = sending``) for one attempt, with all the attempt needs."""

    id: uuid.UUID
    lifecycle_id: uuid.UUID | None  # None: an operational event
    endpoint_id: uuid.UUID
    webhook_id: str
    body: bytes
    attempt: int  # this attempt's number: the claim's fencing token
    schedule: list[int]
    schedule_position: int
    url: str
    secrets: list[str]
    endpoint_enabled: bool
    endpoint_disabled_reason: str
    endpoint_failing: bool
    traceparent: str
    project_id: uuid.UUID


_CLAIM_LOCK = "webhooks.deliveries_claim"
_DELIVERIES, _ENDPOINTS = Delivery._meta.db_table, WebhookEndpoint._meta.db_table
_ATTEMPTS, _LIFECYCLES = DeliveryAttempt._meta.db_table, Lifecycle._meta.db_table
# 1. ``due``: pending deliveries whose time has come, oldest first, skipping rows another transaction holds
#    and endpoints already at their in-flight cap; 2. ``busy``: what each of their endpoints has in flight;
# 3. ``chosen``: as many of each endpoint's as its cap leaves room for; 4. those are ``sending`` under a
# lease, or ``cancelled`` if their lifecycle was cancelled meanwhile (nothing to send any more).
_CLAIM = f"""
WITH due AS (
    SELECT d.id, d.endpoint_id, d.next_attempt_at FROM {_DELIVERIES} d
    WHERE d.status = 'pending' AND d.next_attempt_at <= now()
      AND d.endpoint_id NOT IN (
          SELECT endpoint_id FROM {_DELIVERIES} WHERE status = 'sending' AND lease_expires_at > now()
          GROUP BY endpoint_id HAVING count(*) >= %(cap)s)
    ORDER BY d.next_attempt_at LIMIT %(scan)s
    FOR UPDATE OF d SKIP LOCKED
), busy AS (
    SELECT endpoint_id, count(*) AS n FROM {_DELIVERIES}
    WHERE status = 'sending' AND lease_expires_at > now() AND endpoint_id IN (SELECT endpoint_id FROM due)
    GROUP BY endpoint_id
), chosen AS (
    SELECT ranked.id, l.status AS lifecycle_status, coalesce(l.traceparent, '') AS traceparent FROM (
        SELECT due.id, due.next_attempt_at, coalesce(busy.n, 0)
            + row_number() OVER (PARTITION BY due.endpoint_id ORDER BY due.next_attempt_at) AS slot
        FROM due LEFT JOIN busy USING (endpoint_id)
    ) ranked
    JOIN {_DELIVERIES} dd ON dd.id = ranked.id
    LEFT JOIN {_LIFECYCLES} l ON l.id = dd.lifecycle_id  -- none for an operational event
    WHERE ranked.slot <= %(cap)s ORDER BY ranked.next_attempt_at LIMIT %(limit)s
)
UPDATE {_DELIVERIES} d SET
    status = CASE WHEN c.lifecycle_status = 'cancelled' THEN 'cancelled' ELSE 'sending' END,
    lease_expires_at = CASE WHEN c.lifecycle_status = 'cancelled' THEN NULL ELSE %(lease)s END,
    attempt_count = d.attempt_count + CASE WHEN c.lifecycle_status = 'cancelled' THEN 0 ELSE 1 END
FROM chosen c, {_ENDPOINTS} e
WHERE d.id = c.id AND e.id = d.endpoint_id
RETURNING d.status, d.id, d.lifecycle_id, d.endpoint_id, d.webhook_id, d.payload::text, d.attempt_count,
    d.schedule::text, d.schedule_position, e.url, e.secret, e.previous_secret, e.previous_secret_expires_at,
    e.enabled, e.disabled_reason, e.failing_since IS NOT NULL, c.traceparent, e.project_id
"""  # noqa: S608


def deliveries_claim(*, limit: int) -> list[Claimed]:
    """Claim up to ``limit`` due deliveries for attempts, in one transaction: ``pending`` → ``sending`` under
    a lease of ``WEBHOOK_TIMEOUT_S + WEBHOOK_LEASE_GRACE_S``, never more than
    ``WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT`` in flight per endpoint across every worker (so a slow endpoint
    never holds more than that many attempts, nor delays another endpoint's). Claims take turns on an
    advisory lock, so each sees the one before it and the caps are exact."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT_S + settings.WEBHOOK_LEASE_GRACE_S)
    cap = settings.WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [_CLAIM_LOCK])
        cursor.execute(_CLAIM, {"cap": cap, "scan": limit * 4, "limit": limit, "lease": lease})
        rows = cursor.fetchall()
    return [_claimed(row, now) for row in rows if row[0] == DeliveryStatus.SENDING]


def _claimed(row, now: datetime) -> Claimed:
    (_, delivery_id, lifecycle_id, endpoint_id, webhook_id, payload, attempt, schedule, position, url, secret,
     previous, previous_expires, enabled, disabled_reason, failing, traceparent, project_id) = row  # fmt: skip
    try:
        secrets_ = [crypto.decrypt(secret)]
        if previous and previous_expires and previous_expires > now:
            secrets_.append(crypto.decrypt(previous))
    except crypto.SecretUnreadable as exc:  # a key dropped too early: the attempt fails, saying why
        log.error("webhooks: cannot sign for endpoint %s: %s", endpoint_id, exc)
        secrets_ = []
    return Claimed(
        id=delivery_id,
        lifecycle_id=lifecycle_id,
        endpoint_id=endpoint_id,
        webhook_id=webhook_id,
        body=payload.encode(),
        attempt=attempt,
        schedule=orjson.loads(schedule),
        schedule_position=position,
        url=url,
        secrets=secrets_,
        endpoint_enabled=enabled,
        endpoint_disabled_reason=disabled_reason,
        endpoint_failing=failing,
        traceparent=traceparent,
        project_id=project_id,
    )


def deliveries_next_due() -> datetime | None:
    """When the earliest pending delivery is due (it may be already, held back by its endpoint's cap)."""
    return (
        Delivery.objects.filter(status=DeliveryStatus.PENDING)
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )


def attempt_headers(claimed: Claimed, now: datetime) -> dict[str, str]:
    return signing.signed_headers(claimed.secrets, claimed.webhook_id, int(now.timestamp()), claimed.body)


@dataclass(frozen=True)
class Made:
    """An attempt made at a claimed delivery, to be recorded."""

    claimed: Claimed
    started_at: datetime
    result: sender.AttemptResult


ABORTED_MESSAGE = "The receiver asked us to stop (webhook-delivery: abort-message)."


def _verdict(made: Made, now: datetime) -> tuple[str, dict[str, Any]]:
    """What the attempt means: ``succeeded``, ``retry`` or ``failed``, and the delivery's new columns."""
    claimed, result = made.claimed, made.result
    error = result.error or f"HTTP {result.status_code}"
    if result.outcome == "succeeded":
        return "succeeded", {"status": DeliveryStatus.SUCCEEDED, "delivered_at": now, "error": ""}
    if result.outcome == "aborted":
        return "failed", {"status": DeliveryStatus.ABORTED, "error": ABORTED_MESSAGE}
    if not claimed.endpoint_enabled or claimed.schedule_position >= len(claimed.schedule):
        message = f"Webhook delivery failed after {claimed.attempt} attempts."
        return "failed", {"status": DeliveryStatus.EXHAUSTED, "error": message}
    delay = claimed.schedule[claimed.schedule_position]
    return "retry", {
        "status": DeliveryStatus.PENDING,
        "position": claimed.schedule_position + 1,
        "next_at": now + timedelta(seconds=delay),
        "error": error,
    }


def _attempt_payload(made: Made) -> dict[str, Any]:
    """The attempt as a step on the lifecycle's timeline."""
    claimed, result = made.claimed, made.result
    return {
        "delivery_id": str(claimed.id),
        "endpoint_id": str(claimed.endpoint_id),
        "webhook_id": claimed.webhook_id,
        "attempt": claimed.attempt,
        "outcome": result.outcome,
        "status_code": result.status_code,
        "latency_ms": round(result.latency_ms, 2),
        "error": result.error,
        "response_excerpt": result.response_excerpt[:200],
    }


def deliveries_record(*, made: list[Made]) -> list[str]:
    """Record attempts, in one transaction however many there are, and return what each meant for its
    delivery (``succeeded``, ``retry`` or ``failed``):

    1. each lifecycle gets its attempt on its timeline and moves as the attempt says (the lifecycle app
       locks and writes it: :func:`lifecycle.delivery.attempts_recorded`);
    2. the attempts' rows, the deliveries' new status or next attempt, and their endpoints' failing runs
       (an endpoint failing for longer than ``WEBHOOK_DISABLE_AFTER_S`` is disabled) in one round trip,
       with the operational events they cause: ``message.attempt.exhausted`` for a lifecycle's delivery
       whose schedule ran out, ``endpoint.disabled`` for an endpoint disabled, each a new delivery to the
       project's endpoints that list that event.

    A delivery whose lease another worker took over meanwhile (its attempt number moved on) keeps its new
    holder's state; the attempt made here is still recorded.
    """
    now = timezone.now()
    judged = [(m, *_verdict(m, now)) for m in made]
    attempts = [
        delivery_routing.Attempt(
            lifecycle_id=m.claimed.lifecycle_id,
            verdict=verdict,
            at=now,
            payload=_attempt_payload(m),
            latency_ms=m.result.latency_ms,
            message=columns["error"],
            details={"delivery_id": str(m.claimed.id), "attempts": m.claimed.attempt},
        )
        for m, verdict, columns in judged
        if m.claimed.lifecycle_id is not None
    ]
    writes = [_attempt_rows(made), _delivery_updates(judged, now), *_endpoint_runs(judged, now)]
    with transaction.atomic():
        if attempts:
            delivery_routing.attempts_recorded(attempts)
        with connection.cursor() as cursor:
            cursor.execute(";\n".join(sql for sql, _ in writes), [p for _, params in writes for p in params])
    return [verdict for _, verdict, _ in judged]


def _values(row: str, count: int) -> str:
    return ", ".join([row] * count)


def _attempt_rows(made: list[Made]) -> tuple[str, list]:
    sql = (
        f"INSERT INTO {_ATTEMPTS} (delivery_id, number, started_at, latency_ms, outcome, status_code, "  # noqa: S608
        f"response_excerpt, error) VALUES {_values('(%s, %s, %s, %s, %s, %s, %s, %s)', len(made))} "
        "ON CONFLICT (delivery_id, number) DO NOTHING"
    )
    params = []
    for m in made:
        r = m.result
        params += [m.claimed.id, m.claimed.attempt, m.started_at, r.latency_ms, r.outcome, r.status_code,
                   r.response_excerpt, r.error[:1000]]  # fmt: skip
    return sql, params


_DELIVERY_ROW = "(%s::uuid, %s::int, %s, %s::int, %s::timestamptz, %s, %s::timestamptz)"


# A new delivery of an operational event to each enabled endpoint of the project that lists it; ``source``
# is a set of rows with ``project_id`` and ``skip`` (an endpoint not to tell), the payload built from it.
_OPERATIONAL = f"""
INSERT INTO {_DELIVERIES} (id, lifecycle_id, endpoint_id, event_type, webhook_id, payload, status, schedule,
    attempt_count, schedule_position, next_attempt_at, last_error, created_at)
SELECT gen_random_uuid(), NULL, op.id, %s, 'msg_' || replace(gen_random_uuid()::text, '-', ''),
    jsonb_build_object('type', %s::text, 'timestamp', %s::text, 'data', source.data), 'pending', %s::jsonb,
    0, 0, now(), '', now()
FROM source JOIN {_ENDPOINTS} op ON op.project_id = source.project_id AND op.enabled
    AND op.id IS DISTINCT FROM source.skip AND op.event_types @> jsonb_build_array(%s::text)
"""  # noqa: S608


def _operational(event_type: str, now: datetime) -> tuple[str, list]:
    schedule = orjson.dumps(list(settings.WEBHOOK_RETRY_SCHEDULE)).decode()
    return _OPERATIONAL, [event_type, event_type, now.isoformat(), schedule, event_type]


def _delivery_updates(judged, now: datetime) -> tuple[str, list]:
    """Each delivery's new state, fenced by its attempt number (a lease taken over meanwhile is left alone),
    and ``message.attempt.exhausted`` for each lifecycle's delivery whose schedule ran out (the statement
    inserts only in a batch that has one)."""
    sql = (
        f"UPDATE {_DELIVERIES} d SET status = v.status, lease_expires_at = NULL, "  # noqa: S608
        "last_error = v.error, schedule_position = coalesce(v.position, d.schedule_position), "
        "next_attempt_at = coalesce(v.next_at, d.next_attempt_at), "
        "delivered_at = coalesce(v.delivered_at, d.delivered_at) "
        f"FROM (VALUES {_values(_DELIVERY_ROW, len(judged))}) "
        "AS v(id, attempt, status, position, next_at, error, delivered_at) "
        "WHERE d.id = v.id AND d.status = 'sending' AND d.attempt_count = v.attempt"
    )
    params = []
    for m, _, columns in judged:
        params += [m.claimed.id, m.claimed.attempt, str(columns["status"]), columns.get("position"),
                   columns.get("next_at"), columns["error"][:1000], columns.get("delivered_at")]  # fmt: skip
    exhausted = any(
        columns["status"] == DeliveryStatus.EXHAUSTED and m.claimed.lifecycle_id is not None for m, _, columns in judged
    )
    if not exhausted:
        return sql, params
    operational, operational_params = _operational(ATTEMPT_EXHAUSTED, now)
    sql = (
        f"WITH updated AS ({sql} RETURNING d.id, d.status, d.endpoint_id, d.lifecycle_id, d.webhook_id, "  # noqa: S608
        "d.event_type, d.attempt_count, d.last_error), "
        "source AS (SELECT e.project_id, NULL::uuid AS skip, jsonb_build_object('endpoint_id', u.endpoint_id, "
        "'url', e.url, 'delivery_id', u.id, 'webhook_id', u.webhook_id, 'event_type', u.event_type, "
        "'lifecycle_id', u.lifecycle_id, 'attempts', u.attempt_count, 'last_error', u.last_error) AS data "
        f"FROM updated u JOIN {_ENDPOINTS} e ON e.id = u.endpoint_id "
        "WHERE u.status = 'exhausted' AND u.lifecycle_id IS NOT NULL)" + operational
    )
    return sql, params + operational_params


def _endpoint_runs(judged, now: datetime) -> list[tuple[str, list]]:
    """A success ends its endpoint's failing run; a failure starts one, and disables an endpoint whose run
    has lasted ``WEBHOOK_DISABLE_AFTER_S``."""
    writes = []
    recovered = {
        m.claimed.endpoint_id for m, verdict, _ in judged if verdict == "succeeded" and m.claimed.endpoint_failing
    }
    if recovered:
        sql = f"UPDATE {_ENDPOINTS} SET failing_since = NULL WHERE id = ANY(%s::uuid[])"  # noqa: S608
        writes.append((sql, [sorted(recovered)]))
    failing = {m.claimed.endpoint_id: columns["error"] for m, verdict, columns in judged if verdict != "succeeded"}
    if failing:
        ids = sorted(failing)
        sql = f"UPDATE {_ENDPOINTS} SET failing_since = %s WHERE id = ANY(%s::uuid[]) AND failing_since IS NULL"  # noqa: S608
        writes.append((sql, [now, ids]))
        operational, operational_params = _operational(ENDPOINT_DISABLED, now)
        sql = (
            f"WITH source AS (UPDATE {_ENDPOINTS} e SET enabled = false, disabled_at = %s, "  # noqa: S608
            f"disabled_reason = left(%s || v.error, 500) FROM (VALUES {_values('(%s::uuid, %s)', len(ids))}) "
            "AS v(id, error) WHERE e.id = v.id AND e.enabled AND e.failing_since < %s "
            "RETURNING e.project_id, e.id AS skip, jsonb_build_object('endpoint_id', e.id, 'url', e.url, "
            "'disabled_at', e.disabled_at, 'reason', e.disabled_reason) AS data)" + operational
        )
        reason = f"failing for over {settings.WEBHOOK_DISABLE_AFTER_S} s; last error: "
        params = [now, reason, *(p for i in ids for p in (i, failing[i]))]
        cutoff = now - timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_S)
        writes.append((sql, [*params, cutoff, *operational_params]))
    return writes


_RELEASE_EXPIRED = f"""
UPDATE {_DELIVERIES} SET status = 'pending', lease_expires_at = NULL,
    next_attempt_at = now() + make_interval(secs => CASE WHEN schedule_position < jsonb_array_length(schedule)
        THEN (schedule ->> schedule_position)::int ELSE 0 END),
    schedule_position = least(schedule_position + 1, jsonb_array_length(schedule)),
    last_error = 'the attempt was not recorded before its lease expired (its worker stopped)'
WHERE status = 'sending' AND lease_expires_at < now()
RETURNING id
"""  # noqa: S608


def deliveries_release_expired() -> int:
    """Deliveries whose worker stopped mid-attempt (the lease ran out unrecorded) go back to ``pending``, the
    schedule moved on as for a failed attempt: the receiver may have had it, and a delivery that stops
    its workers must not be tried again at once for ever. Returns how many."""
    with connection.cursor() as cursor:
        cursor.execute(_RELEASE_EXPIRED)
        released = cursor.rowcount
    if released:
        log.warning(
            "webhooks: %d deliveries' leases expired unrecorded; they are due again on their schedule", released
        )
    return released


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
            delivery_routing.failed(
                lifecycle_id=lifecycle_id,
                message="The webhook endpoint was deleted before the result was delivered.",
                details={"delivery_id": str(delivery_id), "reason": "endpoint_deleted"},
            )
        deliveries_lock(Delivery.objects.filter(endpoint=endpoint))
        endpoint.delete()


def deliveries_lock(deliveries) -> None:
    """Hold these deliveries until the transaction ends, before deleting them: the delete gathers their
    attempts first, and an attempt recorded in between would otherwise be left referring to a delivery
    deleted (the commit fails). Lifecycles are locked before deliveries, as recording an attempt does."""
    list(deliveries.select_for_update().values_list("id", flat=True))


def delivery_resend(*, delivery: Delivery) -> Delivery:
    """Send a delivery again (same webhook-id, a fresh retry series), whatever became of it."""
    with transaction.atomic():
        Delivery.objects.filter(id=delivery.id).exclude(status=DeliveryStatus.SENDING).update(
            status=DeliveryStatus.PENDING, schedule_position=0, next_attempt_at=timezone.now()
        )
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [DUE_CHANNEL])
    delivery.refresh_from_db()
    return delivery


class EndpointDisabled(Exception):
    """The endpoint is disabled: whatever is sent to it fails at once."""


def endpoint_recover(*, endpoint: WebhookEndpoint, since: datetime) -> int:
    """Send again every delivery to ``endpoint`` whose schedule ran out since ``since`` (Svix's recover):
    each with its own webhook-id and a fresh retry series. Returns how many."""
    if not endpoint.enabled:
        raise EndpointDisabled
    with transaction.atomic():
        recovered = Delivery.objects.filter(
            endpoint=endpoint, status=DeliveryStatus.EXHAUSTED, created_at__gte=since
        ).update(status=DeliveryStatus.PENDING, schedule_position=0, next_attempt_at=timezone.now(), last_error="")
        if recovered:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, '')", [DUE_CHANNEL])
    return recovered


# --- sweeps --------------------------------------------------------------------------------------


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
    for lifecycle_id in stranded:
        last = Delivery.objects.filter(lifecycle_id=lifecycle_id).order_by("-created_at").first()
        if last is not None and last.status == DeliveryStatus.SUCCEEDED:
            with transaction.atomic():
                delivery_routing.attempts_recorded(
                    [delivery_routing.Attempt(lifecycle_id, "succeeded", last.delivered_at or timezone.now(), None)]
                )
        else:
            reason = "no_delivery" if last is None else f"delivery_{last.status}"
            delivery_routing.failed(
                lifecycle_id=lifecycle_id,
                message="The result could not be delivered to the backend.",
                details={"reason": reason, "delivery_id": str(last.id) if last else None, "swept": True},
            )
        log.warning("webhooks: ended lifecycle %s stranded in delivering", lifecycle_id)
    return len(stranded)


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
