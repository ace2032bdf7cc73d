"""The load generator, run as its own process so the service and the client do not share an interpreter.

    python -m bench.load burst URL API_KEY --n 200 --timeout 30 --body JSON   # N requests at once (≤ 512 connections)
    python -m bench.load closed URL API_KEY --seconds 10 --concurrency 64     # as fast as answers come
    python -m bench.load rate URL API_KEY --seconds 10 --rate 500             # a fixed arrival rate

A minimal HTTP/1.1 client over asyncio streams with keep-alive connections: general-purpose clients spend
more CPU per request than the server under test here. In ``rate`` mode, latency is measured from each
request's scheduled time, so a stalled server is not hidden by a stalled client (coordinated omission).
Prints one JSON object: outcomes, latencies (ms), timings and the ids of accepted lifecycles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from urllib.parse import urlsplit

MAX_BURST_CONNECTIONS = 512


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Connection:
    def __init__(self, url: str, api_key: str, body: bytes | None) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        method = "POST" if body is not None else "GET"
        head = (
            f"{method} {parts.path or '/'} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body or b'')}\r\n\r\n"
        )
        self.request = head.encode() + (body or b"")
        self.reader = self.writer = None

    async def send(self) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length, close = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.outcomes: dict[str, int] = {}
        self.ids: list[str] = []
        self.last_answer = 0.0

    async def one(self, connection: Connection, timeout: float, start: float, scheduled: float | None = None) -> None:
        sent = scheduled if scheduled is not None else time.perf_counter()
        try:
            status, body = await asyncio.wait_for(connection.send(), timeout)
            outcome = str(status)
            if status == 202:
                self.ids.append(json.loads(body)["id"])
        except TimeoutError:
            outcome = "timeout"
            connection.close()
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            outcome = exc.__class__.__name__
            connection.close()
        now = time.perf_counter()
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if outcome.startswith("2"):
            self.latencies.append((now - sent) * 1000)
            self.last_answer = max(self.last_answer, now - start)

    def report(self, elapsed: float) -> dict:
        return {
            "outcomes": self.outcomes,
            "ok": len(self.latencies),
            "elapsed_s": round(elapsed, 3),
            "rate_per_s": round(len(self.latencies) / elapsed, 1) if elapsed else None,
            "p50_ms": percentile(self.latencies, 0.50),
            "p99_ms": percentile(self.latencies, 0.99),
            "mean_ms": statistics.fmean(self.latencies) if self.latencies else None,
            "last_answer_s": round(self.last_answer, 3),
            "ids": self.ids,
        }


async def main(args) -> dict:
    body = args.body.encode() if args.body else None
    recorder = Recorder()

    def connection() -> Connection:
        return Connection(args.url, args.api_key, body)

    start = time.perf_counter()
    if args.mode == "burst":
        # N requests at once, over at most MAX_BURST_CONNECTIONS connections (each sends its share back to
        # back): thousands of simultaneous connects would overflow the server's listen backlog instead.
        remaining = args.n

        async def sender() -> None:
            nonlocal remaining
            c = connection()
            while remaining > 0:
                remaining -= 1
                await recorder.one(c, args.timeout, start)
            c.close()

        await asyncio.gather(*(sender() for _ in range(min(args.n, MAX_BURST_CONNECTIONS))))
    elif args.mode == "closed":
        deadline = start + args.seconds

        async def worker() -> None:
            c = connection()
            while time.perf_counter() < deadline:
                await recorder.one(c, args.timeout, start)
            c.close()

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    else:  # rate: a scheduler queues arrivals; a pool of keep-alive connections serves them
        queue: asyncio.Queue[float | None] = asyncio.Queue()

        async def worker() -> None:
            c = connection()
            while (scheduled := await queue.get()) is not None:
                await recorder.one(c, args.timeout, start, scheduled)
            c.close()

        workers = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
        interval = 1 / args.rate
        for i in range(int(args.seconds * args.rate)):
            scheduled = start + i * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(scheduled)
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
    return recorder.report(time.perf_counter() - start)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["burst", "closed", "rate"])
    parser.add_argument("url")
    parser.add_argument("api_key")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--body", default="")
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
