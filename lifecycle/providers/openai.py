"""``openai/*``: the Chat Completions API. With ``OPENAI_BASE_URL`` it serves any compatible server
(vLLM, Ollama, LiteLLM, a gateway)."""

from __future__ import annotations

import httpx
from django.conf import settings

from lifecycle.providers.base import Generation, GenerationRequest, OnDelta, ProviderError, post_json, post_sse

# Params passed to the API as they are; anything else (latency_ms, ...) is ours.
PASSTHROUGH_PARAMS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "reasoning_effort",
)


class OpenAIProvider:
    async def generate(
        self, request: GenerationRequest, *, client: httpx.AsyncClient, on_delta: OnDelta | None = None
    ) -> Generation:
        body = {"model": request.model, "messages": request.messages}
        body.update({k: v for k, v in request.params.items() if k in PASSTHROUGH_PARAMS})
        if request.response_format:
            body["response_format"] = request.response_format
        headers = {"Authorization": f"Bearer {settings.OPENAI_API_KEY}"} if settings.OPENAI_API_KEY else {}
        if on_delta is not None:
            return await self._stream(body, headers, client, on_delta)
        status, data = await post_json(
            client,
            f"{settings.OPENAI_BASE_URL}/chat/completions",
            headers=headers,
            body=body,
            timeout=settings.PROVIDER_TIMEOUT_S,
        )
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise ProviderError("provider answer has no choices[0].message.content", retryable=False) from exc
        usage = data.get("usage") or {}
        return Generation(
            text=text,
            usage={
                "input_tokens": int(usage.get("prompt_tokens", 0)),
                "output_tokens": int(usage.get("completion_tokens", 0)),
            },
            http_status=status,
        )

    async def _stream(self, body: dict, headers: dict, client: httpx.AsyncClient, on_delta: OnDelta) -> Generation:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        parts: list[str] = []
        usage: dict = {}
        async for chunk in post_sse(
            client,
            f"{settings.OPENAI_BASE_URL}/chat/completions",
            headers=headers,
            body=body,
            timeout=settings.PROVIDER_TIMEOUT_S,
        ):
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    parts.append(piece)
                    await on_delta(piece)
            usage = chunk.get("usage") or usage
        return Generation(
            text="".join(parts),
            usage={
                "input_tokens": int(usage.get("prompt_tokens", 0)),
                "output_tokens": int(usage.get("completion_tokens", 0)),
            },
            http_status=200,
        )
