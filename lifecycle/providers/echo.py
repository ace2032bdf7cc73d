"""``echo/*``: answers with the last user message after ``params.latency_ms``. For demos and benchmarks."""

from __future__ import annotations

import asyncio

import httpx

from lifecycle.providers.base import Generation, GenerationRequest, last_user_text


class EchoProvider:
    async def generate(self, request: GenerationRequest, *, client: httpx.AsyncClient) -> Generation:
        latency_ms = float(request.params.get("latency_ms", 0) or 0)
        if latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000)
        text = last_user_text(request.messages)
        words = len(text.split())
        return Generation(text=text, usage={"input_tokens": words, "output_tokens": words})
