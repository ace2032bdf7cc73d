"""Raw psycopg connections beside Django's, for LISTEN/NOTIFY and session-level locks."""

from __future__ import annotations

from django.db import connection

# Django's own parameters include its cursor class and adapters, which only suit its sync connection.
_DJANGO_ONLY = {"cursor_factory", "context", "prepare_threshold", "client_encoding"}


def connection_params() -> dict:
    return {k: v for k, v in connection.get_connection_params().items() if k not in _DJANGO_ONLY}
