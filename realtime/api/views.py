from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from lifecycle import selectors
from lifecycle.auth import IsProjectMemberOrSubscriber, subscriber_of
from orchestrator.fields import StrictCharField, StrictUUIDField
from realtime import tokens


class TokenRequestSerializer(serializers.Serializer):
    lifecycle_id = StrictUUIDField(required=False)
    user_id = StrictCharField(min_length=1, max_length=200, required=False)

    def validate(self, attrs):
        if ("lifecycle_id" in attrs) == ("user_id" in attrs):
            raise serializers.ValidationError("Give exactly one of lifecycle_id or user_id.")
        return attrs


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()
    expires_at = serializers.DateTimeField()
    scope = serializers.DictField()
    url = serializers.CharField(help_text="The WebSocket URL to open with this token (add `?token=`).")


class RealtimeTokenView(APIView):
    """A short-lived WebSocket token for one lifecycle, or for every lifecycle of one subscriber. A caller
    with its own JWT gets tokens for its own lifecycles and its own subscriber stream only."""

    permission_classes = [IsProjectMemberOrSubscriber]

    @extend_schema(request=TokenRequestSerializer, responses={201: TokenSerializer})
    def post(self, request: Request) -> Response:
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        project = request.auth.project
        caller = subscriber_of(request)
        lifecycle_id = serializer.validated_data.get("lifecycle_id")
        user_id = serializer.validated_data.get("user_id")
        if caller is not None and user_id is not None and user_id != caller.user_id:
            raise exceptions.PermissionDenied("A user's token opens only that user's own stream.")
        if lifecycle_id is not None and not selectors.lifecycle_get(
            project=project, lifecycle_id=lifecycle_id, user_id=caller.user_id if caller else None
        ):
            raise exceptions.NotFound("No such lifecycle.")
        scope = tokens.RealtimeScope(
            project_id=str(project.id),
            lifecycle_id=str(lifecycle_id) if lifecycle_id else None,
            user_id=user_id,
            key_id=request.auth.pk,
        )
        body = {
            "token": tokens.mint(scope),
            "expires_at": timezone.now() + timedelta(seconds=settings.REALTIME_TOKEN_TTL_S),
            "scope": {"lifecycle_id": scope.lifecycle_id, "user_id": scope.user_id},
            "url": tokens.socket_url(lifecycle_id),
        }
        return Response(TokenSerializer(body).data, status=status.HTTP_201_CREATED)
