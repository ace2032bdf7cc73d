"""API key authentication: ``Authorization: Bearer <project API key>``. The request's project is
``request.auth.project``; every query a view makes is scoped by it."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from lifecycle.models import ApiKey
from lifecycle.services import api_key_authenticate


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request) -> tuple[None, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode(errors="replace")
        scheme, _, raw_key = header.partition(" ")
        if scheme != self.keyword or not raw_key.strip():
            return None
        key = api_key_authenticate(raw_key=raw_key.strip())
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return None, key

    def authenticate_header(self, request) -> str:
        return self.keyword


class IsProjectMember(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, ApiKey)


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes API key authentication."""

    target_class = "lifecycle.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A project API key: `Bearer lk_…`"}
