"""The one small interface every provider implements."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import httpx


@dataclass(frozen=True)
class GenerationRequest:
    model: str  # the part after "provider/"
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    response_format: dict[str, Any] | None = None


@dataclass(frozen=True)
class Generation:
    text: str
    usage: dict[str, int] = field(default_factory=dict)
    http_status: int | None = None


class ProviderError(Exception):
    """A failed attempt. ``retryable`` errors (429, 5xx, timeouts, connection errors) are tried again,
    honouring ``retry_after`` when the provider sent one; others move on to the fallbacks."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.http_status = http_status
        self.retry_after = retry_after


# Called with each piece of text as a streaming provider produces it.
OnDelta = Callable[[str], Awaitable[None]]


class Provider(Protocol):
    async def generate(
        self, request: GenerationRequest, *, client: httpx.AsyncClient, on_delta: OnDelta | None = None
    ) -> Generation:
        """Produce the answer. With ``on_delta`` (the lifecycle asked for ``params.stream``) a provider that
        can stream reports text as it comes; the returned ``Generation`` still holds all of it."""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content", "")
            if isinstance(content, list):  # content parts
                return "".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content)
    return ""


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            from datetime import UTC, datetime

            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


def _raise_for_status(response: httpx.Response, body_text: str) -> None:
    if response.status_code == 429 or response.status_code >= 500:
        raise ProviderError(
            f"provider answered {response.status_code}",
            retryable=True,
            http_status=response.status_code,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    if response.status_code >= 400:
        raise ProviderError(
            f"provider refused the request ({response.status_code}): {body_text[:300]}",
            retryable=False,
            http_status=response.status_code,
        )


def _transport_fault(exc: Exception, timeout: float) -> ProviderError:
    """A request that got no answer, as the timeline says it. The generator's clients send through aiohttp
    (``lifecycle/generator.py``), whose transport raises httpx's exceptions from aiohttp's own but calls
    every lost or refused connection a ``ConnectTimeout``: aiohttp's exception, when there is one, says
    which it was."""
    cause = exc.__cause__ if isinstance(exc.__cause__, aiohttp.ClientError) else exc
    if isinstance(cause, TimeoutError | httpx.TimeoutException):  # aiohttp's timeouts are TimeoutErrors
        return ProviderError(f"timed out after {timeout:.0f}s", retryable=True)
    return ProviderError(f"connection failed: {cause.__class__.__name__}", retryable=True)


async def post_json(
    client: httpx.AsyncClient, url: str, *, headers: dict[str, str], body: dict[str, Any], timeout: float
) -> tuple[int, dict[str, Any]]:
    """POST and decode, mapping transport faults and retryable statuses to :class:`ProviderError`."""
    try:
        response = await client.post(url, headers=headers, json=body, timeout=timeout)
    except (httpx.TransportError, aiohttp.ClientError) as exc:
        raise _transport_fault(exc, timeout) from exc
    _raise_for_status(response, response.text)
    try:
        return response.status_code, response.json()
    except ValueError as exc:
        raise ProviderError("provider answered with invalid JSON", retryable=True, http_status=200) from exc


async def post_sse(
    client: httpx.AsyncClient, url: str, *, headers: dict[str, str], body: dict[str, Any], timeout: float
) -> AsyncIterator[dict[str, Any]]:
    """POST and yield each server-sent event's JSON ``data`` until ``[DONE]``; faults as in :func:`post_json`."""
    try:
        async with client.stream("POST", url, headers=headers, json=body, timeout=timeout) as response:
            if response.status_code >= 400:
                _raise_for_status(response, (await response.aread()).decode(errors="replace"))
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    yield json.loads(data)
                except ValueError as exc:
                    raise ProviderError("provider streamed invalid JSON", retryable=True, http_status=200) from exc
    except (httpx.TransportError, aiohttp.ClientError) as exc:
        raise _transport_fault(exc, timeout) from exc
