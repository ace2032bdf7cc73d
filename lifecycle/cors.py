"""CORS for frontends that call the API with their own JWTs (shared/ARCHITECTURE.md, Identity at the
edge): a browser origin is allowed when the caller's JWT issuer lists it (``allowed_origins``).

1. A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) carries no token, so it is answered
   for an origin that any project's issuer allows; the request that follows is checked for its own.
2. A request with a JWT from an origin its issuer does not list was refused when it authenticated
   (``403``, :func:`lifecycle.auth.subscriber`), before it could do anything; one from a listed origin
   gets ``Access-Control-Allow-Origin`` for that origin only.
3. An error answered before anyone was authenticated (a bad token, a body too large) is readable by an
   origin some issuer allows, so the frontend can tell its user why.

Project API keys are not for browsers: their answers carry no CORS headers. Event streams have their own
(``realtime.sse``: the token in hand is what grants access there).
"""

from __future__ import annotations

import re

from asgiref.sync import sync_to_async
from django.http import HttpResponse

from lifecycle.models import JwtIssuer
from orchestrator.middleware import _Middleware

PATHS = re.compile(r"^/v1/(lifecycles(/[0-9a-fA-F-]{36}(/cancel)?)?|chat/completions)$")
ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, Prefer, traceparent"
EXPOSE_HEADERS = "x-lifecycle-id, Retry-After, Preference-Applied"


def allowed_anywhere(origin: str) -> bool:
    return JwtIssuer.objects.filter(allowed_origins__contains=[origin]).exists()


class CorsMiddleware(_Middleware):
    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        origin = request.headers.get("Origin")
        if not origin or not PATHS.match(request.path):
            return self.get_response(request)
        if _is_preflight(request):
            return _preflight(origin, allowed_anywhere(origin))
        response = self.get_response(request)
        allowed = _readable(request, response, origin)
        return _with_cors(response, origin, allowed_anywhere(origin) if allowed is None else allowed)

    async def _acall(self, request):
        origin = request.headers.get("Origin")
        if not origin or not PATHS.match(request.path):
            return await self.get_response(request)
        check = sync_to_async(allowed_anywhere, thread_sensitive=False)
        if _is_preflight(request):
            return _preflight(origin, await check(origin))
        response = await self.get_response(request)
        allowed = _readable(request, response, origin)
        return _with_cors(response, origin, await check(origin) if allowed is None else allowed)


def _is_preflight(request) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def _readable(request, response, origin: str) -> bool | None:
    """Whether ``origin`` may read this answer: as its JWT caller's issuer says; for an error answered before
    anyone was authenticated, ``None``: as any issuer says (a query); anything else, no."""
    caller = getattr(request, "subscriber", None)
    if caller is not None:
        return origin in caller.issuer.allowed_origins
    return None if response.status_code >= 400 else False


def _preflight(origin: str, allowed: bool) -> HttpResponse:
    response = HttpResponse(status=204)
    response["Vary"] = "Origin"
    if allowed:
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response["Access-Control-Max-Age"] = "600"
    return response


def _with_cors(response, origin: str, allowed: bool) -> HttpResponse:
    response["Vary"] = "Origin"
    if allowed:
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    return response
