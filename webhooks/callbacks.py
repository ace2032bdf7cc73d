"""The backend's callback: ``POST /v1/lifecycles/{id}/callback`` with the token from the webhook.

The token is a signed value (HMAC with SECRET_KEY, its own salt, compared in constant time) naming one
lifecycle and an expiry: it opens that lifecycle's callback and nothing else, and nothing is stored.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from typing import Any

import jsonschema
import orjson
from django.core import signing
from django.db import IntegrityError, connection, transaction

from lifecycle import delivery
from lifecycle.models import Lifecycle
from webhooks.models import Callback

SALT = "webhooks.callback.v1"
MAX_CALLBACK_BYTES = 256 * 1024

CALLBACK_SCHEMA = {
    "type": "object",
    "oneOf": [
        {"required": ["data"], "not": {"required": ["error"]}},
        {"required": ["error"], "not": {"required": ["data"]}},
    ],
    "properties": {
        "data": {},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "minLength": 1, "maxLength": 100},
                "message": {"type": "string", "minLength": 1, "maxLength": 2000},
                "details": {},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
_validator = jsonschema.Draft202012Validator(CALLBACK_SCHEMA)


class CallbackRejected(Exception):
    status_code = 400
    code = "invalid_request"


class InvalidToken(CallbackRejected):
    status_code = 401
    code = "unauthenticated"


class UnknownLifecycle(CallbackRejected):
    status_code = 404
    code = "not_found"


class CallbackConflict(CallbackRejected):
    status_code = 409
    code = "conflict"


def mint_token(*, lifecycle_id: str, expires_at: datetime) -> str:
    return signing.dumps({"l": lifecycle_id, "e": int(expires_at.timestamp())}, salt=SALT, compress=False)


def token_opens(token: str, lifecycle_id: str) -> bool:
    try:
        claims = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        return False
    return isinstance(claims, dict) and claims.get("l") == lifecycle_id and claims.get("e", 0) > time.time()


def validate_body(body: Any) -> None:
    errors = sorted(_validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "body"
        raise CallbackRejected(f"{where}: {first.message}"[:500])


def callback_accept(*, lifecycle_id: str, token: str, body: Any) -> tuple[Lifecycle, bool]:
    """Apply the backend's callback. Returns ``(lifecycle, applied)``; ``applied`` is False for an identical
    repeat of the callback that won. A different callback after the first, or one for a lifecycle that
    is no longer waiting, is a :class:`CallbackConflict`.

    1. Check the token (scope and expiry) before touching anything.
    2. Validate the body against ``CALLBACK_SCHEMA``.
    3. In one transaction: record the callback (one per lifecycle: the first wins, and a concurrent second
       waits on the first's row, then answers as a repeat or a conflict), then hand it to the lifecycle,
       which completes with ``data`` or fails with ``backend_rejected`` on ``error``, its one lock and its
       timeline step included (:func:`lifecycle.delivery.callback_received`).
    """
    if not token_opens(token, lifecycle_id):
        raise InvalidToken("The callback token is invalid, expired or for another lifecycle.")
    validate_body(body)
    body_hash = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(_INSERT_FIRST, [lifecycle_id, orjson.dumps(body).decode(), body_hash])
                first = cursor.fetchone() is not None
            if first:
                return delivery.callback_received(lifecycle_id=lifecycle_id, body=body), True
    except (Lifecycle.DoesNotExist, IntegrityError):  # no row to lock, or none for the callback's foreign key
        raise UnknownLifecycle("No such lifecycle.") from None
    except delivery.NotAwaitingCallback as exc:
        raise CallbackConflict(str(exc)) from None
    if Callback.objects.filter(lifecycle_id=lifecycle_id).values_list("body_hash", flat=True).first() != body_hash:
        raise CallbackConflict("A different callback was already accepted for this lifecycle.")
    return Lifecycle.objects.get(id=lifecycle_id), False


_INSERT_FIRST = (
    f"INSERT INTO {Callback._meta.db_table} (lifecycle_id, body, body_hash, received_at) "  # noqa: S608
    "VALUES (%s, %s::jsonb, %s, now()) ON CONFLICT (lifecycle_id) DO NOTHING RETURNING id"
)
