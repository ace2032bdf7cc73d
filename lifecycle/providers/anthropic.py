"""``anthropic/*``: the Messages API, its answer whole or, for a lifecycle that streams, its server-sent
events mapped to deltas (``content_block_delta``'s text; the usage from ``message_start`` and
``message_delta``)."""

from __future__ import annotations

import httpx
from django.conf import settings

from lifecycle.providers.base import Generation, GenerationRequest, OnDelta, ProviderError, post_json, post_sse

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
PASSTHROUGH_PARAMS = ("temperature", "top_p", "top_k", "stop_sequences")
SYSTEM_ROLES = ("system", "developer")  # the Messages API takes both as its one system prompt


class AnthropicProvider:
    async def generate(
        self, request: GenerationRequest, *, client: httpx.AsyncClient, on_delta: OnDelta | None = None
    ) -> Generation:
        system = "\n".join(str(m.get("content", "")) for m in request.messages if m.get("role") in SYSTEM_ROLES)
        params = request.params
        body = {
            "model": request.model,
            "messages": [m for m in request.messages if m.get("role") not in SYSTEM_ROLES],
            "max_tokens": int(params.get("max_tokens") or params.get("max_completion_tokens") or DEFAULT_MAX_TOKENS),
        }
        if "stop" in params and "stop_sequences" not in params:  # the Chat Completions name for the same thing
            body["stop_sequences"] = [params["stop"]] if isinstance(params["stop"], str) else params["stop"]
        if system:
            body["system"] = system
        body.update({k: v for k, v in request.params.items() if k in PASSTHROUGH_PARAMS})
        url = f"{settings.ANTHROPIC_BASE_URL}/v1/messages"
        headers = {"x-api-key": settings.ANTHROPIC_API_KEY, "anthropic-version": API_VERSION}
        if on_delta is not None:
            return await self._stream(url, headers, body, client, on_delta)
        status, data = await post_json(client, url, headers=headers, body=body, timeout=settings.PROVIDER_TIMEOUT_S)
        try:
            text = "".join(block.get("text", "") for block in data["content"] if block.get("type") == "text")
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProviderError("provider answer has no content blocks", retryable=False) from exc
        usage = data.get("usage") or {}
        return Generation(
            text=text,
            usage={
                "input_tokens": int(usage.get("input_tokens", 0)),
                "output_tokens": int(usage.get("output_tokens", 0)),
            },
            http_status=status,
        )

    async def _stream(
        self, url: str, headers: dict, body: dict, client: httpx.AsyncClient, on_delta: OnDelta
    ) -> Generation:
        parts: list[str] = []
        usage: dict = {}
        async for event in post_sse(
            client, url, headers=headers, body={**body, "stream": True}, timeout=settings.PROVIDER_TIMEOUT_S
        ):
            kind = event.get("type")
            if kind == "content_block_delta" and (event.get("delta") or {}).get("type") == "text_delta":
                piece = event["delta"].get("text") or ""
                if piece:
                    parts.append(piece)
                    await on_delta(piece)
            elif kind == "message_start":
                usage.update((event.get("message") or {}).get("usage") or {})
            elif kind == "message_delta":
                usage.update(event.get("usage") or {})
            elif kind == "error":
                error = event.get("error") or {}
                # overloaded_error and api_error are Anthropic's 529 and 500: worth another try.
                retryable = error.get("type") in ("overloaded_error", "api_error")
                raise ProviderError(f"provider stream failed: {error.get('type', 'error')}", retryable=retryable)
        return Generation(
            text="".join(parts),
            usage={
                "input_tokens": int(usage.get("input_tokens", 0)),
                "output_tokens": int(usage.get("output_tokens", 0)),
            },
            http_status=200,
        )
