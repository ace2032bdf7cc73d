"""Every write to a project, key or lifecycle goes through here.

Transitions follow one rule (see :func:`transition`): lock the lifecycle row, check the move against the
state machine in :mod:`lifecycle.states`, and in the same transaction write the new status, its timeline
event and the outbox row that publishes it. A move the machine does not allow is a no-op that returns
``None``: at-least-once delivery means every step may be asked for twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from lifecycle import delivery, keycache, limits, outbox, store, tracing
from lifecycle.models import ApiKey, JwtIssuer, Lifecycle, OutboxMessage, Project, TimelineEvent, UsageDaily
from lifecycle.states import EVENT_FOR_STATUS, TERMINAL, ErrorCode, Status, can_transition
from orchestrator import metrics

API_KEY_PREFIX = "lk"
# Timeline payloads are for people reading the timeline, not an archive: anything bigger is cut.
MAX_EVENT_PAYLOAD_BYTES = 16 * 1024


class BudgetExceeded(Exception):
    """The project spent its daily budget: no new request until the day (UTC) ends, ``retry_after_s``."""

    def __init__(self, *, budget: Decimal, spent: Decimal, retry_after_s: int) -> None:
        super().__init__(f"The project's daily budget of ${budget} is spent (${spent:.4f} today).")
        self.budget, self.spent, self.retry_after_s = budget, spent, retry_after_s


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with another request body."""


# --- projects and keys ---------------------------------------------------------------------------


def _hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_create(*, project: Project, name: str = "default") -> tuple[ApiKey, str]:
    """Create a key and return it with its plaintext, which is never stored and cannot be shown again."""
    prefix = f"{API_KEY_PREFIX}_{secrets.token_hex(6)}"
    raw_key = f"{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(project=project, name=name, prefix=prefix, key_hash=_hash_key(raw_key))
    return key, raw_key


def api_key_authenticate(*, raw_key: str) -> ApiKey | None:
    # "lk_<12 hex>_<secret>": the secret may itself contain underscores.
    kind, _, rest = raw_key.partition("_")
    prefix = f"{kind}_{rest.partition('_')[0]}"
    key = keycache.active_key(prefix)
    if key is None or not hmac.compare_digest(key.key_hash, _hash_key(raw_key)):
        return None
    return key


def api_key_revoke(*, key: ApiKey) -> None:
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    keycache.changed()


class JwtIssuerConflict(Exception):
    """Another project (or this one) already registered this issuer with this audience."""


def jwt_issuer_create(*, project: Project, **fields: Any) -> JwtIssuer:
    try:
        with transaction.atomic():
            return JwtIssuer.objects.create(project=project, **fields)
    except IntegrityError as exc:
        raise JwtIssuerConflict from exc


def jwt_issuer_update(*, jwt_issuer: JwtIssuer, **fields: Any) -> JwtIssuer:
    for name, value in fields.items():
        setattr(jwt_issuer, name, value)
    if fields.get("jwks_url"):
        jwt_issuer.secret = ""  # one kind of key at a time
    elif fields.get("secret"):
        jwt_issuer.jwks_url = ""
    try:
        with transaction.atomic():
            jwt_issuer.save()
    except IntegrityError as exc:
        raise JwtIssuerConflict from exc
    return jwt_issuer


def jwt_issuer_delete(*, jwt_issuer: JwtIssuer) -> None:
    jwt_issuer.delete()


@transaction.atomic
def project_create(*, name: str) -> tuple[Project, str]:
    project = Project.objects.create(name=name)
    _, raw_key = api_key_create(project=project)
    return project, raw_key


def project_caps() -> dict[str, int]:
    """The generations in flight each capped project may have, across every generator (limits.Gate)."""
    capped = Project.objects.filter(max_generations_in_flight__isnull=False)
    return {str(pid): cap for pid, cap in capped.values_list("id", "max_generations_in_flight")}


# --- timeline and transitions --------------------------------------------------------------------


def _bounded(payload: dict[str, Any]) -> dict[str, Any]:
    encoded = orjson.dumps(payload, default=str)
    if len(encoded) <= MAX_EVENT_PAYLOAD_BYTES:
        return payload
    return {"truncated": True, "excerpt": encoded[:MAX_EVENT_PAYLOAD_BYTES].decode(errors="ignore")}


def kafka_headers(lifecycle: Lifecycle, event_type: str) -> dict[str, str]:
    """Headers every message about a lifecycle carries. The subscriber identity here is the one recorded at
    creation by an authenticated project, so consumers may trust it for routing."""
    return {
        "event-type": event_type,
        "project-id": str(lifecycle.project_id),
        "subscriber-user-id": str(lifecycle.subscriber.get("user_id", "")),
        "subscriber-tier": str(lifecycle.subscriber.get("tier", "")),
        "traceparent": lifecycle.traceparent,
    }


def _next_event(
    lifecycle: Lifecycle, *, event: str, payload: dict[str, Any], duration_ms: float | None = None
) -> tuple[TimelineEvent, OutboxMessage]:
    """The next timeline event of a lifecycle whose row this transaction holds locked (or is creating), and
    the outbox message that publishes it; neither is written yet."""
    lifecycle.last_seq += 1
    timeline_event = TimelineEvent(
        lifecycle=lifecycle,
        seq=lifecycle.last_seq,
        event=event,
        at=timezone.now(),
        duration_ms=duration_ms,
        payload=_bounded(payload),
    )
    message = outbox.message(
        topic=outbox.TOPIC_EVENTS,
        key=str(lifecycle.id),
        event_type=event,
        headers=kafka_headers(lifecycle, event),
        payload=event_message(lifecycle, timeline_event),
    )
    return timeline_event, message


@dataclass(frozen=True)
class Step:
    """A timeline event that is not a status change (a provider attempt, a webhook attempt, ...)."""

    event: str
    payload: dict[str, Any]
    duration_ms: float | None = None


def _record(
    lifecycle: Lifecycle, *steps: Step, fields: tuple[str, ...] = (), also: tuple[OutboxMessage, ...] = ()
) -> None:
    """Append timeline events to a lifecycle whose row this transaction holds locked, publish them (and the
    messages ``also``, after them), and write ``fields`` of the row: one round trip, however many events
    there are (:mod:`lifecycle.store`)."""
    written = [_next_event(lifecycle, event=s.event, payload=s.payload, duration_ms=s.duration_ms) for s in steps]
    store.update(
        lifecycle,
        fields=(*fields, "last_seq"),
        events=[timeline_event for timeline_event, _ in written],
        messages=[*(message for _, message in written), *also],
    )


def event_message(lifecycle: Lifecycle, timeline_event: TimelineEvent) -> dict[str, Any]:
    """The body of a ``lifecycle.events`` message (schema in docs/events.md). ``lifecycle.completed`` carries
    the result when it is small, so consumers (the realtime fan-out) need not read it back."""
    message = {
        "lifecycle_id": str(lifecycle.id),
        "project_id": str(lifecycle.project_id),
        "seq": timeline_event.seq,
        "event": timeline_event.event,
        "at": timeline_event.at.isoformat(),
        "status": lifecycle.status,
        "duration_ms": timeline_event.duration_ms,
        "data": timeline_event.payload,
        "metadata": lifecycle.metadata,
    }
    completed = timeline_event.event == EVENT_FOR_STATUS[Status.COMPLETED]
    if completed and len(orjson.dumps(lifecycle.result, default=str)) <= MAX_EVENT_PAYLOAD_BYTES:
        message["result"] = lifecycle.result
    return message


def _generation_request(lifecycle: Lifecycle) -> OutboxMessage:
    return outbox.message(
        topic=outbox.TOPIC_REQUESTS,
        key=str(lifecycle.id),
        event_type="generation.requested",
        headers=kafka_headers(lifecycle, "generation.requested"),
        # What the generator decides its turn by before it claims: the model and the tokens it will use.
        payload={
            "lifecycle_id": str(lifecycle.id),
            "project_id": str(lifecycle.project_id),
            "model": lifecycle.model,
            "tokens": limits.estimate_tokens(lifecycle.messages, lifecycle.params),
        },
    )


def _entered(lifecycle: Lifecycle, status: str):
    """When the lifecycle entered ``status``."""
    return lifecycle.created_at if status == Status.PENDING else getattr(lifecycle, _STEP_TIMESTAMP[status])


_STEP_TIMESTAMP = {
    Status.GENERATING: "generating_at",
    Status.DELIVERING: "delivering_at",
    Status.AWAITING_CALLBACK: "awaiting_callback_at",
    Status.COMPLETED: "finished_at",
    Status.FAILED: "finished_at",
    Status.CANCELLED: "finished_at",
}


def transition(
    *,
    lifecycle_id,
    to: Status,
    only_from: frozenset[Status] | None = None,
    payload: dict[str, Any] | None = None,
    fields: dict[str, Any] | None = None,
) -> Lifecycle | None:
    """Move a lifecycle to ``to`` if the state machine (and ``only_from``, when given) allows it.

    1. Lock the row, so concurrent workers asking for moves are serialised.
    2. Check the move; a move not allowed (a repeat, a late result after a cancel) returns ``None``.
    3. Write the status, its step timestamp and ``fields``; append the timeline event; enqueue the outbox
       message. All in one transaction: a state change is never visible without its event.
    """
    with store.transaction():
        lifecycle = _locked(lifecycle_id)
        if lifecycle is None:
            return None
        return _move(lifecycle, to=to, only_from=only_from, payload=payload, fields=fields)


def _locked(lifecycle_id) -> Lifecycle | None:
    return store.lock(lifecycle_id)


def _move(
    lifecycle: Lifecycle,
    *,
    to: Status,
    only_from: frozenset[Status] | None = None,
    payload: dict[str, Any] | None = None,
    fields: dict[str, Any] | None = None,
    steps: tuple[Step, ...] = (),
) -> Lifecycle | None:
    """Steps 2 and 3 of :func:`transition`, on a lifecycle this transaction holds locked. ``steps`` are
    events that happened whether or not the move is allowed (the provider attempt that produced a result):
    they are recorded before the move's own event, in the same statements, either way."""
    if not can_transition(lifecycle.status, to) or (only_from is not None and lifecycle.status not in only_from):
        if steps:
            _record(lifecycle, *steps)
        return None
    previous, started = lifecycle.status, lifecycle.updated_at
    entered_previous = _entered(lifecycle, previous)
    lifecycle.status = to
    setattr(lifecycle, _STEP_TIMESTAMP[to], timezone.now())
    for name, value in (fields or {}).items():
        setattr(lifecycle, name, value)
    duration_ms = (timezone.now() - started).total_seconds() * 1000
    moved = Step(EVENT_FOR_STATUS[to], {"from": previous, **(payload or {})}, duration_ms)
    _record(lifecycle, *steps, moved, fields=("status", _STEP_TIMESTAMP[to], *(fields or {})))
    transaction.on_commit(lambda: _observe_transition(lifecycle, previous, entered_previous))
    return lifecycle


def _observe_transition(lifecycle: Lifecycle, previous: str, entered_previous) -> None:
    now = timezone.now()
    metrics.TRANSITIONS.labels(status=lifecycle.status).inc()
    step = metrics.STEP_OF_STATUS.get(previous)
    if step and entered_previous:
        metrics.STEP_SECONDS.labels(step=step).observe((now - entered_previous).total_seconds())
    if lifecycle.status in TERMINAL:
        metrics.STEP_SECONDS.labels(step="end_to_end").observe((now - lifecycle.created_at).total_seconds())


def record_event(*, lifecycle_id, event: str, payload: dict[str, Any], duration_ms: float | None = None) -> None:
    """Append a step that is not a status change (a provider attempt, a webhook attempt, ...)."""
    with transaction.atomic():
        lifecycle = _locked(lifecycle_id)
        if lifecycle is None:
            return  # deleted meanwhile (retention, a test's cleanup): nothing to record on
        _record(lifecycle, Step(event, payload, duration_ms))


# --- creating ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LifecycleRequest:
    model: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    response_format: dict[str, Any] | None
    fallbacks: list[str]
    delivery: dict[str, Any]
    metadata: dict[str, Any]
    subscriber: dict[str, Any]

    def fingerprint(self) -> str:
        return hashlib.sha256(orjson.dumps(self.__dict__, option=orjson.OPT_SORT_KEYS)).hexdigest()


def lifecycle_create(
    *,
    project: Project,
    request: LifecycleRequest,
    idempotency_key: str | None = None,
    traceparent: str | None = None,
    replay_of: Lifecycle | None = None,
    lifecycle_id: uuid.UUID | None = None,
) -> tuple[Lifecycle, bool]:
    """Record a lifecycle and ask for its generation. Returns ``(lifecycle, created)``. A caller that
    follows the lifecycle from its first moment (the OpenAI-compatible stream) picks its ``lifecycle_id``.

    With an ``idempotency_key`` already used by this project, returns the first lifecycle when the request
    is the same, and raises :class:`IdempotencyConflict` when it is not.
    """
    fingerprint = request.fingerprint()
    if idempotency_key:
        existing = _idempotent_match(project, idempotency_key, fingerprint)
        if existing is not None:
            return existing, False
    if project.daily_budget_usd is not None:
        budget_check(project)
    try:
        # One statement string is one transaction of its own: outside a caller's transaction, the insert needs
        # no BEGIN and COMMIT round trips (inside one, a savepoint keeps a lost race from aborting it).
        with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
            lifecycle = Lifecycle(
                id=lifecycle_id or uuid.uuid4(),
                project=project,
                status=Status.PENDING,
                idempotency_key=idempotency_key or None,
                request_hash=fingerprint,
                traceparent=traceparent if tracing.trace_id(traceparent or "") else tracing.new_span(None),
                replay_of=replay_of,
                lease_expires_at=timezone.now() + timedelta(seconds=settings.RECONCILE_AFTER_S),
                **request.__dict__,
            )
            payload = {"model": request.model, "delivery": request.delivery.get("mode")}
            if replay_of is not None:
                payload["replay_of"] = str(replay_of.id)
            # One round trip: the row (its first event already counted), that event, and both outbox messages.
            created, event = _next_event(lifecycle, event=EVENT_FOR_STATUS[Status.PENDING], payload=payload)
            store.insert(lifecycle, events=[created], messages=[event, _generation_request(lifecycle)])
    except IntegrityError:
        # Two requests with one key raced; the loser answers like a retry.
        existing = _idempotent_match(project, idempotency_key, fingerprint) if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    return lifecycle, True


def budget_check(project: Project) -> None:
    """Raise :class:`BudgetExceeded` if the project's spend today (UTC, counted as results are stored)
    reached its daily budget. Generations already accepted still run: the budget stops new requests."""
    now = timezone.now()
    spent = UsageDaily.objects.filter(project=project, day=now.date()).aggregate(spent=Sum("cost_usd"))["spent"]
    if spent is not None and spent >= project.daily_budget_usd:
        tomorrow = datetime.combine(now.date() + timedelta(days=1), time.min, tzinfo=UTC)
        retry_after_s = max(1, math.ceil((tomorrow - now).total_seconds()))
        raise BudgetExceeded(budget=project.daily_budget_usd, spent=spent, retry_after_s=retry_after_s)


def _idempotent_match(project: Project, key: str, fingerprint: str) -> Lifecycle | None:
    existing = Lifecycle.objects.filter(project=project, idempotency_key=key).first()
    if existing is not None and existing.request_hash != fingerprint:
        raise IdempotencyConflict(key)
    return existing


# --- generation ----------------------------------------------------------------------------------


def generation_claim(*, lifecycle_id) -> Lifecycle | None:
    """Claim a lifecycle for generation: ``pending`` → ``generating`` with a lease. A lifecycle already
    generating under an expired lease (its worker died) is claimed again. Anything else: ``None``.

    The claim's ``attempts`` is its fencing token: the holder renews the lease with it
    (:func:`generation_leases_renew`) and records the outcome with it (:func:`generation_succeed`,
    :func:`generation_fail`); a reclaim increments it, so a worker that lost its lease can change nothing."""
    return generation_claim_many(lifecycle_ids=[lifecycle_id]).get(str(lifecycle_id))


def generation_claim_many(*, lifecycle_ids) -> dict[str, Lifecycle]:
    """:func:`generation_claim` for a consumed batch, in one transaction and two round trips however many
    there are (the locking read, then every claim's writes). Returns the claimed ones by id."""
    lease = timezone.now() + timedelta(seconds=settings.GENERATION_LEASE_S)
    claimed = {}
    with store.transaction():
        for lifecycle in store.lock_many(lifecycle_ids):
            if _claim(lifecycle, lease) is not None:
                claimed[str(lifecycle.id)] = lifecycle
    return claimed


def _claim(lifecycle: Lifecycle, lease) -> Lifecycle | None:
    if can_transition(lifecycle.status, Status.GENERATING):
        return _move(lifecycle, to=Status.GENERATING, fields={"lease_expires_at": lease})
    if lifecycle.status != Status.GENERATING:
        return None
    if lifecycle.lease_expires_at and lifecycle.lease_expires_at > timezone.now():
        return None  # another worker holds it
    lifecycle.lease_expires_at = lease
    lifecycle.attempts += 1
    reclaimed = Step("generation.reclaimed", {"reason": "lease expired"})
    _record(lifecycle, reclaimed, fields=("lease_expires_at", "attempts"))
    return lifecycle


def generation_waiting_renew(*, lifecycle_ids) -> int:
    """A generator holds these pending lifecycles in its queue (their turn has not come, or their model or
    project is on hold): the reconciler must not publish them again as lost. Their pending lease moves to
    ``RECONCILE_AFTER_S`` from now; a generator that dies stops renewing, and they are re-driven."""
    lease = timezone.now() + timedelta(seconds=settings.RECONCILE_AFTER_S)
    return Lifecycle.objects.filter(
        id__in=list(lifecycle_ids), status=Status.PENDING, lease_expires_at__lt=lease
    ).update(lease_expires_at=lease)


def generation_leases_renew(*, held: dict[str, int]) -> set[str]:
    """Extend the leases of the generations a worker holds (lifecycle id → fencing token), in one statement,
    and return the ids that another worker reclaimed meanwhile (this one was cut off past its lease): their
    generations should be abandoned. (One that finished or was cancelled meanwhile is neither.)"""
    if not held:
        return set()
    renewed = _renew(held)
    if len(renewed) == len(held):
        return set()
    rows = Lifecycle.objects.filter(id__in=[uuid.UUID(i) for i in held.keys() - renewed], status=Status.GENERATING)
    return {
        str(lifecycle_id)
        for lifecycle_id, attempts in rows.values_list("id", "attempts")
        if attempts != held[str(lifecycle_id)]
    }


def _renew(held: dict[str, int]) -> set[str]:
    lease = timezone.now() + timedelta(seconds=settings.GENERATION_LEASE_S)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE lifecycle_lifecycle AS l SET lease_expires_at = %s "
            "FROM unnest(%s::uuid[], %s::int[]) AS held(id, attempts) "
            "WHERE l.id = held.id AND l.attempts = held.attempts AND l.status = %s RETURNING l.id",
            [lease, [uuid.UUID(i) for i in held], list(held.values()), Status.GENERATING.value],
        )
        return {str(row[0]) for row in cursor.fetchall()}


def _holds_lease(lifecycle: Lifecycle, lease: int | None) -> bool:
    return lease is None or (lifecycle.status == Status.GENERATING and lifecycle.attempts == lease)


def generation_succeed(
    *,
    lifecycle_id,
    output: Any,
    usage: dict[str, Any] | None,
    model_used: str,
    attempt: Step | None = None,
    lease: int | None = None,
) -> Lifecycle | None:
    """Store a generation's output and move on, recording the provider ``attempt`` that produced it in the
    same transaction. A late result (the lifecycle was cancelled, another worker finished first, or holds
    the lease now: ``lease`` is the claim's fencing token) changes nothing but the attempt's record."""
    result = {"lifecycle_id": lifecycle_id, "output": output, "usage": usage, "model_used": model_used}
    return generation_succeed_many(results=[result | {"attempt": attempt, "lease": lease}])[0]


def generation_succeed_many(*, results: list[dict[str, Any]]) -> list[Lifecycle | None]:
    """:func:`generation_succeed` for several results at once (each a dict of its arguments), in one
    transaction and two round trips however many there are; the outcome of each, in order."""
    with store.transaction():
        locked = {str(lc.id): lc for lc in store.lock_many([r["lifecycle_id"] for r in results])}
        moved = [_succeed(locked.get(str(r["lifecycle_id"])), r) for r in results]
        _add_usage([lifecycle for lifecycle in moved if lifecycle is not None])
        for lifecycle in moved:
            if lifecycle is not None and lifecycle.status == Status.DELIVERING:
                delivery.start(lifecycle=lifecycle)  # (written at once, before the batch: same transaction)
    return moved


def _add_usage(lifecycles: list[Lifecycle]) -> None:
    """Count what these lifecycles' generations used into the day's usage, in the same transaction."""
    day = timezone.now().date()
    sums: dict[tuple, list] = {}
    for lifecycle in lifecycles:
        usage = lifecycle.usage or {}
        row = sums.setdefault((lifecycle.project_id, day, lifecycle.model_used or lifecycle.model), [0, 0, 0, 0])
        row[0] += 1
        row[1] += int(usage.get("input_tokens") or 0)
        row[2] += int(usage.get("output_tokens") or 0)
        row[3] += Decimal(str(usage.get("cost_usd") or 0))
    store.usage_add([(*key, *row) for key, row in sums.items()])


def _succeed(lifecycle: Lifecycle | None, result: dict[str, Any]) -> Lifecycle | None:
    if lifecycle is None:
        return None
    output, usage, model_used = result["output"], result["usage"], result["model_used"]
    fields = {"output": output, "usage": usage, "model_used": model_used, "lease_expires_at": None}
    payload = {"model": model_used, "usage": usage}
    steps = (result["attempt"],) if result.get("attempt") else ()
    if not _holds_lease(lifecycle, result.get("lease")):
        if steps:
            _record(lifecycle, *steps)
        return None
    if lifecycle.delivery.get("mode") in (None, delivery.DIRECT):
        # No backend step: the output is the result.
        fields["result"] = output
        to = Status.COMPLETED
    else:
        to = Status.DELIVERING
    generating = frozenset({Status.GENERATING})
    return _move(lifecycle, to=to, only_from=generating, payload=payload, fields=fields, steps=steps)


def delivery_attempts_recorded(*, attempts: list[delivery.Attempt]) -> None:
    """:func:`lifecycle.delivery.attempts_recorded`: in the caller's transaction, the lifecycles locked in
    id order and every attempt's step and move written in one round trip."""
    with store.batched():
        locked = {str(lc.id): lc for lc in store.lock_many(sorted({str(a.lifecycle_id) for a in attempts}))}
        for attempt in attempts:
            lifecycle = locked.get(str(attempt.lifecycle_id))
            if lifecycle is not None:  # deleted meanwhile (retention, a test's cleanup): nothing to record on
                _attempt_recorded(lifecycle, attempt)


def _attempt_recorded(lifecycle: Lifecycle, attempt: delivery.Attempt) -> Lifecycle | None:
    steps = () if attempt.payload is None else (Step("webhook.attempt", attempt.payload, attempt.latency_ms),)
    delivering = frozenset({Status.DELIVERING})
    if attempt.verdict == "failed":
        error = _error(ErrorCode.WEBHOOK_EXHAUSTED, attempt.message, "webhook", attempt.details)
        return _fail(lifecycle, error, steps=steps)
    if attempt.verdict == "retry":
        if steps:
            _record(lifecycle, *steps)
        return None
    if lifecycle.delivery.get("mode") == delivery.WEBHOOK:
        fields = {"result": lifecycle.output}
        return _move(lifecycle, to=Status.COMPLETED, only_from=delivering, fields=fields, steps=steps)
    timeout_s = lifecycle.delivery.get("callback_timeout_s", delivery.DEFAULT_CALLBACK_TIMEOUT_S)
    deadline = attempt.at + timedelta(seconds=timeout_s)
    return _move(
        lifecycle,
        to=Status.AWAITING_CALLBACK,
        only_from=delivering,
        payload={"deadline": deadline.isoformat()},
        fields={"lease_expires_at": deadline},
        steps=steps,
    )


def delivery_failed(*, lifecycle_id, message: str, details: Any = None) -> Lifecycle | None:
    """:func:`lifecycle.delivery.failed`. A lifecycle that has moved on (an operator's resend of a finished
    one) is left as it is."""
    with store.transaction():
        lifecycle = _locked(lifecycle_id)
        if lifecycle is None:
            return None
        return _fail(lifecycle, _error(ErrorCode.WEBHOOK_EXHAUSTED, message, "webhook", details))


def delivery_callback_received(*, lifecycle_id, body: dict[str, Any]) -> Lifecycle:
    """:func:`lifecycle.delivery.callback_received`: one lock, and the callback's step and the move in one
    round trip."""
    lifecycle = _locked(lifecycle_id)
    if lifecycle is None:
        raise Lifecycle.DoesNotExist(lifecycle_id)
    waiting = frozenset({Status.DELIVERING, Status.AWAITING_CALLBACK})
    if lifecycle.status not in waiting:
        raise delivery.NotAwaitingCallback(f"The lifecycle is {lifecycle.status}; it takes no callback.")
    outcome = "data" if "data" in body else "error"
    received = Step("callback.received", {"outcome": outcome, **body})
    if outcome == "data":
        fields = {"result": body["data"], "lease_expires_at": None}
        moved = _move(
            lifecycle, to=Status.COMPLETED, only_from=waiting, payload={"source": "callback"}, fields=fields,
            steps=(received,),
        )  # fmt: skip
    else:
        error = body["error"]
        details = {"backend_code": error["code"], **({"details": error["details"]} if "details" in error else {})}
        moved = _fail(
            lifecycle, _error(ErrorCode.BACKEND_REJECTED, error["message"], "callback", details), steps=(received,)
        )
    assert moved is not None  # the status was checked under the lock
    return moved


def lifecycles_expire_callbacks(*, limit: int = 500) -> int:
    """Fail lifecycles whose backend never called back before the deadline."""
    expired = list(
        Lifecycle.objects.filter(status=Status.AWAITING_CALLBACK, lease_expires_at__lt=timezone.now()).values_list(
            "id", flat=True
        )[:limit]
    )
    failed = 0
    for lifecycle_id in expired:
        if lifecycle_fail(
            lifecycle_id=lifecycle_id,
            code=ErrorCode.CALLBACK_TIMEOUT,
            message="The backend did not call back in time.",
            step="callback",
        ):
            failed += 1
    return failed


def _error(code: ErrorCode, message: str, step: str, details: Any = None) -> dict[str, Any]:
    error = {"code": code.value, "message": message, "step": step}
    if details is not None:
        error["details"] = details
    return error


def _fail(
    lifecycle: Lifecycle, error: dict[str, Any], steps: tuple[Step, ...] = (), fields: tuple[str, ...] = ()
) -> Lifecycle | None:
    """Fail a lifecycle this transaction holds locked, with ``error`` on it and on its timeline (and its
    ``fields`` named, already set)."""
    fields = {"error": error, "lease_expires_at": None, **{name: getattr(lifecycle, name) for name in fields}}
    return _move(lifecycle, to=Status.FAILED, payload={"error": error}, fields=fields, steps=steps)


def lifecycle_fail(*, lifecycle_id, code: ErrorCode, message: str, step: str, details: Any = None) -> Lifecycle | None:
    with store.transaction():
        lifecycle = _locked(lifecycle_id)
        return None if lifecycle is None else _fail(lifecycle, _error(code, message, step, details))


def generation_fail(
    *,
    lifecycle_id,
    lease: int,
    code: ErrorCode,
    message: str,
    details: Any = None,
    usage: dict[str, Any] | None = None,
    model_used: str = "",
) -> Lifecycle | None:
    """Fail a generation, if the caller still holds its lease (``lease``: the claim's fencing token): a
    worker that lost its lease must not fail what the live one may yet complete. A model that answered
    unusably (``output_invalid``) still used tokens: ``usage`` is recorded and counted like a result's."""
    with store.transaction():
        lifecycle = _locked(lifecycle_id)
        if lifecycle is None or not _holds_lease(lifecycle, lease):
            return None
        if usage is None:
            return _fail(lifecycle, _error(code, message, "generation", details))
        lifecycle.usage, lifecycle.model_used = usage, model_used
        with store.batched():
            failed = _fail(lifecycle, _error(code, message, "generation", details), fields=("usage", "model_used"))
            _add_usage([lifecycle])
        return failed


CANCEL_CHANNEL = "lifecycle_cancelled"


def lifecycle_cancel(*, lifecycle: Lifecycle) -> Lifecycle | None:
    """Cancel a live lifecycle. Generators listening on ``CANCEL_CHANNEL`` abandon its generation at once;
    a result that arrives anyway is ignored by the state machine."""
    error = {"code": ErrorCode.CANCELLED.value, "message": "The lifecycle was cancelled.", "step": lifecycle.status}
    with transaction.atomic():
        cancelled = transition(
            lifecycle_id=lifecycle.id,
            to=Status.CANCELLED,
            payload={"error": error},
            fields={"error": error, "lease_expires_at": None},
        )
        if cancelled is not None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, %s)", [CANCEL_CHANNEL, str(lifecycle.id)])
    return cancelled


# --- reconciling ---------------------------------------------------------------------------------


def lifecycles_redrive_stuck(*, limit: int = 500) -> int:
    """Ask again for the generation of lifecycles whose request was lost: still ``pending`` past their lease
    (the broker lost the message, or the relay was down), or ``generating`` past the lease of a worker that
    died. Returns how many were re-driven."""
    now = timezone.now()
    stuck = Q(status__in=[Status.PENDING, Status.GENERATING], lease_expires_at__lt=now) & (
        Q(next_redrive_at__isnull=True) | Q(next_redrive_at__lt=now)
    )
    redriven = 0
    for lifecycle_id in Lifecycle.objects.filter(stuck).values_list("id", flat=True)[:limit]:
        with transaction.atomic():
            lifecycle = Lifecycle.objects.select_for_update(skip_locked=True).filter(stuck, id=lifecycle_id).first()
            if lifecycle is None:
                continue  # it moved on, or another reconciler has it
            # Each re-drive waits twice as long as the last before the next (30 s, 1 min, 2 min, ... 32 min):
            # a request that is only late, behind a consumer lag, is not published again and again onto
            # the very backlog that delays it.
            backoff = settings.RECONCILE_AFTER_S * 2 ** min(lifecycle.redrive_count, 6)
            lifecycle.next_redrive_at = now + timedelta(seconds=backoff)
            lifecycle.redriven_at = now
            lifecycle.redrive_count += 1
            _record(
                lifecycle,
                Step("lifecycle.redriven", {"status": lifecycle.status}),
                fields=("redriven_at", "redrive_count", "next_redrive_at"),
                also=(_generation_request(lifecycle),),
            )
            redriven += 1
    return redriven


def message_dead_letter(*, source_topic: str, key: str, value: bytes, headers: dict[str, str], reason: str) -> None:
    """Park a message no handler can process on ``lifecycle.dlq`` (with the reason), and fail the lifecycle
    it was about, if it names one, so nothing waits for it forever."""
    with transaction.atomic():
        outbox.enqueue(
            topic=outbox.TOPIC_DLQ,
            key=key,
            event_type="dead_letter",
            headers={**headers, "dlq-reason": reason[:500], "dlq-source-topic": source_topic},
            payload={"source_topic": source_topic, "reason": reason, "value": value.decode(errors="replace")[:65536]},
        )
    try:
        lifecycle_id = uuid.UUID(key)
    except ValueError:
        return
    lifecycle_fail(
        lifecycle_id=lifecycle_id,
        code=ErrorCode.GENERATION_FAILED,
        message="The request could not be processed.",
        step="generation",
        details={"reason": reason},
    )


def lifecycle_replay(*, lifecycle: Lifecycle, traceparent: str | None = None) -> Lifecycle:
    """A new lifecycle from the same input, linked to the original."""
    request = LifecycleRequest(
        model=lifecycle.model,
        messages=lifecycle.messages,
        params=lifecycle.params,
        response_format=lifecycle.response_format,
        fallbacks=lifecycle.fallbacks,
        delivery=lifecycle.delivery,
        metadata=lifecycle.metadata,
        subscriber=lifecycle.subscriber,
    )
    replay, _ = lifecycle_create(
        project=lifecycle.project,
        request=request,
        traceparent=traceparent or lifecycle.traceparent,
        replay_of=lifecycle,
    )
    return replay


# --- retention -----------------------------------------------------------------------------------

# What a pruned timeline payload keeps: enough to read the step, none of the content.
KEPT_ON_PRUNE = ("from", "model", "attempt", "outcome", "http_status", "status_code", "latency_ms", "retryable")


def timeline_prune(*, older_than: timedelta, batch: int = 5000) -> int:
    """Cut the payloads of timeline events older than ``older_than`` down to their summary keys (error codes
    included). Events, their order and timing, and the lifecycles' own status/result/error stay whole."""
    cutoff = timezone.now() - older_than
    pruned = 0
    while True:
        events = list(
            TimelineEvent.objects.filter(at__lt=cutoff).exclude(payload__has_key="pruned").only("id", "payload")[:batch]
        )
        if not events:
            return pruned
        for event in events:
            kept = {k: v for k, v in (event.payload or {}).items() if k in KEPT_ON_PRUNE}
            error = (event.payload or {}).get("error")
            if isinstance(error, dict):
                kept["error"] = {k: error[k] for k in ("code", "step") if k in error}
            event.payload = {**kept, "pruned": True}
        TimelineEvent.objects.bulk_update(events, ["payload"])
        pruned += len(events)
