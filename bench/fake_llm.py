"""A fake OpenAI-compatible model for benchmarks and the fault run: answers every Chat Completions request
after a fixed latency, with as many requests in flight as arrive (asyncio, one coroutine per connection).

    python -m bench.fake_llm PORT LATENCY_MS [SLOW_MS]

A request whose last message contains ``[slow]`` takes ``SLOW_MS`` instead (a model slower than the
generation lease, for the fault run), and one with ``[fast]`` answers at once (the cpu scenario, whose
figure is the orchestration's own cost, beside the bench's 8 s model). One with ``[limited]`` is a
rate-limited model: ``BENCH_LIMITED_RPM`` calls a minute, 429 past it; ``GET /limited`` counts both.
``GET /calls`` answers, for each prompt, the ``[start, end]`` of every call made with it (seconds on this
process's clock; ``end`` is when the answer went out or the caller hung up), so a run can tell a lifecycle
generated twice at once from one generated again after its worker died.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
from collections import defaultdict, deque

SLOW_MARK, FAST_MARK, LIMITED_MARK = "[slow]", "[fast]", "[limited]"
calls: dict[str, list[list[float | None]]] = defaultdict(list)
# The rate-limited model (prompts with [limited]): at most LIMITED_RPM calls answered in any 60 s (a sliding
# window, the strictest reading of "requests per minute"); past it, 429 with Retry-After, as providers do.
LIMITED_RPM = int(os.environ.get("BENCH_LIMITED_RPM", "600"))
limited_window: deque[float] = deque()
limited = {"answered": 0, "refused": 0, "first_answered": None, "last_answered": None}


def _limited_retry_after() -> int | None:
    """``None`` if a limited call may be answered now (and counts it), else the seconds to wait."""
    now = time.monotonic()
    while limited_window and limited_window[0] <= now - 60:
        limited_window.popleft()
    if len(limited_window) >= LIMITED_RPM:
        limited["refused"] += 1
        return max(1, math.ceil(limited_window[0] + 60 - now))
    limited_window.append(now)
    limited["answered"] += 1
    limited["first_answered"] = limited["first_answered"] or now
    limited["last_answered"] = now
    return None


def _response(status: str, body: bytes, extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, latency_s: float, slow_s: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = json.loads(await reader.readexactly(length)) if length else {}
            if head.startswith(b"GET /calls"):
                writer.write(_response("200 OK", json.dumps(calls).encode()))
                await writer.drain()
                continue
            if head.startswith(b"GET /limited?reset"):
                limited_window.clear()
                limited.update(answered=0, refused=0, first_answered=None, last_answered=None)
            if head.startswith(b"GET /limited"):
                writer.write(_response("200 OK", json.dumps(limited).encode()))
                await writer.drain()
                continue
            messages = body.get("messages") or [{}]
            prompt = str(messages[-1].get("content", ""))
            if LIMITED_MARK in prompt and (retry_after := _limited_retry_after()) is not None:
                refusal = json.dumps({"error": {"message": "Rate limit reached", "type": "requests"}}).encode()
                writer.write(_response("429 Too Many Requests", refusal, f"Retry-After: {retry_after}\r\n"))
                await writer.drain()
                continue
            call = [time.monotonic(), None]
            calls[prompt].append(call)
            # The caller hanging up (its process killed) ends the call, as it would end a real model's work.
            hung_up = asyncio.ensure_future(reader.read(1))
            wait_s = slow_s if SLOW_MARK in prompt else 0.0 if FAST_MARK in prompt else latency_s
            done, _ = await asyncio.wait([hung_up], timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            call[1] = time.monotonic()
            if done:
                return
            hung_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hung_up
            answer = json.dumps(
                {
                    "id": "chatcmpl-bench",
                    "object": "chat.completion",
                    "model": body.get("model", "bench"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
                    "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
                }
            ).encode()
            writer.write(_response("200 OK", answer))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int, latency_ms: float, slow_ms: float) -> None:
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, latency_ms / 1000, slow_ms / 1000), "127.0.0.1", port, backlog=4096
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    port, latency = int(sys.argv[1]), float(sys.argv[2])
    asyncio.run(main(port, latency, float(sys.argv[3]) if len(sys.argv) > 3 else latency))
