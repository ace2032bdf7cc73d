from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from lifecycle.models import Lifecycle, Project
from orchestrator.crypto import EncryptedCharField


class WebhookEndpoint(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=500, blank=True, default="")
    # Signing needs the secret itself, so it is kept (never shown again after create/rotate). During a
    # rotation's grace period the previous secret signs too, so receivers can switch without a gap.
    secret = EncryptedCharField(max_length=500)  # encrypted at rest (orchestrator/crypto.py)
    previous_secret = EncryptedCharField(max_length=500, blank=True, default="")
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    # Event types this endpoint receives; empty means all.
    event_types = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True, default="")
    disabled_at = models.DateTimeField(null=True, blank=True)
    # Start of the current run of failed attempts; cleared by a success.
    failing_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["project", "enabled", "created_at"], name="endpoint_project_enabled")]

    def __str__(self) -> str:
        return self.url

    def receives(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # waiting for its next attempt (next_attempt_at)
    SENDING = "sending"  # a worker holds it until lease_expires_at
    SUCCEEDED = "succeeded"
    EXHAUSTED = "exhausted"  # every attempt of the schedule failed
    ABORTED = "aborted"  # the receiver answered webhook-delivery: abort-message
    CANCELLED = "cancelled"  # the lifecycle ended before the webhook was delivered


class Delivery(models.Model):
    """One webhook message to one endpoint, retried on the schedule stored with it until delivered. A
    lifecycle's result (``lifecycle.generated``), or an operational event about the project's endpoints
    (``endpoint.disabled``, ``message.attempt.exhausted``), which belongs to no lifecycle."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    lifecycle = models.ForeignKey(Lifecycle, on_delete=models.CASCADE, related_name="deliveries", null=True, blank=True)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_type = models.CharField(max_length=64)
    webhook_id = models.CharField(max_length=64, unique=True)  # the webhook-id header, stable across retries
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    schedule = models.JSONField()  # seconds to wait before attempts 2, 3, ...
    attempt_count = models.PositiveIntegerField(default=0)  # attempts made, all series included
    schedule_position = models.PositiveIntegerField(default=0)  # retries used of the current series
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=1000, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["next_attempt_at"], name="delivery_due", condition=Q(status="pending")),
            models.Index(fields=["lease_expires_at"], name="delivery_sending", condition=Q(status="sending")),
        ]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"{self.webhook_id} → {self.endpoint_id} ({self.status})"


class DeliveryAttempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    latency_ms = models.FloatField()
    outcome = models.CharField(max_length=16)  # succeeded, failed, aborted, refused (SSRF)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    response_excerpt = models.CharField(max_length=1000, blank=True, default="")
    error = models.CharField(max_length=1000, blank=True, default="")

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="attempt_unique_number")]

    def __str__(self) -> str:
        return f"{self.delivery_id} #{self.number} {self.outcome}"


class Callback(models.Model):
    """The backend's answer. One per lifecycle: the first callback wins."""

    lifecycle = models.OneToOneField(Lifecycle, on_delete=models.CASCADE, related_name="callback")
    body = models.JSONField()
    body_hash = models.CharField(max_length=64)
    received_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"callback for {self.lifecycle_id}"
