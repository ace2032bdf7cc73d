from __future__ import annotations

from django.conf import settings

from orchestrator.errors import json_error
from orchestrator.logs import log_context


class BodySizeLimitMiddleware:
    """Refuse oversized bodies with a JSON 413 before anything reads them."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            too_big = int(length) > settings.MAX_REQUEST_BYTES
        except ValueError:
            return json_error(400, "invalid_request", "Content-Length is not a number.")
        if too_big:
            return json_error(413, "payload_too_large", f"The body is larger than {settings.MAX_REQUEST_BYTES} bytes.")
        return self.get_response(request)


class LogContextMiddleware:
    """Every log line of a request carries its trace id (from its ``traceparent``, if it sent one)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        with log_context(traceparent=request.headers.get("traceparent")):
            return self.get_response(request)
