"""One HTTP attempt at a webhook, to the address the SSRF guard vetted, with redirects not followed."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import httpx
from django.conf import settings

from webhooks import ssrf

RESPONSE_EXCERPT_BYTES = 1000
USER_AGENT = "ai-lifecycle-orchestrator-webhooks/1"


@dataclass(frozen=True)
class AttemptResult:
    outcome: str  # succeeded, failed, aborted, refused
    latency_ms: float
    status_code: int | None = None
    response_excerpt: str = ""
    error: str = ""


@functools.cache
def _client() -> httpx.Client:
    # One pooled client per worker process; connections are per vetted IP.
    return httpx.Client(follow_redirects=False, headers={"User-Agent": USER_AGENT})


def send(url: str, *, headers: dict[str, str], body: bytes) -> AttemptResult:
    started = time.perf_counter()

    def elapsed() -> float:
        return (time.perf_counter() - started) * 1000

    try:
        target = ssrf.resolve(url)
    except ssrf.TargetRefused as exc:
        return AttemptResult(outcome="refused", latency_ms=elapsed(), error=f"refused by the SSRF guard: {exc}")
    host_header = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
    try:
        response = _client().post(
            target.url_for(url),
            content=body,
            headers={**headers, "Host": host_header, "Content-Type": "application/json"},
            timeout=settings.WEBHOOK_TIMEOUT_S,
            extensions={"sni_hostname": target.host},
        )
    except httpx.TimeoutException:
        return AttemptResult(outcome="failed", latency_ms=elapsed(), error="timed out")
    except httpx.HTTPError as exc:
        return AttemptResult(outcome="failed", latency_ms=elapsed(), error=f"{exc.__class__.__name__}: {exc}"[:1000])
    excerpt = response.content[:RESPONSE_EXCERPT_BYTES].decode(errors="replace")
    if 200 <= response.status_code < 300:
        outcome = "succeeded"
    elif response.headers.get("webhook-delivery", "").lower() == "abort-message":
        outcome = "aborted"
    else:
        outcome = "failed"
    return AttemptResult(
        outcome=outcome, latency_ms=elapsed(), status_code=response.status_code, response_excerpt=excerpt
    )
