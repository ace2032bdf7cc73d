from __future__ import annotations

import re

import jsonschema
import orjson
from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from lifecycle import delivery as delivery_routing
from lifecycle import following
from lifecycle.models import JwtIssuer, Lifecycle, TimelineEvent
from lifecycle.providers import PROVIDERS
from lifecycle.services import LifecycleRequest
from lifecycle.states import friendly_error
from orchestrator.fields import StrictCharField, StrictUUIDField

MAX_METADATA_BYTES = 16 * 1024
MAX_FALLBACKS = 5
ROLES = ("system", "user", "assistant", "tool", "developer")


def _json_size(value) -> int:
    return len(orjson.dumps(value))


# `provider/model`, no whitespace: the same rule for the schema (ECMA regex) and the server (fullmatch).
MODEL_PATTERN = rf"({'|'.join(sorted(PROVIDERS))})/\S+"


@extend_schema_field(
    {
        "type": "string",
        "maxLength": 200,
        "pattern": f"^{MODEL_PATTERN}$",
        "description": "`provider/model`, e.g. `openai/gpt-4o-mini`; providers: " + ", ".join(sorted(PROVIDERS)),
    }
)
class ModelField(StrictCharField):
    def __init__(self, **kwargs) -> None:
        super().__init__(max_length=200, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not re.fullmatch(MODEL_PATTERN, value):
            raise serializers.ValidationError(
                f"Expected 'provider/model' with a provider among {', '.join(sorted(PROVIDERS))}."
            )
        return value


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "array", "items": {}}]})
class MessageContentField(serializers.JSONField):
    """A string, or a list of content parts (passed to the provider as they are)."""


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)
    content = MessageContentField()

    def validate_content(self, value):
        if not isinstance(value, str | list):
            raise serializers.ValidationError("Must be a string or a list of content parts.")
        return value


class ResponseFormatSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=("text", "json_schema", "json_object"))
    json_schema = serializers.DictField(required=False)

    def validate(self, attrs):
        if attrs["type"] == "json_schema":
            spec = attrs.get("json_schema")
            if not spec:
                raise serializers.ValidationError({"json_schema": "Required when type is json_schema."})
            schema = spec.get("schema", spec)
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise serializers.ValidationError({"json_schema": f"Not a valid JSON schema: {exc.message}"}) from exc
        return attrs


class DeliveryRequestSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=delivery_routing.MODES, required=False)
    endpoint_id = StrictUUIDField(required=False)
    callback_timeout_s = serializers.IntegerField(min_value=1, max_value=7 * 24 * 3600, required=False)


class SubscriberSerializer(serializers.Serializer):
    user_id = StrictCharField(min_length=1, max_length=200)
    tier = StrictCharField(min_length=1, max_length=50, required=False)


class LifecycleCreateSerializer(serializers.Serializer):
    model = ModelField()
    messages = MessageSerializer(many=True, required=False, allow_empty=False, max_length=1000)
    prompt = StrictCharField(required=False, min_length=1, max_length=settings.MAX_REQUEST_BYTES)
    params = serializers.DictField(required=False, default=dict)
    response_format = ResponseFormatSerializer(required=False, allow_null=True, default=None)
    fallbacks = serializers.ListField(child=ModelField(), required=False, default=list, max_length=MAX_FALLBACKS)
    delivery = DeliveryRequestSerializer(required=False, default=dict)
    metadata = serializers.DictField(required=False, default=dict)
    subscriber = SubscriberSerializer(required=False, default=dict)

    def validate_params(self, value):
        latency = value.get("latency_ms", 0)
        if not isinstance(latency, int | float) or isinstance(latency, bool) or not 0 <= latency <= 600_000:
            raise serializers.ValidationError({"latency_ms": "Must be a number of milliseconds, 0 to 600000."})
        if not isinstance(value.get("stream", False), bool):
            raise serializers.ValidationError({"stream": "Must be true or false."})
        return value

    def validate_metadata(self, value):
        if _json_size(value) > MAX_METADATA_BYTES:
            raise serializers.ValidationError(f"Must encode to at most {MAX_METADATA_BYTES} bytes of JSON.")
        return value

    def validate(self, attrs):
        has_messages, has_prompt = "messages" in attrs, "prompt" in attrs
        if has_messages == has_prompt:
            raise serializers.ValidationError("Give exactly one of messages or prompt.")
        requested = {k: str(v) if k == "endpoint_id" else v for k, v in attrs["delivery"].items()}
        try:
            attrs["delivery"] = delivery_routing.resolve(project=self.context["project"], requested=requested)
        except delivery_routing.DeliveryConfigError as exc:
            raise serializers.ValidationError({"delivery": str(exc)}) from exc
        return attrs

    def to_request(self) -> LifecycleRequest:
        data = self.validated_data
        messages = data.get("messages") or [{"role": "user", "content": data["prompt"]}]
        subscriber = dict(data["subscriber"])
        return LifecycleRequest(
            model=data["model"],
            messages=[dict(m) for m in messages],
            params=dict(data["params"]),
            response_format=dict(data["response_format"]) if data["response_format"] else None,
            fallbacks=list(data["fallbacks"]),
            delivery=data["delivery"],
            metadata=dict(data["metadata"]),
            subscriber=subscriber,
        )


class LifecycleSerializer(serializers.ModelSerializer):
    links = serializers.SerializerMethodField()

    class Meta:
        model = Lifecycle
        fields = [
            "id",
            "status",
            "model",
            "model_used",
            "messages",
            "params",
            "response_format",
            "fallbacks",
            "delivery",
            "metadata",
            "subscriber",
            "output",
            "result",
            "error",
            "usage",
            "replay_of",
            "created_at",
            "updated_at",
            "generating_at",
            "delivering_at",
            "awaiting_callback_at",
            "finished_at",
            "links",
        ]

    def get_links(self, lifecycle: Lifecycle) -> dict[str, str]:
        return lifecycle_links(lifecycle)


class SubscriberLifecycleSerializer(LifecycleSerializer):
    """A lifecycle as its own user sees it (a JWT caller): what it asked and got, and a friendly error;
    not the delivery settings, params or an error's internal details, which are the project's."""

    error = serializers.SerializerMethodField()

    class Meta(LifecycleSerializer.Meta):
        fields = [
            "id",
            "status",
            "model",
            "model_used",
            "messages",
            "response_format",
            "metadata",
            "subscriber",
            "output",
            "result",
            "error",
            "usage",
            "created_at",
            "updated_at",
            "finished_at",
            "links",
        ]

    def get_error(self, lifecycle: Lifecycle) -> dict | None:
        return friendly_error(lifecycle.error) if lifecycle.error else None


def lifecycle_links(lifecycle: Lifecycle) -> dict[str, str]:
    base = settings.PUBLIC_BASE_URL
    return {
        "self": f"{base}/v1/lifecycles/{lifecycle.id}",
        "timeline": f"{base}/v1/lifecycles/{lifecycle.id}/timeline",
    } | following.links(lifecycle)


class LifecyclePageSerializer(serializers.Serializer):
    """A page of ``GET /v1/lifecycles`` (cursor pagination, newest first)."""

    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = LifecycleSerializer(many=True)


class LifecycleAcceptedSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    ws_token = serializers.CharField(allow_null=True)
    links = serializers.DictField(child=serializers.CharField())


class TimelineEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = TimelineEvent
        fields = ["seq", "event", "at", "duration_ms", "payload"]


ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-]+(:\d{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
MAX_ORIGINS = 50


class JwtIssuerSerializer(serializers.ModelSerializer):
    """An identity provider of the project. ``secret`` (HS256) is write-only: only ``has_secret`` is shown."""

    issuer = StrictCharField(min_length=1, max_length=500)
    audience = StrictCharField(min_length=1, max_length=500)
    jwks_url = serializers.URLField(max_length=2000, required=False, allow_blank=True)
    secret = StrictCharField(min_length=32, max_length=500, required=False, write_only=True)
    user_claim = StrictCharField(min_length=1, max_length=100, required=False)
    tier_claim = StrictCharField(min_length=1, max_length=100, required=False)
    allowed_origins = serializers.ListField(
        child=StrictCharField(max_length=300), required=False, max_length=MAX_ORIGINS
    )
    rate_limit_per_user_s = serializers.IntegerField(min_value=1, max_value=100_000, required=False, allow_null=True)
    has_secret = serializers.SerializerMethodField()

    class Meta:
        model = JwtIssuer
        fields = [
            "id",
            "issuer",
            "audience",
            "jwks_url",
            "secret",
            "has_secret",
            "user_claim",
            "tier_claim",
            "allowed_origins",
            "rate_limit_per_user_s",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        validators = []  # an issuer and audience already taken is a 409 (the service says so), not a 400

    def get_has_secret(self, issuer: JwtIssuer) -> bool:
        return bool(issuer.secret)

    def validate_jwks_url(self, value: str) -> str:
        if value and not value.startswith(("https://", "http://")):
            raise serializers.ValidationError("Must be an http(s) URL.")
        return value

    def validate_allowed_origins(self, value: list[str]) -> list[str]:
        for origin in value:
            if not ORIGIN.fullmatch(origin):
                raise serializers.ValidationError(f"Not an origin (scheme://host[:port], no path): {origin[:100]}")
        return list(dict.fromkeys(value))

    def validate(self, attrs):
        # One kind of key at a time: setting one replaces the other (lifecycle.services.jwt_issuer_update).
        keyed = self.instance is None or "jwks_url" in attrs or "secret" in attrs
        if keyed and bool(attrs.get("jwks_url")) == bool(attrs.get("secret")):
            raise serializers.ValidationError("Give exactly one of jwks_url (RS256, ES256, ...) or secret (HS256).")
        return attrs


def _usd(**kwargs) -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=20, decimal_places=8, coerce_to_string=False, **kwargs)


class UsageRowSerializer(serializers.Serializer):
    date = serializers.DateField(source="day")
    model = serializers.CharField()
    requests = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cost_usd = _usd()


class UsageTotalSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cost_usd = _usd()


class BudgetSerializer(serializers.Serializer):
    daily_usd = _usd(allow_null=True)
    spent_today_usd = _usd(allow_null=True, help_text="Today's spend (UTC), when the range includes today.")


class UsagePageSerializer(serializers.Serializer):
    data = UsageRowSerializer(many=True)
    total = UsageTotalSerializer()
    budget = BudgetSerializer()

    def to_representation(self, instance):
        # ``from`` is a keyword: the range's bounds are added by hand.
        return {"from": str(instance["from"]), "to": str(instance["to"]), **super().to_representation(instance)}
