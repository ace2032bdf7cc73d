from __future__ import annotations

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError

from orchestrator.errors import json_error
from orchestrator.logs import log_context
from orchestrator.outages import Outage

log = logging.getLogger(__name__)


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


class DatabaseUnavailableMiddleware:
    """A request that meets PostgreSQL away (restarting, failing over) gets ``503`` with ``Retry-After``, a
    JSON error a client knows to retry, instead of a 500; the outage is logged once per process, not once per
    request. Nothing was written: every write is one transaction."""

    outage = Outage("web: PostgreSQL", log, remind_s=30)
    RETRY_AFTER_S = 2

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if self.outage.ongoing and response.status_code < 500:
            self.outage.ok()
        return response

    def process_exception(self, request, exception):
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        self.outage.failed(exception)
        response = json_error(503, "unavailable", "The service is briefly unavailable; try again shortly.")
        response["Retry-After"] = str(self.RETRY_AFTER_S)
        return response
