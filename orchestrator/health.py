"""Liveness, readiness and metrics. Readiness really talks to each backing service and says which one failed
(to operators: in production the details and ``/metrics`` need the ``METRICS_TOKEN`` bearer token)."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from lifecycle import kafka
from orchestrator.errors import json_error

CHECK_TIMEOUT_S = 2.0


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> None:
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=CHECK_TIMEOUT_S, socket_connect_timeout=CHECK_TIMEOUT_S
    )
    try:
        client.ping()
    finally:
        client.close()


def _kafka() -> None:
    kafka.ping(timeout=CHECK_TIMEOUT_S)


CHECKS: dict[str, Callable[[], None]] = {"database": _database, "redis": _redis, "kafka": _kafka}


def _run(check: Callable[[], None]) -> dict:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # the point is to report any failure, whatever it is
        return {"ok": False, "error": f"{exc.__class__.__name__}: {exc}"[:300]}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


@require_GET
def healthz(request) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _operator(request) -> bool:
    """Whether the caller may see the service's insides (``/metrics``, ``/readyz``'s details): anyone in
    development; in production, only with ``Authorization: Bearer <METRICS_TOKEN>``."""
    if not settings.METRICS_TOKEN:
        return settings.DEBUG
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme == "Bearer" and hmac.compare_digest(token.strip().encode(), settings.METRICS_TOKEN.encode())


@require_GET
def readyz(request) -> JsonResponse:
    """Ready or not for everyone (load balancers, probes); which server failed, and why, for operators."""
    results = {name: _run(check) for name, check in CHECKS.items()}
    ready = all(r["ok"] for r in results.values())
    body = {"status": "ready" if ready else "unavailable"}
    if _operator(request):
        body["checks"] = results
    return JsonResponse(body, status=200 if ready else 503)


@require_GET
def metrics(request) -> HttpResponse:
    if not _operator(request):
        message = (
            "Metrics need Authorization: Bearer <METRICS_TOKEN>."
            if settings.METRICS_TOKEN
            else ("Metrics are not public: set METRICS_TOKEN and scrape with it as a bearer token.")
        )
        return json_error(403, "forbidden", message)
    from orchestrator import metrics as prometheus

    return HttpResponse(prometheus.render(), content_type=CONTENT_TYPE_LATEST)
