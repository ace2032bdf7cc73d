"""Middleware for both processes that serve HTTP: each works sync (the web process, gunicorn) and async (the
realtime process, daphne), so an async view never waits on Django's one sync thread."""

from __future__ import annotations

import logging

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.db import InterfaceError, OperationalError

from orchestrator.errors import json_error, unavailable
from orchestrator.logs import log_context
from orchestrator.outages import Outage

log = logging.getLogger(__name__)


class _Middleware:
    """A middleware that is sync or async as the handler chain it sits in is."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)


class BodySizeLimitMiddleware(_Middleware):
    """Refuse oversized bodies with a JSON 413 before anything reads them."""

    def __call__(self, request):
        refusal = self._refusal(request)
        if self.is_async:
            return self._acall(request, refusal)
        return refusal or self.get_response(request)

    async def _acall(self, request, refusal):
        return refusal or await self.get_response(request)

    @staticmethod
    def _refusal(request):
        length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            too_big = int(length) > settings.MAX_REQUEST_BYTES
        except ValueError:
            return json_error(400, "invalid_request", "Content-Length is not a number.")
        if too_big:
            return json_error(413, "payload_too_large", f"The body is larger than {settings.MAX_REQUEST_BYTES} bytes.")
        return None


class LogContextMiddleware(_Middleware):
    """Every log line of a request carries its trace id (from its ``traceparent``, if it sent one)."""

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        with log_context(traceparent=request.headers.get("traceparent")):
            return self.get_response(request)

    async def _acall(self, request):
        with log_context(traceparent=request.headers.get("traceparent")):
            return await self.get_response(request)


class DatabaseUnavailableMiddleware(_Middleware):
    """A request that meets PostgreSQL away (restarting, failing over) gets ``503`` with ``Retry-After``, a
    JSON error a client knows to retry, instead of a 500; the outage is logged once per process, not once per
    request. Nothing was written: every write is one transaction."""

    outage = Outage("web: PostgreSQL", log, remind_s=30)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        return self._seen(self.get_response(request))

    async def _acall(self, request):
        return self._seen(await self.get_response(request))

    def _seen(self, response):
        if self.outage.ongoing and response.status_code < 500:
            self.outage.ok()
        return response

    def process_exception(self, request, exception):
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        self.outage.failed(exception)
        return unavailable()
