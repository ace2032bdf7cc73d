"""WebSocket subscribers on one web process, run as its own process by ``bench.run`` (scenario ``sockets``).

    python -m bench.sockets hold  BASE_URL API_KEY --lifecycles 1000 --per-lifecycle 5 --latency-ms 90000
    python -m bench.sockets churn BASE_URL API_KEY --cycles 10000 --concurrency 200

``hold`` creates lifecycles on the echo model with a latency, opens sockets on each (as many as a token may
hold) while they are in flight, and waits for every final message: how many sockets were open at once, and
how late each final message arrived after its event's own timestamp. ``churn`` opens and closes sockets on
a finished lifecycle ``cycles`` times (each gets the snapshot and the events, then the server closes it).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import datetime

import websockets

from bench.load import Connection, percentile

FINAL = {"lifecycle.completed", "lifecycle.failed", "lifecycle.cancelled"}


def failure(exc: BaseException) -> str:
    """What went wrong, with the close code and who sent it for a socket closed abnormally."""
    if isinstance(exc, websockets.ConnectionClosed):
        received, sent = exc.rcvd.code if exc.rcvd else "none", exc.sent.code if exc.sent else "none"
        return f"{exc.__class__.__name__}_received_{received}_sent_{sent}"
    return exc.__class__.__name__


async def create(url: str, api_key: str, body: bytes, n: int) -> list[dict]:
    created: list[dict] = []
    remaining = n

    async def sender() -> None:
        nonlocal remaining
        connection = Connection(f"{url}/v1/lifecycles", api_key, body)
        while remaining > 0:
            remaining -= 1
            status, answer = await connection.send()
            if status == 202:
                created.append(json.loads(answer))
        connection.close()

    await asyncio.gather(*(sender() for _ in range(min(n, 64))))
    return created


async def hold(args) -> dict:
    body = json.dumps({"model": "echo/bench", "prompt": "hi", "delivery": {"mode": "direct"},
                       "params": {"latency_ms": args.latency_ms}, "metadata": {"run": args.tag}}).encode()  # fmt: skip
    lifecycles = await create(args.base_url, args.api_key, body, args.lifecycles)
    open_now, peak, lateness, outcomes = 0, 0, [], {}
    handshakes = asyncio.Semaphore(100)

    async def subscriber(lifecycle: dict) -> None:
        nonlocal open_now, peak
        url = f"{lifecycle['links']['websocket']}?token={lifecycle['ws_token']}"
        try:
            async with handshakes:  # frontends arrive over time, not in one instant: 100 handshakes at once
                socket = await websockets.connect(url, open_timeout=60, max_queue=None)
            async with socket:
                open_now += 1
                peak = max(peak, open_now)
                try:
                    async for raw in socket:
                        message = json.loads(raw)
                        if message.get("type") == "event" and message["event"] in FINAL:
                            sent_at = datetime.fromisoformat(message["at"]).timestamp()
                            lateness.append((time.time() - sent_at) * 1000)
                            outcomes["final"] = outcomes.get("final", 0) + 1
                            return
                finally:
                    open_now -= 1
        except websockets.InvalidStatus as exc:
            name = f"refused_{exc.response.status_code}"
            outcomes[name] = outcomes.get(name, 0) + 1
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            name = failure(exc)
            outcomes[name] = outcomes.get(name, 0) + 1

    started = time.monotonic()
    tasks = [subscriber(lc) for lc in lifecycles for _ in range(args.per_lifecycle)]
    await asyncio.gather(*tasks)
    return {
        "lifecycles": len(lifecycles),
        "ids": [lifecycle["id"] for lifecycle in lifecycles],
        "sockets": len(tasks),
        "peak_open": peak,
        "outcomes": outcomes,
        "final_late_p50_ms": percentile(lateness, 0.5),
        "final_late_p99_ms": percentile(lateness, 0.99),
        "elapsed_s": round(time.monotonic() - started, 1),
    }


async def churn(args) -> dict:
    body = json.dumps({"model": "echo/bench", "prompt": "hi", "delivery": {"mode": "direct"}}).encode()
    (lifecycle,) = await create(args.base_url, args.api_key, body, 1)
    await asyncio.sleep(2)  # finished by now: each socket gets the snapshot and the events, then a close
    url = f"{lifecycle['links']['websocket']}?token={lifecycle['ws_token']}"
    remaining, outcomes = args.cycles, {}
    semaphore = asyncio.Semaphore(min(args.concurrency, 5))  # a token holds 5 sockets at once

    async def cycler() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with semaphore:
                try:
                    async with websockets.connect(url, open_timeout=30) as socket:
                        async for _ in socket:
                            pass
                    outcome = "closed"
                except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                    outcome = failure(exc)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1

    started = time.monotonic()
    await asyncio.gather(*(cycler() for _ in range(args.concurrency)))
    return {"cycles": args.cycles, "outcomes": outcomes, "elapsed_s": round(time.monotonic() - started, 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["hold", "churn"])
    parser.add_argument("base_url")
    parser.add_argument("api_key")
    parser.add_argument("--lifecycles", type=int, default=1000)
    parser.add_argument("--per-lifecycle", type=int, default=5)
    parser.add_argument("--latency-ms", type=int, default=90000)
    parser.add_argument("--cycles", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--tag", default="", help="metadata.run of the lifecycles, for the runner's ledger")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(hold(args) if args.mode == "hold" else churn(args))))
