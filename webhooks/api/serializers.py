from __future__ import annotations

from django.utils import timezone
from rest_framework import serializers

from orchestrator.fields import StrictBooleanField, StrictCharField
from webhooks.models import Delivery, DeliveryAttempt, WebhookEndpoint
from webhooks.services import EVENT_TYPES


class EndpointWriteSerializer(serializers.Serializer):
    url = serializers.URLField(max_length=2000)
    description = StrictCharField(max_length=500, required=False, allow_blank=True)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_TYPES), required=False, max_length=len(EVENT_TYPES)
    )
    enabled = StrictBooleanField(required=False)


class EndpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "event_types",
            "enabled",
            "disabled_reason",
            "disabled_at",
            "failing_since",
            "created_at",
            "updated_at",
        ]


class EndpointWithSecretSerializer(EndpointSerializer):
    """Only on create and rotation: the secret is not shown again."""

    class Meta(EndpointSerializer.Meta):
        fields = [*EndpointSerializer.Meta.fields, "secret"]


class RotateSecretSerializer(serializers.Serializer):
    grace_s = serializers.IntegerField(min_value=0, max_value=7 * 24 * 3600, required=False)


class RecoverSerializer(serializers.Serializer):
    since = serializers.DateTimeField(help_text="Send again what failed for good since then.")

    def validate_since(self, value):
        if value > timezone.now():
            raise serializers.ValidationError("Must not be in the future.")
        return value


class RecoveredSerializer(serializers.Serializer):
    recovered = serializers.IntegerField(help_text="Deliveries queued again.")


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = ["number", "started_at", "latency_ms", "outcome", "status_code", "response_excerpt", "error"]


class DeliverySerializer(serializers.ModelSerializer):
    attempts = AttemptSerializer(many=True, read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id",
            "lifecycle",
            "endpoint",
            "event_type",
            "webhook_id",
            "status",
            "attempt_count",
            "next_attempt_at",
            "last_error",
            "created_at",
            "delivered_at",
            "attempts",
        ]


class CallbackErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.JSONField(required=False)


class CallbackSerializer(serializers.Serializer):
    """Documentation only: the body is checked against ``webhooks.callbacks.CALLBACK_SCHEMA``."""

    data = serializers.JSONField(required=False)
    error = CallbackErrorSerializer(required=False)


class CallbackResultSerializer(serializers.Serializer):
    lifecycle_id = serializers.UUIDField()
    status = serializers.CharField()
    applied = serializers.BooleanField()
