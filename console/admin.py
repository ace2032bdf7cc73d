"""The operators' view: lifecycles with their timeline drawn step by step, deliveries with every attempt,
and the actions operators need (cancel, replay, resend, revoke)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Prefetch, TextField
from django.db.models.functions import Cast
from django.shortcuts import get_object_or_404, redirect
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html

from console import endpoint_health, waterfall
from lifecycle import services
from lifecycle.models import ApiKey, JwtIssuer, Lifecycle, Project, TimelineEvent
from lifecycle.states import TERMINAL, ErrorCode, Status
from webhooks import services as webhook_services
from webhooks.models import Delivery, DeliveryAttempt, WebhookEndpoint
from webhooks.selectors import deliveries_with_attempts

admin.site.site_header = "AI lifecycle orchestrator · operations"
admin.site.site_title = "Lifecycle operations"
admin.site.index_title = "Operations console"
admin.site.index_template = "admin/console/index.html"

STATUS_COLOURS = {
    Status.PENDING: "#6b7385",
    Status.GENERATING: "#2f5bd3",
    Status.DELIVERING: "#7a4cc2",
    Status.AWAITING_CALLBACK: "#b7791f",
    Status.COMPLETED: "#14804a",
    Status.FAILED: "#c0362c",
    Status.CANCELLED: "#8a5a44",
}


def status_badge(status: str):
    colour = STATUS_COLOURS.get(status, "#6b7385")
    return format_html(
        '<span style="display:inline-block;padding:1px 9px;border-radius:99px;font-weight:600;font-size:11px;'
        'color:#fff;background:{}">{}</span>',
        colour,
        status,
    )


def changing(model_admin: admin.ModelAdmin, request, model, pk):
    """The object a page's action works on (cancel, replay, resend, recover, enable): a POST, by someone with
    change permission, not only view, since it changes what happens to a customer's work."""
    if request.method != "POST" or not model_admin.has_change_permission(request):
        raise PermissionDenied
    return get_object_or_404(model, pk=pk)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "id",
        "lifecycle_count",
        "rate_limit_per_s",
        "max_generations_in_flight",
        "daily_budget_usd",
        "created_at",
    ]
    search_fields = ["name", "id"]
    readonly_fields = ["id", "created_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(lifecycle_count=Count("lifecycles"))

    @admin.display(ordering="lifecycle_count", description="lifecycles")
    def lifecycle_count(self, project: Project) -> int:
        return project.lifecycle_count


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "project", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["project"]
    list_select_related = ["project"]
    readonly_fields = ["project", "prefix", "key_hash", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False  # keys are created with `manage.py createproject` / the API, shown once

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset) -> None:
        for key in queryset:
            services.api_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


@admin.register(JwtIssuer)
class JwtIssuerAdmin(admin.ModelAdmin):
    list_display = ["issuer", "audience", "project", "jwks_url", "rate_limit_per_user_s", "created_at"]
    list_filter = ["project"]
    list_select_related = ["project"]
    search_fields = ["issuer", "audience", "id"]
    exclude = ["secret"]  # an HS256 secret is set through the API and never shown
    readonly_fields = ["id", "project", "created_at", "updated_at"]

    def has_add_permission(self, request) -> bool:
        return False  # registered with the project's API key (/v1/jwt-issuers), which checks it


class ErrorCodeFilter(admin.SimpleListFilter):
    title = "error code"
    parameter_name = "error_code"

    def lookups(self, request, model_admin):
        return ErrorCode.choices

    def queryset(self, request, queryset):
        return queryset.filter(error__code=self.value()) if self.value() else queryset


@admin.register(Lifecycle)
class LifecycleAdmin(admin.ModelAdmin):
    change_form_template = "admin/lifecycle/lifecycle/timeline.html"
    list_display = ["short_id", "status_label", "project", "model", "error_code", "created_at", "took"]
    list_filter = ["status", ErrorCodeFilter, "project", "model", "created_at"]
    list_select_related = ["project"]
    date_hierarchy = "created_at"
    search_fields = ["id"]
    search_help_text = "A lifecycle id, or text found in its metadata."
    actions = ["cancel", "replay"]
    list_per_page = 50
    fieldsets = [
        (None, {"fields": ["id", "project", "status", "model", "model_used", "replay_of"]}),
        (
            "Request",
            {"fields": ["messages", "params", "response_format", "fallbacks", "delivery", "metadata", "subscriber"]},
        ),
        ("Outcome", {"fields": ["output", "result", "error", "usage"]}),
        (
            "Steps",
            {
                "fields": [
                    "created_at",
                    "generating_at",
                    "delivering_at",
                    "awaiting_callback_at",
                    "finished_at",
                    "traceparent",
                ]
            },
        ),
    ]

    def has_add_permission(self, request) -> bool:
        return False  # lifecycles come in through the API

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None and super().has_change_permission(request)  # list actions yes, edits no

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # the timeline is the record; the retention sweep prunes it

    def get_readonly_fields(self, request, obj=None):
        return [f for fieldset in self.fieldsets for f in fieldset[1]["fields"]]

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(id=uuid.UUID(term)), False
        except ValueError:
            matches = queryset.annotate(metadata_text=Cast("metadata", TextField())).filter(
                metadata_text__icontains=term
            )
            return matches, False

    @admin.display(description="id", ordering="id")
    def short_id(self, lifecycle: Lifecycle) -> str:
        return str(lifecycle.id)[:8]

    @admin.display(description="status", ordering="status")
    def status_label(self, lifecycle: Lifecycle):
        return status_badge(lifecycle.status)

    @admin.display(description="error")
    def error_code(self, lifecycle: Lifecycle) -> str:
        return (lifecycle.error or {}).get("code", "")

    @admin.display(description="took")
    def took(self, lifecycle: Lifecycle) -> str:
        if not lifecycle.finished_at:
            return ""
        return f"{(lifecycle.finished_at - lifecycle.created_at).total_seconds() * 1000:.0f} ms"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        lifecycle = (
            Lifecycle.objects.select_related("project", "replay_of")
            .prefetch_related(
                Prefetch("events", queryset=TimelineEvent.objects.order_by("seq")),
                "replays",
            )
            .filter(pk=object_id)
            .first()
        )
        extra_context = {**(extra_context or {}), **timeline_context(lifecycle)} if lifecycle else extra_context
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        own = [
            path(
                "<uuid:lifecycle_id>/change/cancel/",
                self.admin_site.admin_view(self.cancel_one),
                name="lifecycle_cancel",
            ),
            path(
                "<uuid:lifecycle_id>/change/replay/",
                self.admin_site.admin_view(self.replay_one),
                name="lifecycle_replay",
            ),
            path(
                "<uuid:lifecycle_id>/change/delivery/<uuid:delivery_id>/resend/",
                self.admin_site.admin_view(self.resend_one),
                name="lifecycle_resend_delivery",
            ),
        ]
        return own + super().get_urls()

    def _lifecycle_for(self, request, lifecycle_id) -> Lifecycle:
        return changing(self, request, Lifecycle, lifecycle_id)

    def cancel_one(self, request, lifecycle_id):
        lifecycle = self._lifecycle_for(request, lifecycle_id)
        if services.lifecycle_cancel(lifecycle=lifecycle) is None:
            self.message_user(request, "It had already finished.", messages.WARNING)
        else:
            self.message_user(request, "Cancelled.")
        return redirect("admin:lifecycle_lifecycle_change", lifecycle.id)

    def replay_one(self, request, lifecycle_id):
        replay = services.lifecycle_replay(lifecycle=self._lifecycle_for(request, lifecycle_id))
        self.message_user(request, "Replay started: this is the new lifecycle.")
        return redirect("admin:lifecycle_lifecycle_change", replay.id)

    def resend_one(self, request, lifecycle_id, delivery_id):
        lifecycle = self._lifecycle_for(request, lifecycle_id)
        webhook_services.delivery_resend(delivery=get_object_or_404(Delivery, pk=delivery_id, lifecycle=lifecycle))
        self.message_user(request, "Delivery queued again.")
        return redirect("admin:lifecycle_lifecycle_change", lifecycle.id)

    @admin.action(description="Cancel the selected lifecycles", permissions=["change"])
    def cancel(self, request, queryset) -> None:
        cancelled = sum(1 for lifecycle in queryset if services.lifecycle_cancel(lifecycle=lifecycle) is not None)
        self.message_user(request, f"Cancelled {cancelled} lifecycle(s); finished ones were left as they were.")

    @admin.action(description="Replay the selected lifecycles", permissions=["change"])
    def replay(self, request, queryset) -> None:
        replays = [services.lifecycle_replay(lifecycle=lifecycle) for lifecycle in queryset.select_related("project")]
        self.message_user(request, f"Started {len(replays)} replay(s).", messages.SUCCESS)


def timeline_context(lifecycle: Lifecycle) -> dict:
    """The steps of a lifecycle as the timeline template draws them, with its deliveries and attempts."""
    events = list(lifecycle.events.all())
    steps, previous = [], lifecycle.created_at
    for event in events:
        payload = event.payload or {}
        outcome = payload.get("outcome")
        failed = event.event == "lifecycle.failed" or outcome in ("error", "failed", "refused", "aborted")
        steps.append(
            {
                "event": event,
                "since_previous_ms": (event.at - previous).total_seconds() * 1000,
                "state": "failed" if failed else "done" if event.event == "lifecycle.completed" else "step",
                "error": payload.get("error") if isinstance(payload.get("error"), dict) else None,
                "detail": payload,
                "detail_json": json.dumps(payload, default=str, ensure_ascii=False),
            }
        )
        previous = event.at
    return {
        "lifecycle": lifecycle,
        "status_badge": status_badge(lifecycle.status),
        "waterfall": waterfall.build(lifecycle, events),
        "steps": steps,
        "deliveries": deliveries_with_attempts(lifecycle=lifecycle),
        "replays": list(lifecycle.replays.all()),
        "is_live": lifecycle.status not in TERMINAL,
    }


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    change_form_template = "admin/console/endpoint.html"
    list_display = ["url", "project", "enabled", "disabled_reason", "failing_since", "created_at"]
    list_filter = ["enabled", "project"]
    list_select_related = ["project"]
    search_fields = ["url", "id"]
    exclude = ["secret", "previous_secret"]
    readonly_fields = ["id", "project", "failing_since", "disabled_at", "previous_secret_expires_at", "created_at"]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        endpoint = WebhookEndpoint.objects.filter(pk=object_id).first()
        if endpoint is not None:
            extra_context = {**(extra_context or {}), **endpoint_health.context(endpoint)}
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        own = [
            path(
                "<uuid:endpoint_id>/change/recover/",
                self.admin_site.admin_view(self.recover),
                name="webhooks_webhookendpoint_recover",
            ),
            path(
                "<uuid:endpoint_id>/change/enable/",
                self.admin_site.admin_view(self.enable),
                name="webhooks_webhookendpoint_enable",
            ),
            path(
                "<uuid:endpoint_id>/change/delivery/<uuid:delivery_id>/resend/",
                self.admin_site.admin_view(self.resend_one),
                name="webhooks_webhookendpoint_resend",
            ),
        ]
        return own + super().get_urls()

    def _endpoint_for(self, request, endpoint_id) -> WebhookEndpoint:
        return changing(self, request, WebhookEndpoint, endpoint_id)

    def recover(self, request, endpoint_id):
        endpoint = self._endpoint_for(request, endpoint_id)
        hours = request.POST.get("hours", "24")
        if not hours.isdigit() or not 1 <= int(hours) <= 24 * 30:
            self.message_user(request, "Recover: a number of hours from 1 to 720.", messages.ERROR)
        else:
            try:
                since = timezone.now() - timedelta(hours=int(hours))
                count = webhook_services.endpoint_recover(endpoint=endpoint, since=since)
                self.message_user(request, f"Sending {count} failed delivery(ies) of the last {hours} h again.")
            except webhook_services.EndpointDisabled:
                refused = "Enable the endpoint first: a disabled one receives nothing."
                self.message_user(request, refused, messages.ERROR)
        return redirect("admin:webhooks_webhookendpoint_change", endpoint.id)

    def enable(self, request, endpoint_id):
        endpoint = self._endpoint_for(request, endpoint_id)
        webhook_services.endpoint_update(endpoint=endpoint, enabled=True)
        self.message_user(request, "Enabled: deliveries to it resume.")
        return redirect("admin:webhooks_webhookendpoint_change", endpoint.id)

    def resend_one(self, request, endpoint_id, delivery_id):
        endpoint = self._endpoint_for(request, endpoint_id)
        webhook_services.delivery_resend(delivery=get_object_or_404(Delivery, pk=delivery_id, endpoint=endpoint))
        self.message_user(request, "Delivery queued again.")
        return redirect("admin:webhooks_webhookendpoint_change", endpoint.id)


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ["number", "started_at", "outcome", "status_code", "latency_ms", "error", "response_excerpt"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["webhook_id", "lifecycle_link", "endpoint", "status", "attempt_count", "next_attempt_at"]
    list_filter = ["status", "event_type"]
    list_select_related = ["endpoint", "lifecycle"]
    search_fields = ["webhook_id", "id", "lifecycle__id"]
    inlines = [AttemptInline]
    actions = ["resend"]
    exclude = ["payload"]
    readonly_fields = [
        "lifecycle", "endpoint", "event_type", "webhook_id", "status", "schedule", "attempt_count",
        "schedule_position", "next_attempt_at", "lease_expires_at", "last_error", "delivered_at",
    ]  # fmt: skip

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="lifecycle")
    def lifecycle_link(self, delivery: Delivery):
        if delivery.lifecycle_id is None:
            return f"({delivery.event_type})"  # an operational event
        return format_html(
            '<a href="../lifecycle/{}/change/">{}</a>', delivery.lifecycle_id, str(delivery.lifecycle_id)[:8]
        )

    @admin.action(description="Resend the selected deliveries", permissions=["change"])
    def resend(self, request, queryset) -> None:
        for delivery in queryset:
            webhook_services.delivery_resend(delivery=delivery)
        self.message_user(request, f"Queued {queryset.count()} delivery(ies) again.")
