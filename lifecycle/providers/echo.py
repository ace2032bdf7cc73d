"""``echo/*``: answers with the last user message after ``params.latency_ms``. For demos and benchmarks."""

from __future__ import annotations

import asyncio
import re

import httpx

from lifecycle.providers.base import Generation, GenerationRequest, OnDelta, last_user_text


class EchoProvider:
    async def generate(
        self, request: GenerationRequest, *, client: httpx.AsyncClient, on_delta: OnDelta | None = None
    ) -> Generation:
        latency_ms = float(request.params.get("latency_ms", 0) or 0)
        text = last_user_text(request.messages)
        words = len(text.split())
        if on_delta is None:
            if latency_ms > 0:
                await asyncio.sleep(latency_ms / 1000)
        else:
            # Stream it word by word, spread over the latency, as a model would.
            pieces = re.findall(r"\S+\s*", text) or [text]
            for piece in pieces:
                await asyncio.sleep(latency_ms / 1000 / len(pieces))
                await on_delta(piece)
        return Generation(text=text, usage={"input_tokens": words, "output_tokens": words})
