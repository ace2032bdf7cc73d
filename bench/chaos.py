"""The fault run: lifecycles under load while every part of the service is crashed in turn, then a ledger.

    .venv/bin/python -m bench.chaos                       # 2,000 lifecycles, every fault
    .venv/bin/python -m bench.chaos --lifecycles 300      # the smaller run the CI suite makes

It starts its own embedded PostgreSQL, Redis and Kafka, the Procfile processes, a fake model (300 ms;
one request in 50 takes 25 s, longer than the 10 s generation lease) and a customer backend that verifies
every webhook and calls back, retrying while our API is down. That backend answers each delivery attempt
with a fault drawn at random: 500 (10%), a hang past the webhook timeout (5%), a connection reset (5%).
One lifecycle in ten is followed on its WebSocket by a client that reconnects and resumes (``since=``).

While the lifecycles go in (each POST retried with the same Idempotency-Key until it is answered, as a
client should), one fault after another, evenly spaced. Our processes: kill -9 and restart web, realtime,
generator, relay, delivery, Celery worker and beat. Their dependencies, while every process keeps running:
restart PostgreSQL (``pg_ctl restart -m fast``, and ``-m immediate``, which recovers from the WAL as after a
crash); kill -9 the Kafka broker and start it again empty (its log is in memory: every unconsumed message
is gone); stop Redis and start it again empty.

The ledger, at the end:
- every lifecycle a client saw accepted is a row, and there is exactly one row per request (no duplicate
  from a retried POST);
- every row is terminal within the settle time: none lost, none stuck; the run expects every one completed;
- every completed lifecycle's result is the one its own callback carried;
- every webhook arrived signed, and every repeat of a lifecycle's webhook carried the same webhook-id;
- no process exited that the run did not kill (a dependency's outage is ridden out in place);
- no lifecycle was generated twice at once (the fake model's calls per lifecycle never overlap; a second
  call only follows a generator the run killed);
- every followed socket got its lifecycle's final event, live or by catch-up, and it matches the row.

It prints the figures and exits non-zero if any line of the ledger fails.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from bench.environment import PRODUCTION_ON_LOOPBACK, answers, service_stack
from orchestrator.embedded import DEFAULT_STATE_DIR, PROJECT_DIR, EmbeddedStack, free_port, running, wait_until
from orchestrator.process import unwind_on_sigterm
from realtime.client import Created, LifecycleClient
from tests.processes import PROCFILE, ServiceProcesses

STATE_DIR = DEFAULT_STATE_DIR / "chaos"
PROCESSES = tuple(PROCFILE)
# Each dependency's fault is followed by faults of other parts, so that the processes it hit must recover by
# themselves (a relay killed right after the broker restarted would hide a relay that cannot).
FAULTS = (
    "web",
    "postgres-fast",
    "relay",
    "generator",
    "kafka",
    "realtime",
    "delivery",
    "postgres-immediate",
    "worker",
    "redis",
    "beat",
)
SLOW_EVERY = 50  # one lifecycle in this many asks the fake model for a generation longer than the lease
SLOW_MS = 25_000
FOLLOW_EVERY = 10  # one lifecycle in this many is followed on its WebSocket
TERMINAL = ("completed", "failed", "cancelled")

# Short leases and timeouts so a crashed part's work is picked up within seconds, not minutes.
SETTINGS = {
    **PRODUCTION_ON_LOOPBACK,
    "RATE_LIMIT_PER_S": "100000",
    "PROVIDER_TIMEOUT_S": "40",
    "GENERATION_LEASE_S": "10",
    "RECONCILE_AFTER_S": "5",
    "RECONCILE_INTERVAL_S": "1",
    "WEBHOOK_TIMEOUT_S": "2",
    "WEBHOOK_LEASE_GRACE_S": "3",
    "WEBHOOK_REQUEUE_AFTER_S": "5",
    "WEBHOOK_SWEEP_INTERVAL_S": "0.5",
    "WEBHOOK_RETRY_SCHEDULE": "1,1,2,2,3,5,5,10,10,10",
    "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT": "16",
    "CELERY_CONCURRENCY": "8",
}


@dataclass
class Run:
    tag: str = field(default_factory=lambda: uuid.uuid4().hex)
    accepted: dict[int, str] = field(default_factory=dict)
    gave_up: list[int] = field(default_factory=list)
    client_retries: int = 0
    faults: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    followed: dict[str, Created] = field(default_factory=dict)  # lifecycle id → what its 202 said
    finals: dict[str, str] = field(default_factory=dict)  # lifecycle id → the final event its socket got
    killing: set[str] = field(default_factory=set)  # processes the run is killing right now
    exits: list[str] = field(default_factory=list)  # processes that exited without the run killing them


def submit(client: httpx.Client, run: Run, n: int, patience_s: float = 120) -> None:
    """POST one lifecycle until it is answered, with the same Idempotency-Key each time."""
    prompt = f"request {n}" + (" [slow]" if n % SLOW_EVERY == SLOW_EVERY // 2 else "")
    body = {"model": "openai/chaos", "prompt": prompt, "metadata": {"run": run.tag, "n": n}}
    headers = {"Idempotency-Key": f"{run.tag}-{n}"}
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        try:
            response = client.post("/v1/lifecycles", json=body, headers=headers)
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code in (200, 202):
            answer = response.json()
            with run.lock:
                run.accepted[n] = answer["id"]
                if n % FOLLOW_EVERY == 0:
                    run.followed[answer["id"]] = Created(
                        answer["id"], answer["status"], answer["ws_token"], answer["links"]["websocket"]
                    )
            return
        if response is not None and response.status_code < 500 and response.status_code != 429:
            raise RuntimeError(f"request {n} refused: {response.status_code} {response.text}")
        with run.lock:
            run.client_retries += 1
        time.sleep(0.5)
    with run.lock:
        run.gave_up.append(n)


def drive(base_url: str, api_key: str, run: Run, total: int, rate: float) -> None:
    """Offer ``total`` lifecycles at ``rate`` per second from a pool of clients."""
    clients = threading.local()

    def one(n: int) -> None:
        if not hasattr(clients, "client"):
            clients.client = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
        submit(clients.client, run, n)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=64) as pool:
        for n in range(total):
            time.sleep(max(0.0, started + n / rate - time.monotonic()))
            pool.submit(one, n)


def inject(name: str, stack: ServiceProcesses, servers: EmbeddedStack, run: Run, down_s: float | None) -> None:
    """One fault, and the restart after it; records how long the part was gone. With ``down_s`` a
    dependency stays away that long (PostgreSQL stopped rather than restarted)."""
    started = time.monotonic()
    if name in PROCESSES:
        with run.lock:
            run.killing.add(name)
        stack.kill(name)
        time.sleep(1)
        stack.start(name)
        with run.lock:
            run.killing.discard(name)
    elif name.startswith("postgres-") and down_s is None:
        servers.server("postgres").restart(mode=name.removeprefix("postgres-"))
    elif name.startswith("postgres-"):
        servers.server("postgres").stop()
        time.sleep(down_s)
        servers.server("postgres").start()
    elif name == "kafka":
        broker = servers.server("kafka")
        broker.process.kill()  # the broker keeps its log in memory: it comes back empty
        broker.process.wait()
        broker.process = None
        time.sleep(1 if down_s is None else down_s)
        broker.start()
    elif name == "redis":
        redis = servers.server("redis")
        redis.stop()
        time.sleep(3 if down_s is None else down_s)
        redis.start()
    run.faults.append({"fault": name, "at_s": round(started - run_started, 1),
                       "down_s": round(time.monotonic() - started, 1)})  # fmt: skip
    what = "restarted in place" if name.startswith("postgres-") and down_s is None else "killed and back"
    print(f"  fault: {name} {what} after {time.monotonic() - started:.1f}s", flush=True)


def watch_exits(stack: ServiceProcesses, run: Run, done: threading.Event) -> threading.Thread:
    """Note every process that exits without the run killing it (none should: outages are ridden out)."""

    def go() -> None:
        noted: set[int] = set()
        while not done.wait(0.5):
            with run.lock:
                for name, proc in stack.procs.items():
                    if proc.poll() is not None and name not in run.killing and proc.pid not in noted:
                        noted.add(proc.pid)
                        run.exits.append(f"{name} (code {proc.returncode})")

    thread = threading.Thread(target=go, name="exits", daemon=True)
    thread.start()
    return thread


def follow_sockets(base_url: str, api_key: str, run: Run, done: threading.Event) -> threading.Thread:
    """Follow the sampled lifecycles on their WebSockets as a frontend would (reconnecting, resuming with
    ``since=``) and note the final event each one gets."""

    async def follow(client: LifecycleClient, created: Created) -> None:
        try:
            async for event in client.events(created):
                if event["event"].startswith("lifecycle.") and event["event"] in TERMINAL_EVENTS:
                    run.finals[created.id] = event["event"]
        except Exception as exc:
            run.finals.setdefault(created.id, f"error: {exc!r}")

    async def go() -> None:
        started: set[str] = set()
        tasks = []
        async with LifecycleClient(base_url, api_key) as client:
            client.max_reconnects = 200  # a frontend keeps trying through every fault of the run
            while not (done.is_set() and started >= set(run.followed)):
                for lifecycle_id, created in list(run.followed.items()):
                    if lifecycle_id not in started:
                        started.add(lifecycle_id)
                        tasks.append(asyncio.create_task(follow(client, created)))
                await asyncio.sleep(0.2)
            await asyncio.wait(tasks, timeout=SOCKET_PATIENCE_S)

    thread = threading.Thread(target=lambda: asyncio.run(go()), name="sockets", daemon=True)
    thread.start()
    return thread


TERMINAL_EVENTS = {f"lifecycle.{status}" for status in TERMINAL}
SOCKET_PATIENCE_S = 120


def overlapping_calls(calls: dict[str, list[list[float]]]) -> tuple[list[str], int]:
    """Prompts the fake model was asked twice at once (a generation running twice), and how many prompts
    were asked again at all (expected only after the run killed a generator)."""
    overlapping, repeated = [], 0
    for prompt, spans in calls.items():
        if len(spans) < 2:
            continue
        repeated += 1
        spans = sorted((start, end if end is not None else float("inf")) for start, end in spans)
        if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)):
            overlapping.append(prompt)
    return overlapping, repeated


run_started = 0.0


def faults_during(
    duration_s: float, stack, servers, run: Run, faults: list[str], down_s: float | None
) -> threading.Thread:
    def go() -> None:
        gap = duration_s / (len(faults) + 1)
        for i, name in enumerate(faults, start=1):
            time.sleep(max(0.0, run_started + i * gap - time.monotonic()))
            try:
                inject(name, stack, servers, run, down_s)
            except Exception as exc:  # a part that does not come back voids the run
                run.errors.append(f"{name} did not come back: {exc!r}")
                return

    thread = threading.Thread(target=go, name="faults")
    thread.start()
    return thread


class Ledger:
    def __init__(self, database_url: str, tag: str) -> None:
        self.database_url = database_url
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.tag = tag

    def query(self, sql: str, params: list) -> list[tuple]:
        """Run a query, reconnecting once if the run restarted PostgreSQL under this connection."""
        try:
            return self.conn.execute(sql, params).fetchall()
        except psycopg.OperationalError:
            self.conn = psycopg.connect(self.database_url, autocommit=True)
            return self.conn.execute(sql, params).fetchall()

    def rows(self) -> list[tuple]:
        return self.query(
            "SELECT id::text, status, error->>'code', result, "
            "extract(epoch FROM finished_at - created_at)::float8 FROM lifecycle_lifecycle WHERE metadata->>'run' = %s",
            [self.tag],
        )

    def settle(self, timeout: float) -> list[tuple]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows()
            if all(row[1] in TERMINAL for row in rows) or time.monotonic() > deadline:
                return rows
            time.sleep(1)

    def stages(self) -> dict[str, list[float]]:
        """Seconds from acceptance to reaching each status: median and p99 over the run."""
        rows = self.query(
            "WITH t AS (SELECT e.lifecycle_id, e.event, min(e.at) AS at FROM lifecycle_timelineevent e "
            "JOIN lifecycle_lifecycle l ON l.id = e.lifecycle_id WHERE l.metadata->>'run' = %s "
            "AND e.event LIKE 'lifecycle.%%' GROUP BY 1, 2) "
            "SELECT t.event, percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM t.at - c.at)), "
            "percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM t.at - c.at)) "
            "FROM t JOIN t c ON c.lifecycle_id = t.lifecycle_id AND c.event = 'lifecycle.created' "
            "WHERE t.event <> 'lifecycle.created' GROUP BY t.event ORDER BY 2",
            [self.tag],
        )
        return {event: [round(p50, 2), round(p99, 2)] for event, p50, p99 in rows}

    def attempts(self) -> Counter:
        rows = self.query(
            "SELECT a.outcome, count(*) FROM webhooks_deliveryattempt a "
            "JOIN webhooks_delivery d ON d.id = a.delivery_id JOIN lifecycle_lifecycle l ON l.id = d.lifecycle_id "
            "WHERE l.metadata->>'run' = %s GROUP BY a.outcome",
            [self.tag],
        )
        return Counter(dict(rows))


def check(
    run: Run, total: int, rows: list[tuple], webhooks: list[dict], calls: dict[str, list]
) -> tuple[dict, list[str]]:
    by_id = {row[0]: row for row in rows}
    statuses = Counter(row[1] for row in rows)
    failures: list[str] = list(run.errors)
    lost = set(run.accepted.values()) - set(by_id)
    if run.gave_up:
        failures.append(f"{len(run.gave_up)} requests never answered")
    if lost:
        failures.append(f"{len(lost)} accepted lifecycles have no row (lost)")
    if len(rows) != total:
        failures.append(f"{len(rows)} rows for {total} requests (duplicates or losses)")
    stuck = [row for row in rows if row[1] not in TERMINAL]
    if stuck:
        failures.append(f"{len(stuck)} stuck: {Counter(row[1] for row in stuck)}")
    failed = Counter(row[2] for row in rows if row[1] != "completed" and row[1] in TERMINAL)
    if failed:
        failures.append(f"{sum(failed.values())} ended without completing: {dict(failed)}")
    wrong = [row[0] for row in rows if row[1] == "completed" and (row[3] or {}).get("lifecycle_id") != row[0]]
    if wrong:
        failures.append(f"{len(wrong)} completed with another lifecycle's result")

    ids_per_lifecycle: dict[str, set[str]] = defaultdict(set)
    for webhook in webhooks:
        ids_per_lifecycle[webhook["payload"]["data"]["lifecycle_id"]].add(webhook["webhook_id"])
    unsigned = sum(1 for webhook in webhooks if webhook["verified"] != [True])
    if unsigned:
        failures.append(f"{unsigned} webhooks failed signature verification")
    mixed = [lid for lid, ids in ids_per_lifecycle.items() if len(ids) != 1]
    if mixed:
        failures.append(f"{len(mixed)} lifecycles got webhooks under different webhook-ids")
    if set(ids_per_lifecycle) - set(by_id):
        failures.append("webhooks arrived for lifecycles of no request")

    if run.exits:
        failures.append(f"processes exited that the run did not kill: {', '.join(run.exits)}")
    overlapping, repeated = overlapping_calls(calls)
    if overlapping:
        failures.append(f"{len(overlapping)} lifecycles generated twice at once: {overlapping[:5]}")
    slow = [p for p in calls if "[slow]" in p]
    deaf = {lid: run.finals.get(lid) for lid in run.followed if run.finals.get(lid) != f"lifecycle.{by_id[lid][1]}"}
    if deaf:
        failures.append(f"{len(deaf)} of {len(run.followed)} followed sockets missed their final event: "
                        f"{list(deaf.items())[:3]}")  # fmt: skip

    latencies = sorted(row[4] for row in rows if row[4] is not None)
    figures = {
        "requests": total,
        "accepted": len(run.accepted),
        "rows": len(rows),
        "statuses": dict(statuses),
        "client_retries": run.client_retries,
        "webhook_arrivals": len(webhooks),
        "sockets_followed": len(run.followed),
        "sockets_with_final_event": sum(1 for lid in run.followed if lid not in deaf),
        "slow_generations": len(slow),
        "lifecycles_generated_again_after_a_kill": repeated,
        "lifecycles_generated_twice_at_once": len(overlapping),
        "lifecycles_with_repeated_webhook": sum(
            1 for n in Counter(w["payload"]["data"]["lifecycle_id"] for w in webhooks).values() if n > 1
        ),
        "end_to_end_p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "end_to_end_p99_s": round(latencies[int(len(latencies) * 0.99) - 1], 2) if latencies else None,
        "end_to_end_max_s": round(latencies[-1], 2) if latencies else None,
    }
    return figures, failures


def main() -> int:
    global run_started
    unwind_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lifecycles", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=40, help="lifecycles offered per second")
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--settle", type=float, default=240, help="seconds allowed after the load to finish")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--down-s", type=float, default=None,
                        help="keep each dependency away this long (PostgreSQL stopped, not restarted)")  # fmt: skip
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR, help="scratch folder, emptied first")
    args = parser.parse_args()
    random.seed(args.seed)
    faults = [f for f in args.faults.split(",") if f]
    run = Run()

    # A fresh database each run: a previous run's lifecycles would still be settling into this one.
    shutil.rmtree(args.state_dir, ignore_errors=True)
    logs = args.state_dir / "logs"
    logs.mkdir(parents=True)
    with running(EmbeddedStack.on_free_ports(args.state_dir, ephemeral=True)) as servers:
        llm_port, backend_port = free_port(), free_port()
        env = {**servers.environ(), **SETTINGS,
               "OPENAI_BASE_URL": f"http://127.0.0.1:{llm_port}", "OPENAI_API_KEY": "chaos"}  # fmt: skip
        stack, api_key = service_stack(logs, "chaos", **env)
        helpers = [
            _helper(logs / "fake_llm.log", "bench.fake_llm", str(llm_port), "300", str(SLOW_MS)),
            _helper(logs / "customer_backend.log", "tests.fakes.customer_backend", str(backend_port)),
        ]
        backend = f"http://127.0.0.1:{backend_port}"
        try:
            stack.start(*PROCESSES)
            wait_until(lambda: answers(f"{backend}/received/none"), timeout=20, what="customer backend")
            api = httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
            hook = api.post("/v1/webhook-endpoints", json={"url": f"{backend}/hooks/chaos/chaos"})
            hook.raise_for_status()
            httpx.post(f"{backend}/secrets/chaos", json={"secrets": [hook.json()["secret"]]}).raise_for_status()
            ledger = Ledger(env["DATABASE_URL"], run.tag)

            duration = args.lifecycles / args.rate
            print(f"fault run: {args.lifecycles} lifecycles at {args.rate:.0f}/s over {duration:.0f}s; "
                  f"faults: {', '.join(faults)}", flush=True)  # fmt: skip
            run_started = time.monotonic()
            loaded = threading.Event()
            watcher = watch_exits(stack, run, loaded)
            sockets = follow_sockets(stack.base_url, api_key, run, loaded)
            injector = faults_during(duration, stack, servers, run, faults, args.down_s)
            drive(stack.base_url, api_key, run, args.lifecycles, args.rate)
            injector.join()
            load_s = time.monotonic() - run_started
            rows = ledger.settle(args.settle)
            settle_s = time.monotonic() - run_started - load_s
            loaded.set()
            watcher.join()
            sockets.join(SOCKET_PATIENCE_S + 10)
            webhooks = httpx.get(f"{backend}/received/chaos", timeout=30).json()
            calls = httpx.get(f"http://127.0.0.1:{llm_port}/calls", timeout=30).json()
            figures, failures = check(run, args.lifecycles, rows, webhooks, calls)
            figures |= {"load_s": round(load_s, 1), "settle_s": round(settle_s, 1),
                        "reached_s_p50_p99": ledger.stages(), "webhook_attempts": dict(ledger.attempts()),
                        "faults": run.faults}  # fmt: skip
        finally:
            for helper in helpers:
                helper.terminate()
            stack.stop_all()

    print(json.dumps(figures, indent=2))
    if failures:
        print("ledger: FAILED\n- " + "\n- ".join(failures))
        print(f"(process logs in {logs})")
        return 1
    print(f"ledger: balanced: {len(rows)} lifecycles, every one completed, none lost, none stuck, "
          f"webhook-ids stable across {figures['webhook_arrivals']} arrivals, no process exited unless killed, "
          f"none generated twice at once, {figures['sockets_with_final_event']} of {len(run.followed)} "
          "followed sockets got their final event")  # fmt: skip
    return 0


def _helper(log_path: Path, module: str, *args: str) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", module, *args], cwd=PROJECT_DIR, stdout=log, stderr=log)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
