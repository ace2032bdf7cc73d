"""One exception handler turns every API error into ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

ERROR_CODES = {
    status.HTTP_400_BAD_REQUEST: "invalid_request",
    status.HTTP_401_UNAUTHORIZED: "unauthenticated",
    status.HTTP_403_FORBIDDEN: "forbidden",
    status.HTTP_404_NOT_FOUND: "not_found",
    status.HTTP_405_METHOD_NOT_ALLOWED: "method_not_allowed",
    status.HTTP_406_NOT_ACCEPTABLE: "not_acceptable",
    status.HTTP_409_CONFLICT: "conflict",
    status.HTTP_413_REQUEST_ENTITY_TOO_LARGE: "payload_too_large",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
    status.HTTP_429_TOO_MANY_REQUESTS: "rate_limited",
}


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class BudgetExceeded(exceptions.APIException):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = "The project's daily budget is spent."
    default_code = "budget_exceeded"

    def __init__(self, detail: str, *, wait: int) -> None:
        super().__init__(detail)
        self.wait = wait  # DRF's exception handler sends it as Retry-After


def error_body(code: str, message: str, details=None) -> dict:
    return {"error": {"code": code, "message": message, "details": details}}


def exception_handler(exc, context) -> Response | None:
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
    if isinstance(detail, dict | list):
        message, details = "The request is invalid.", detail
    else:
        message, details = str(detail), None
    code = (
        exc.default_code
        if isinstance(exc, BudgetExceeded)
        else ERROR_CODES.get(response.status_code, getattr(exc, "default_code", "error"))
    )
    response.data = error_body(code, message, details)
    return response


def json_error(status_code: int, code: str, message: str) -> JsonResponse:
    """For plain Django views and middleware outside DRF."""
    return JsonResponse(error_body(code, message), status=status_code)


RETRY_AFTER_S = 2


def unavailable() -> JsonResponse:
    """A server we depend on is away for a moment: ``503`` with ``Retry-After``, which clients retry."""
    response = json_error(503, "unavailable", "The service is briefly unavailable; try again shortly.")
    response["Retry-After"] = str(RETRY_AFTER_S)
    return response


@csrf_exempt  # an unknown path is a 404 whatever the method, never a CSRF page
def not_found(request, exception=None) -> JsonResponse:
    return json_error(404, "not_found", "No such resource.")


def server_error(request) -> JsonResponse:
    return json_error(500, "internal_error", "Something went wrong on our side; it has been logged.")
