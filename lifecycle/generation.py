"""Running one generation: the model, then its fallbacks, each with retries; every attempt on the timeline.

Transport-free: the generator process calls :func:`generate` for each claimed lifecycle.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from typing import Any

import httpx
import jsonschema
import orjson
from django.conf import settings

from lifecycle import limits, pricing, services
from lifecycle.models import Lifecycle
from lifecycle.providers import PROVIDERS, GenerationRequest, ProviderError, split_model
from lifecycle.states import ErrorCode
from lifecycle.streaming import DeltaStream
from orchestrator import db, metrics, telemetry

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


def backoff_s(attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; a provider's Retry-After wins (capped)."""
    if retry_after is not None:
        return min(retry_after, MAX_BACKOFF_S)
    return random.uniform(0, min(MAX_BACKOFF_S, 0.5 * 2**attempt))


class OutputInvalid(Exception):
    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.details = details


def parse_output(text: str, response_format: dict[str, Any] | None) -> Any:
    """The lifecycle's output: the text, or for ``json_schema`` formats the parsed, validated object."""
    if not response_format or response_format.get("type") != "json_schema":
        return text
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise OutputInvalid(f"output is not JSON: {exc}") from exc
    spec = response_format.get("json_schema") or {}
    schema = spec.get("schema", spec)
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        raise OutputInvalid(f"output does not match the JSON schema: {exc.message}", {"path": path}) from exc
    return value


async def generate(
    lifecycle: Lifecycle, *, client: httpx.AsyncClient, succeed=None, admitted: tuple[str, int] | None = None
) -> None:
    """Try the model and then each fallback; store the first valid output, or fail the lifecycle. The
    outcome is recorded only while this claim (``lifecycle.attempts``, its fencing token) holds the lease.
    ``succeed`` stores the output (``services.generation_succeed``'s arguments); by default it calls that
    service, and the generator passes its group commit. ``admitted``: the model and tokens the generator's
    admission already charged its first call with (limits.Gate); every other call is admitted here."""
    stream = DeltaStream(str(lifecycle.id)) if lifecycle.params.get("stream") else None
    succeed = succeed or functools.partial(db.patiently, services.generation_succeed)
    try:
        await _generate(lifecycle, client=client, stream=stream, succeed=succeed, admitted=admitted)
    finally:
        if stream is not None:
            await stream.close()


async def _generate(
    lifecycle: Lifecycle, *, client: httpx.AsyncClient, stream: DeltaStream | None, succeed, admitted
) -> None:
    on_delta = stream.add if stream else None
    gate = limits.gate()
    # The request's estimate, as the API made it (the same for every model tried).
    estimated = (admitted and admitted[1]) or limits.estimate_tokens(lifecycle.messages, lifecycle.params)
    last_error = "no model was tried"
    # When every model refused the request itself (a non-retryable 4xx), the request is what was wrong.
    all_refused = True
    for model in [lifecycle.model, *lifecycle.fallbacks]:
        provider_name, model_name = split_model(model)
        request = GenerationRequest(
            model=model_name,
            messages=lifecycle.messages,
            params=lifecycle.params,
            response_format=lifecycle.response_format,
        )
        for attempt in range(settings.PROVIDER_MAX_RETRIES + 1):
            if admitted and admitted[0] == model:
                admitted = None  # its first call was admitted before the claim
            else:  # paused by another generation's 429, or at its configured limit
                await gate.wait(model, estimated)
            started = time.perf_counter()
            try:
                with telemetry.span("provider.attempt", model=model, attempt=attempt + 1):
                    generation = await PROVIDERS[provider_name].generate(request, client=client, on_delta=on_delta)
            except ProviderError as exc:
                latency_ms = (time.perf_counter() - started) * 1000
                await _record(lifecycle, _attempt(model, attempt, latency_ms, error=exc))
                last_error = f"{model}: {exc}"
                all_refused = all_refused and not exc.retryable and exc.http_status is not None
                if exc.http_status == 429:
                    await gate.pause(model, exc.retry_after)
                if not exc.retryable or attempt == settings.PROVIDER_MAX_RETRIES:
                    break
                await asyncio.sleep(backoff_s(attempt, exc.retry_after))
                continue
            latency_ms = (time.perf_counter() - started) * 1000
            used = sum(generation.usage.get(kind, 0) for kind in ("input_tokens", "output_tokens"))
            await gate.settle(model, estimated=estimated, used=used or estimated)
            if stream is not None:
                await stream.close()  # the last delta goes out before the result can reach any socket
            step = _attempt(model, attempt, latency_ms, usage=generation.usage, http_status=generation.http_status)
            try:
                output = parse_output(generation.text, lifecycle.response_format)
            except OutputInvalid as exc:
                await _record(lifecycle, step)
                await db.patiently(
                    services.generation_fail,
                    lifecycle_id=lifecycle.id,
                    lease=lifecycle.attempts,
                    code=ErrorCode.OUTPUT_INVALID,
                    message=str(exc),
                    details=exc.details,
                    usage=pricing.priced(model, generation.usage),
                    model_used=model,
                )
                return
            await succeed(
                lifecycle_id=lifecycle.id,
                output=output,
                usage=pricing.priced(model, generation.usage),
                model_used=model,
                attempt=step,
                lease=lifecycle.attempts,
            )
            return
    await db.patiently(
        services.generation_fail,
        lifecycle_id=lifecycle.id,
        lease=lifecycle.attempts,
        code=ErrorCode.INVALID_REQUEST if all_refused else ErrorCode.GENERATION_FAILED,
        message="The model refused the request." if all_refused else "The model could not produce an answer.",
        details={"last_error": last_error},
    )


def _attempt(
    model: str,
    attempt: int,
    latency_ms: float,
    *,
    usage: dict | None = None,
    http_status: int | None = None,
    error: ProviderError | None = None,
) -> services.Step:
    """A provider attempt as a timeline step (counted in the metrics as it is made)."""
    payload: dict[str, Any] = {
        "model": model,
        "attempt": attempt + 1,
        "outcome": "error" if error else "ok",
        "latency_ms": round(latency_ms, 2),
        "http_status": error.http_status if error else http_status,
    }
    metrics.PROVIDER_ATTEMPTS.labels(provider=model.split("/", 1)[0], outcome=payload["outcome"]).inc()
    if usage:
        payload["usage"] = usage
    if error:
        payload["error"] = str(error)
        payload["retryable"] = error.retryable
    return services.Step("generation.attempt", payload, latency_ms)


async def _record(lifecycle: Lifecycle, step: services.Step) -> None:
    await db.patiently(
        services.record_event,
        lifecycle_id=lifecycle.id,
        event=step.event,
        payload=step.payload,
        duration_ms=step.duration_ms,
    )
