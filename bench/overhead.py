"""Orchestration overhead, as a frontend sees it: from sending ``POST /v1/lifecycles`` to the final message on
the lifecycle's WebSocket. Run as its own process by ``bench.run`` (scenario ``overhead``).

    python -m bench.overhead rate   BASE_URL API_KEY --rate 50 --seconds 10 --body JSON
    python -m bench.overhead closed BASE_URL API_KEY --concurrency 64 --seconds 10 --body JSON

``rate`` offers lifecycles at a fixed rate (latency measured from each one's scheduled time, so a stalled
service is not hidden by a stalled client); ``closed`` keeps ``concurrency`` lifecycles in flight, each
starting as the last one's final message arrives, which gives the sustained completion rate. Prints one
JSON object: outcomes, latencies (ms), completed per second and the lifecycle ids.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import websockets

from bench.load import Connection, percentile

FINAL = {"lifecycle.completed", "lifecycle.failed", "lifecycle.cancelled"}


class Overhead:
    def __init__(self, args) -> None:
        self.args = args
        self.latencies: list[float] = []
        self.outcomes: dict[str, int] = {}
        self.ids: list[str] = []

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    async def post(self, connection: Connection) -> dict | None:
        """Create a lifecycle; its 202 answer, or ``None`` (counted) if there was none."""
        try:
            status, body = await asyncio.wait_for(connection.send(), self.args.timeout)
        except TimeoutError:
            self.count("timeout")
            connection.close()
            return None
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.count(exc.__class__.__name__)
            connection.close()
            return None
        if status != 202:
            self.count(str(status))
            return None
        accepted = json.loads(body)
        self.ids.append(accepted["id"])
        return accepted

    async def follow(self, accepted: dict, sent: float) -> None:
        """Open the lifecycle's socket, as its frontend would, and time the final message from ``sent``."""
        url = f"{accepted['links']['websocket']}?token={accepted['ws_token']}"
        try:
            async with asyncio.timeout(self.args.timeout), websockets.connect(url) as socket:
                async for raw in socket:
                    message = json.loads(raw)
                    if message.get("type") == "event" and message["event"] in FINAL:
                        self.latencies.append((time.perf_counter() - sent) * 1000)
                        self.count(message["event"])
                        return
                self.count("closed_early")
        except TimeoutError:
            self.count("timeout")
        except (OSError, websockets.WebSocketException) as exc:
            self.count(exc.__class__.__name__)

    def report(self, elapsed: float) -> dict:
        return {
            "outcomes": self.outcomes,
            "completed": len(self.latencies),
            "elapsed_s": round(elapsed, 3),
            "completed_per_s": round(len(self.latencies) / elapsed, 1) if elapsed else None,
            "p50_ms": percentile(self.latencies, 0.50),
            "p99_ms": percentile(self.latencies, 0.99),
            "ids": self.ids,
        }


async def main(args) -> dict:
    run = Overhead(args)
    url = f"{args.base_url}/v1/lifecycles"
    body = args.body.encode()
    start = time.perf_counter()
    deadline = start + args.seconds
    if args.mode == "closed":

        async def worker() -> None:
            connection = Connection(url, args.api_key, body)
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                accepted = await run.post(connection)
                if accepted is not None:
                    await run.follow(accepted, sent)
            connection.close()

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    else:
        pool: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(args.concurrency):
            pool.put_nowait(Connection(url, args.api_key, body))

        async def arrival(scheduled: float) -> None:
            # The HTTP connection goes back to the pool as soon as the POST is answered: the pool stands for
            # the frontends' backends, and each frontend then waits on its own socket.
            connection = await pool.get()
            try:
                accepted = await run.post(connection)
            finally:
                pool.put_nowait(connection)
            if accepted is not None:
                await run.follow(accepted, scheduled)

        tasks = []
        for i in range(int(args.seconds * args.rate)):
            scheduled = start + i / args.rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            tasks.append(asyncio.create_task(arrival(scheduled)))
        await asyncio.gather(*tasks)
    return run.report(time.perf_counter() - start)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["rate", "closed"])
    parser.add_argument("base_url")
    parser.add_argument("api_key")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--body", required=True)
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
