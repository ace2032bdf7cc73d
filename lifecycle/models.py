from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from lifecycle.states import Status
from orchestrator.crypto import EncryptedCharField


class Project(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    # API requests per second; empty means the deployment's RATE_LIMIT_PER_S.
    rate_limit_per_s = models.PositiveIntegerField(null=True, blank=True)
    # Set by the operator (admin, ``manage.py projectlimits``); empty means none.
    max_generations_in_flight = models.PositiveIntegerField(
        null=True, blank=True, help_text="Generations this project may have running at once, across every generator."
    )
    daily_budget_usd = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Past this spend in a day (UTC), new requests are refused with 429 budget_exceeded.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A project's API key. Only its prefix (to find it) and a SHA-256 of the whole key are kept: keys are
    long random strings, so a fast hash is as safe as a slow one and keeps authentication cheap."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200, default="default")
    prefix = models.CharField(max_length=32, unique=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.project})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class JwtIssuer(models.Model):
    """A project's own identity provider. A frontend holding one of its JWTs calls the API as its user: the
    subscriber identity comes from the verified claims, and it sees only its own lifecycles."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="jwt_issuers")
    issuer = models.CharField(max_length=500)  # the tokens' ``iss``
    audience = models.CharField(max_length=500)  # their ``aud``
    # Where its public keys are (RS*/PS*/ES*/EdDSA tokens), or the shared secret of HS256 tokens: one of two.
    jwks_url = models.URLField(max_length=2000, blank=True, default="")
    secret = EncryptedCharField(max_length=1000, blank=True, default="")  # encrypted at rest
    user_claim = models.CharField(max_length=100, default="sub")
    tier_claim = models.CharField(max_length=100, default="tier")
    allowed_origins = models.JSONField(default=list, blank=True)  # browser origins (CORS)
    # Requests per second per user; empty means the deployment's JWT_RATE_LIMIT_PER_USER_S.
    rate_limit_per_user_s = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        # One issuer and audience name one project: a token must never be good for two.
        constraints = [models.UniqueConstraint(fields=["issuer", "audience"], name="jwt_issuer_unique")]

    def __str__(self) -> str:
        return f"{self.issuer} ({self.audience})"


class Lifecycle(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="lifecycles")
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.PENDING)

    # What was asked.
    model = models.CharField(max_length=200)
    messages = models.JSONField()
    params = models.JSONField(default=dict, blank=True)
    response_format = models.JSONField(null=True, blank=True)
    fallbacks = models.JSONField(default=list, blank=True)
    delivery = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    subscriber = models.JSONField(default=dict, blank=True)
    # NULL, not "", when absent: the unique constraint must not treat "no key" as one shared key.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    request_hash = models.CharField(max_length=64, blank=True, default="")
    # W3C trace context of the request that created it: every event, message and webhook carries it on.
    traceparent = models.CharField(max_length=55, blank=True, default="")
    replay_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replays")

    # What came of it.
    output = models.JSONField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    usage = models.JSONField(null=True, blank=True)
    model_used = models.CharField(max_length=200, blank=True, default="")

    # Bookkeeping: the last timeline seq handed out, and the lease of the worker holding the current step.
    last_seq = models.PositiveIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    redriven_at = models.DateTimeField(null=True, blank=True)
    redrive_count = models.PositiveIntegerField(default=0)
    next_redrive_at = models.DateTimeField(null=True, blank=True)  # the reconciler's backoff

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    generating_at = models.DateTimeField(null=True, blank=True)
    delivering_at = models.DateTimeField(null=True, blank=True)
    awaiting_callback_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["project", "-created_at", "-id"], name="lifecycle_project_recent"),
            models.Index(fields=["project", "status", "-created_at"], name="lifecycle_project_status"),
            # The reconciler scans only lifecycles waiting for a generation, by lease.
            models.Index(
                fields=["lease_expires_at"],
                name="lifecycle_generation_lease",
                condition=Q(status__in=["pending", "generating"]),
            ),
            # The stranded-delivery sweep scans only lifecycles in delivering.
            models.Index(fields=["delivering_at"], name="lifecycle_delivering", condition=Q(status="delivering")),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "idempotency_key"],
                name="lifecycle_unique_idempotency_key",
                condition=Q(idempotency_key__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0]


class TimelineEvent(models.Model):
    """One step of a lifecycle. ``seq`` is strictly increasing per lifecycle, without gaps, so a client
    can resume after the last one it saw and dedupe by it."""

    lifecycle = models.ForeignKey(Lifecycle, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    event = models.CharField(max_length=64)
    at = models.DateTimeField()
    duration_ms = models.FloatField(null=True, blank=True)
    payload = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["lifecycle", "seq"]
        constraints = [models.UniqueConstraint(fields=["lifecycle", "seq"], name="timeline_unique_seq")]

    def __str__(self) -> str:
        return f"{self.lifecycle_id}#{self.seq} {self.event}"


class OutboxMessage(models.Model):
    """A Kafka message written in the same transaction as the change it announces. The relay publishes
    committed rows in id order and marks them published; nothing else writes to Kafka."""

    topic = models.CharField(max_length=128)
    key = models.CharField(max_length=128)
    event_type = models.CharField(max_length=64)
    headers = models.JSONField(default=dict)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["id"], name="outbox_unpublished", condition=Q(published_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.topic} {self.event_type} {self.key}"


USAGE_SHARDS = 8


class UsageDaily(models.Model):
    """What a project's generations used, per day (UTC) and model: kept as each result is stored, in the
    same transaction, so ``GET /v1/usage`` and the daily budget read a few rows, not every lifecycle."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="usage")
    day = models.DateField()
    model = models.CharField(max_length=200)
    # Each writing process adds to its own row (its pid modulo USAGE_SHARDS), so generators committing
    # results at once do not queue on one row lock; reads sum the shards.
    shard = models.PositiveSmallIntegerField(default=0)
    requests = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8, default=0)

    class Meta:
        ordering = ["day", "model"]
        constraints = [models.UniqueConstraint(fields=["project", "day", "model", "shard"], name="usage_daily_unique")]

    def __str__(self) -> str:
        return f"{self.project_id} {self.day} {self.model}"
