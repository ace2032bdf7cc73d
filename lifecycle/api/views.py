"""Thin views: validate with a serializer, call one service or selector, shape the answer."""

from __future__ import annotations

import dataclasses
import re
from datetime import date, timedelta
from decimal import Decimal

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, generics, serializers, status
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from lifecycle import following, selectors, services
from lifecycle.api.serializers import (
    JwtIssuerSerializer,
    LifecycleAcceptedSerializer,
    LifecycleCreateSerializer,
    LifecyclePageSerializer,
    LifecycleSerializer,
    SubscriberLifecycleSerializer,
    TimelineEventSerializer,
    UsagePageSerializer,
    lifecycle_links,
)
from lifecycle.auth import IsProjectMemberOrSubscriber, subscriber_of
from lifecycle.models import JwtIssuer, Lifecycle
from lifecycle.states import Status
from orchestrator import metrics, telemetry
from orchestrator.errors import BudgetExceeded, Conflict
from orchestrator.openapi import results_of

MAX_IDEMPOTENCY_KEY = 255
_METADATA_FILTER = re.compile(r"^metadata\[([A-Za-z0-9_\-]{1,64})\]$")


class LifecyclePagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            raise exceptions.ValidationError({"limit": f"An integer from 1 to {self.max_page_size}."})
        return int(raw)

    def decode_cursor(self, request: Request):
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound as exc:  # DRF's answer to a mangled cursor: it is the request that is bad
            message = "Not a cursor from this API; use `next` or `previous`."
            raise exceptions.ValidationError({"cursor": message}) from exc


def _accepted(lifecycle: Lifecycle, request: Request) -> dict:
    """The ``202`` body (:class:`LifecycleAcceptedSerializer` documents it). JSONRenderer writes its UUID and
    datetime as that serializer would, so the body goes out as it is, without a serializer's ~0.1 ms."""
    return {
        "id": lifecycle.id,
        "status": lifecycle.status,
        "created_at": lifecycle.created_at,
        "ws_token": following.token(lifecycle, key_id=request.auth.pk),
        "links": lifecycle_links(lifecycle),
    }


def _user_id(request: Request) -> str | None:
    """A JWT caller's user: what it reads is only its own."""
    caller = subscriber_of(request)
    return caller.user_id if caller else None


def _shown(request: Request, lifecycle: Lifecycle) -> dict:
    """The lifecycle as this caller may see it: all of it for the project, a user's view for a JWT caller."""
    serializer = SubscriberLifecycleSerializer if subscriber_of(request) else LifecycleSerializer
    return serializer(lifecycle).data


def _lifecycle_or_404(request: Request, lifecycle_id) -> Lifecycle:
    lifecycle = selectors.lifecycle_get(
        project=request.auth.project, lifecycle_id=lifecycle_id, user_id=_user_id(request)
    )
    if lifecycle is None:
        raise exceptions.NotFound("No such lifecycle.")
    return lifecycle


def _parse_time(request: Request, name: str):
    raw = request.query_params.get(name)
    if raw is None:
        return None
    value = parse_datetime(raw)
    if value is None:
        raise exceptions.ValidationError({name: "Must be an ISO 8601 date-time."})
    return value


class LifecycleListCreateView(generics.GenericAPIView):
    pagination_class = LifecyclePagination
    serializer_class = LifecycleSerializer
    permission_classes = [IsProjectMemberOrSubscriber]

    @extend_schema(
        request=LifecycleCreateSerializer,
        responses={202: LifecycleAcceptedSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False)],
    )
    def post(self, request: Request) -> Response:
        serializer = LifecycleCreateSerializer(data=request.data, context={"project": request.auth.project})
        serializer.is_valid(raise_exception=True)
        idempotency_key = request.headers.get("Idempotency-Key") or None
        if idempotency_key and len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise exceptions.ValidationError({"Idempotency-Key": f"At most {MAX_IDEMPOTENCY_KEY} characters."})
        try:
            asked = serializer.to_request()
            if caller := subscriber_of(request):  # who the subscriber is comes from its token, not the body
                asked = dataclasses.replace(asked, subscriber=caller.identity)
            with telemetry.span("lifecycle.accept", parent=request.headers.get("traceparent")) as traceparent:
                lifecycle, created = services.lifecycle_create(
                    project=request.auth.project,
                    request=asked,
                    idempotency_key=idempotency_key,
                    traceparent=traceparent,
                )
        except services.IdempotencyConflict as exc:
            raise Conflict("This Idempotency-Key was already used with a different request body.") from exc
        except services.BudgetExceeded as exc:
            raise BudgetExceeded(str(exc), wait=exc.retry_after_s) from exc
        if created:
            metrics.ACCEPTED.inc()
        return Response(_accepted(lifecycle, request), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="lifecycles_list",
        parameters=[
            OpenApiParameter("status", str, enum=list(Status.values)),
            OpenApiParameter("created_after", OpenApiTypes.DATETIME),
            OpenApiParameter("created_before", OpenApiTypes.DATETIME),
            OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": LifecyclePagination.max_page_size}),
            OpenApiParameter("cursor", str, description="From `next` or `previous` of the last page."),
        ],
        responses=LifecyclePageSerializer,
    )
    def get(self, request: Request) -> Response:
        status_filter = request.query_params.get("status")
        if status_filter and status_filter not in Status.values:
            raise exceptions.ValidationError({"status": f"One of {', '.join(Status.values)}."})
        metadata = {}
        for name, value in request.query_params.items():
            match = _METADATA_FILTER.match(name)
            if match:
                metadata[match.group(1)] = value
        queryset = selectors.lifecycle_list(
            project=request.auth.project,
            status=status_filter,
            metadata=metadata,
            created_after=_parse_time(request, "created_after"),
            created_before=_parse_time(request, "created_before"),
            user_id=_user_id(request),
        )
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response([_shown(request, lifecycle) for lifecycle in page])


class LifecycleDetailView(APIView):
    permission_classes = [IsProjectMemberOrSubscriber]

    @extend_schema(responses=LifecycleSerializer)
    def get(self, request: Request, lifecycle_id) -> Response:
        return Response(_shown(request, _lifecycle_or_404(request, lifecycle_id)))


class TimelineResponseSerializer(serializers.Serializer):
    lifecycle_id = serializers.UUIDField()
    status = serializers.CharField()
    events = TimelineEventSerializer(many=True)


class LifecycleTimelineView(APIView):
    @extend_schema(responses=TimelineResponseSerializer)
    def get(self, request: Request, lifecycle_id) -> Response:
        lifecycle = _lifecycle_or_404(request, lifecycle_id)
        events = selectors.timeline(lifecycle=lifecycle)
        return Response(
            {
                "lifecycle_id": str(lifecycle.id),
                "status": lifecycle.status,
                "events": TimelineEventSerializer(events, many=True).data,
            }
        )


class LifecycleCancelView(APIView):
    permission_classes = [IsProjectMemberOrSubscriber]

    @extend_schema(request=None, responses=LifecycleSerializer)
    def post(self, request: Request, lifecycle_id) -> Response:
        lifecycle = _lifecycle_or_404(request, lifecycle_id)
        cancelled = services.lifecycle_cancel(lifecycle=lifecycle)
        if cancelled is None:
            lifecycle.refresh_from_db()
            if lifecycle.status != Status.CANCELLED:
                raise Conflict(f"The lifecycle is already {lifecycle.status}.")
            cancelled = lifecycle
        return Response(_shown(request, cancelled))


class LifecycleReplayView(APIView):
    @extend_schema(request=None, responses={202: LifecycleAcceptedSerializer})
    def post(self, request: Request, lifecycle_id) -> Response:
        original = _lifecycle_or_404(request, lifecycle_id)
        replay = services.lifecycle_replay(lifecycle=original, traceparent=request.headers.get("traceparent"))
        return Response(_accepted(replay, request), status=status.HTTP_202_ACCEPTED)


def _issuer_or_404(request: Request, issuer_id) -> JwtIssuer:
    issuer = JwtIssuer.objects.filter(project=request.auth.project, id=issuer_id).first()
    if issuer is None:
        raise exceptions.NotFound("No such JWT issuer.")
    return issuer


_ISSUER_TAKEN = "This issuer is already registered with this audience."


class JwtIssuerListCreateView(APIView):
    @extend_schema(operation_id="jwt_issuers_list", responses=results_of(JwtIssuerSerializer, "JwtIssuerList"))
    def get(self, request: Request) -> Response:
        issuers = JwtIssuer.objects.filter(project=request.auth.project)
        return Response({"results": JwtIssuerSerializer(issuers, many=True).data})

    @extend_schema(request=JwtIssuerSerializer, responses={201: JwtIssuerSerializer})
    def post(self, request: Request) -> Response:
        serializer = JwtIssuerSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            issuer = services.jwt_issuer_create(project=request.auth.project, **serializer.validated_data)
        except services.JwtIssuerConflict as exc:
            raise Conflict(_ISSUER_TAKEN) from exc
        return Response(JwtIssuerSerializer(issuer).data, status=status.HTTP_201_CREATED)


class JwtIssuerDetailView(APIView):
    @extend_schema(responses=JwtIssuerSerializer)
    def get(self, request: Request, issuer_id) -> Response:
        return Response(JwtIssuerSerializer(_issuer_or_404(request, issuer_id)).data)

    @extend_schema(request=JwtIssuerSerializer, responses=JwtIssuerSerializer)
    def patch(self, request: Request, issuer_id) -> Response:
        issuer = _issuer_or_404(request, issuer_id)
        serializer = JwtIssuerSerializer(issuer, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        try:
            issuer = services.jwt_issuer_update(jwt_issuer=issuer, **serializer.validated_data)
        except services.JwtIssuerConflict as exc:
            raise Conflict(_ISSUER_TAKEN) from exc
        return Response(JwtIssuerSerializer(issuer).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, issuer_id) -> Response:
        services.jwt_issuer_delete(jwt_issuer=_issuer_or_404(request, issuer_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


MAX_USAGE_DAYS = 366


def _parse_day(request: Request, name: str, default: date) -> date:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise exceptions.ValidationError({name: "Must be a date, YYYY-MM-DD (UTC)."}) from exc


class UsageView(APIView):
    """What the project's generations used and cost, per day (UTC) and model. For the project's own
    backend (its API key): a JWT caller sees no project's spend."""

    @extend_schema(
        operation_id="usage_list",
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATE, description="First day, inclusive (default: 30 days ago)."),
            OpenApiParameter("to", OpenApiTypes.DATE, description="Last day, inclusive (default: today)."),
        ],
        responses=UsagePageSerializer,
    )
    def get(self, request: Request) -> Response:
        today = timezone.now().date()
        until = _parse_day(request, "to", today)
        month = timedelta(days=29)
        since = _parse_day(request, "from", until - month if until > date.min + month else date.min)
        if since > until:
            raise exceptions.ValidationError({"from": "Must not be after `to`."})
        if (until - since).days >= MAX_USAGE_DAYS:
            raise exceptions.ValidationError({"from": f"At most {MAX_USAGE_DAYS} days at a time."})
        project = request.auth.project
        rows = selectors.usage_by_day(project=project, since=since, until=until)
        spent_today = sum((row["cost_usd"] for row in rows if row["day"] == today), Decimal(0))
        page = {
            "from": since,
            "to": until,
            "data": rows,
            "total": {
                name: sum((row[name] for row in rows), Decimal(0) if name == "cost_usd" else 0)
                for name in ("requests", "input_tokens", "output_tokens", "cost_usd")
            },
            "budget": {
                "daily_usd": project.daily_budget_usd,
                "spent_today_usd": spent_today if since <= today <= until else None,
            },
        }
        return Response(UsagePageSerializer(page).data)
