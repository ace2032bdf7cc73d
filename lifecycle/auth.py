"""Who calls: ``Authorization: Bearer <project API key>``, or ``Bearer <JWT>`` from an identity provider
the project registered (:mod:`lifecycle.identity`). The request's project is ``request.auth.project``;
every query a view makes is scoped by it. A JWT caller (a :class:`~lifecycle.identity.Subscriber`) is one
user of the project: it may use only the views that allow it (:class:`IsProjectMemberOrSubscriber`), and
those show it only its own lifecycles."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from lifecycle import identity
from lifecycle.models import ApiKey
from lifecycle.services import api_key_authenticate


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request) -> tuple[None, ApiKey | identity.Subscriber] | None:
        header = authentication.get_authorization_header(request).decode(errors="replace")
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme != self.keyword or not credential:
            return None
        if identity.looks_like_jwt(credential):
            return None, subscriber(request, credential)
        key = api_key_authenticate(raw_key=credential)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return None, key

    def authenticate_header(self, request) -> str:
        return self.keyword


def subscriber(request, token: str) -> identity.Subscriber:
    try:
        return identity.authenticate_request(getattr(request, "_request", request), token)
    except identity.InvalidToken as exc:
        raise exceptions.AuthenticationFailed(str(exc)) from exc
    except identity.OriginRefused as exc:
        raise exceptions.PermissionDenied(str(exc)) from exc


class IsProjectMember(permissions.BasePermission):
    """The default: a project API key. A JWT caller is refused (403) wherever it is not allowed."""

    message = "This needs a project API key; a user's token may only create and read its own lifecycles."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, ApiKey)


class IsProjectMemberOrSubscriber(permissions.BasePermission):
    """A project API key, or a user's JWT (the view shows it only its own lifecycles)."""

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, ApiKey | identity.Subscriber)


def subscriber_of(request) -> identity.Subscriber | None:
    """The JWT caller of this request, or ``None`` for an API key."""
    return request.auth if isinstance(request.auth, identity.Subscriber) else None


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes API key authentication."""

    target_class = "lifecycle.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A project API key (`Bearer lk_…`), or a JWT from an issuer the project registered "
            "(`/v1/jwt-issuers`), which may only create and read its user's own lifecycles.",
        }
