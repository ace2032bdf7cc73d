"""Thin views over the webhooks services."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from lifecycle import selectors as lifecycle_selectors
from orchestrator import telemetry
from orchestrator.errors import Conflict, error_body
from orchestrator.openapi import results_of
from orchestrator.parsers import StrictJSONParser
from webhooks import callbacks, services
from webhooks.api.serializers import (
    CallbackResultSerializer,
    CallbackSerializer,
    DeliverySerializer,
    EndpointSerializer,
    EndpointWithSecretSerializer,
    EndpointWriteSerializer,
    RecoveredSerializer,
    RecoverSerializer,
    RotateSecretSerializer,
)
from webhooks.models import Delivery, WebhookEndpoint


def _endpoint_or_404(request: Request, endpoint_id) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.filter(project=request.auth.project, id=endpoint_id).first()
    if endpoint is None:
        raise exceptions.NotFound("No such webhook endpoint.")
    return endpoint


def _invalid(exc: Exception) -> exceptions.ValidationError:
    return exceptions.ValidationError({"url": [str(exc)]})


class EndpointListCreateView(APIView):
    @extend_schema(operation_id="webhook_endpoints_list", responses=results_of(EndpointSerializer, "EndpointList"))
    def get(self, request: Request) -> Response:
        endpoints = WebhookEndpoint.objects.filter(project=request.auth.project)
        return Response({"results": EndpointSerializer(endpoints, many=True).data})

    @extend_schema(request=EndpointWriteSerializer, responses={201: EndpointWithSecretSerializer})
    def post(self, request: Request) -> Response:
        serializer = EndpointWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            endpoint = services.endpoint_create(
                project=request.auth.project,
                url=data["url"],
                description=data.get("description", ""),
                event_types=data.get("event_types"),
            )
        except services.EndpointInvalid as exc:
            raise _invalid(exc) from exc
        return Response(EndpointWithSecretSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class EndpointDetailView(APIView):
    @extend_schema(responses=EndpointSerializer)
    def get(self, request: Request, endpoint_id) -> Response:
        return Response(EndpointSerializer(_endpoint_or_404(request, endpoint_id)).data)

    @extend_schema(request=EndpointWriteSerializer, responses=EndpointSerializer)
    def patch(self, request: Request, endpoint_id) -> Response:
        endpoint = _endpoint_or_404(request, endpoint_id)
        serializer = EndpointWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        try:
            endpoint = services.endpoint_update(endpoint=endpoint, **serializer.validated_data)
        except services.EndpointInvalid as exc:
            raise _invalid(exc) from exc
        return Response(EndpointSerializer(endpoint).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, endpoint_id) -> Response:
        services.endpoint_delete(endpoint=_endpoint_or_404(request, endpoint_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class EndpointRotateSecretView(APIView):
    @extend_schema(request=RotateSecretSerializer, responses=EndpointWithSecretSerializer)
    def post(self, request: Request, endpoint_id) -> Response:
        endpoint = _endpoint_or_404(request, endpoint_id)
        serializer = RotateSecretSerializer(data=request.data or {})
        serializer.is_valid(raise_exception=True)
        endpoint = services.endpoint_rotate_secret(endpoint=endpoint, grace_s=serializer.validated_data.get("grace_s"))
        return Response(EndpointWithSecretSerializer(endpoint).data)


class EndpointRecoverView(APIView):
    @extend_schema(request=RecoverSerializer, responses={202: RecoveredSerializer})
    def post(self, request: Request, endpoint_id) -> Response:
        endpoint = _endpoint_or_404(request, endpoint_id)
        serializer = RecoverSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            recovered = services.endpoint_recover(endpoint=endpoint, since=serializer.validated_data["since"])
        except services.EndpointDisabled as exc:
            raise Conflict("The endpoint is disabled: enable it (PATCH enabled: true), then recover.") from exc
        return Response({"recovered": recovered}, status=status.HTTP_202_ACCEPTED)


class LifecycleDeliveriesView(APIView):
    @extend_schema(responses=results_of(DeliverySerializer, "DeliveryList"))
    def get(self, request: Request, lifecycle_id) -> Response:
        lifecycle = lifecycle_selectors.lifecycle_get(project=request.auth.project, lifecycle_id=lifecycle_id)
        if lifecycle is None:
            raise exceptions.NotFound("No such lifecycle.")
        deliveries = Delivery.objects.filter(lifecycle=lifecycle).prefetch_related("attempts")
        return Response({"results": DeliverySerializer(deliveries, many=True).data})


class DeliveryResendView(APIView):
    @extend_schema(request=None, responses={202: DeliverySerializer})
    def post(self, request: Request, delivery_id) -> Response:
        delivery = Delivery.objects.filter(endpoint__project=request.auth.project, id=delivery_id).first()
        if delivery is None:
            raise exceptions.NotFound("No such delivery.")
        delivery = services.delivery_resend(delivery=delivery)
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class CallbackView(APIView):
    """Authenticated by the callback token from the webhook, not by an API key."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes = [StrictJSONParser]

    @extend_schema(
        request=CallbackSerializer,
        responses={200: CallbackResultSerializer},
        parameters=[OpenApiParameter("Authorization", str, OpenApiParameter.HEADER, description="Bearer <token>")],
    )
    def post(self, request: Request, lifecycle_id) -> Response:
        if int(request.META.get("CONTENT_LENGTH") or 0) > callbacks.MAX_CALLBACK_BYTES:
            return Response(
                error_body("payload_too_large", f"Callbacks are limited to {callbacks.MAX_CALLBACK_BYTES} bytes."),
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            if scheme != "Bearer" or not token:
                raise callbacks.InvalidToken("Send the callback token as 'Authorization: Bearer <token>'.")
            # The backend sends back the webhook's traceparent (docs/webhooks.md), continuing the trace.
            with telemetry.span("lifecycle.callback", parent=request.headers.get("traceparent")):
                lifecycle, applied = callbacks.callback_accept(
                    lifecycle_id=str(lifecycle_id), token=token.strip(), body=request.data
                )
        except callbacks.CallbackRejected as exc:
            return Response(error_body(exc.code, str(exc)), status=exc.status_code)
        return Response({"lifecycle_id": str(lifecycle.id), "status": lifecycle.status, "applied": applied})
