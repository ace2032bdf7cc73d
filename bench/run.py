"""The benchmark runner: one command starts the stack on the embedded servers, drives load from a separate
process on loopback, and prints one table per scenario (median of the runs, with min and max).

    .venv/bin/python -m bench.run                                  # every scenario, 3 runs (make bench)
    .venv/bin/python -m bench.run --scenarios burst,overhead,accept --runs 5
    .venv/bin/python -m bench.run --scenarios cpu --env KAFKA_FETCH_WAIT_MAX_MS=100   # compare a setting

Scenarios (docs/performance.md has the figures and what each target needs), run in this order, each once the
stack is quiet (no lifecycle of an earlier scenario still moving):
- burst: the product's claim, side by side in one run. A burst of N requests against the same fake model
  (8 s latency): the naive synchronous endpoint (`bench/baseline.py` under gunicorn, sync workers) and the
  lifecycle API (202, then Kafka, generators, ...). Accepted, timed out, completed, time to drain.
- overhead: echo at 0 ms, accept → final WebSocket message, direct and through webhook + callback, at a
  light and a heavy rate; then the sustained completion rate.
- cpu: CPU milliseconds per lifecycle in each process (bench/cpu.py), direct and through a webhook, net of
  the same stack idle.
- flight: 10,000 lifecycles in flight against the 8 s model; time to drain and generator RSS.
- sockets: 5,000 sockets on the realtime process; final-message lateness; RSS over connect/close cycles.
- webhooks: deliveries per second to a loopback receiver.
- fairness: noisy neighbour; one project floods (800 at once), another trickles (20 at 2/s), 64 generations
  at a time against the 8 s model: the trickle's accept → finished against the model's own latency.
- limits: 2,000 at once to a model the provider limits to 600 calls/min (429 past it), configured the same
  in PROVIDER_LIMITS: the provider's 429s and the rate the burst drains at.
- endpoints: one slow endpoint (5 s per answer) beside a fast one: the fast one's delivery p99, alone and
  beside.
- relay: the relay's ceiling (one leader): the outbox of 10,000 lifecycles, accepted while it was paused,
  drained by the relay alone.
- accept: POST /v1/lifecycles closed-loop with the pipeline paused, on the web process (gunicorn) and, for
  comparison, on daphne and uvicorn serving the same project; then with the pipeline running, and at 500/s.

Every run keeps a ledger: lifecycles accepted == completed + failed + in flight at the end, else it is void.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import psycopg

from bench import cpu
from bench.environment import PRODUCTION_ON_LOOPBACK, answers
from orchestrator.embedded import DEFAULT_STATE_DIR, PROJECT_DIR, EmbeddedStack, free_port, running, wait_until
from orchestrator.process import unwind_on_sigterm
from tests.processes import PROCFILE, ServiceProcesses

STATE_DIR = DEFAULT_STATE_DIR / "bench"
LIMITED_RPM = 600  # the fake provider's limit on its rate-limited model (scenario limits)
GUNICORN_WORKERS = 4


def client(name: str, *args: str) -> dict:
    """Run the load client ``bench.<name>`` in its own process; it prints one JSON object."""
    out = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *args], cwd=PROJECT_DIR, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


load = functools.partial(client, "load")
overhead = functools.partial(client, "overhead")
sockets = functools.partial(client, "sockets")


def create_project(name: str) -> str:
    """A project in the bench's database; returns its API key."""
    created = subprocess.run([sys.executable, "manage.py", "createproject", name], cwd=PROJECT_DIR,
                             check=True, capture_output=True, text=True)  # fmt: skip
    return json.loads(created.stdout)["api_key"]


class Ledger:
    """Counts a run's lifecycles straight from the database."""

    def __init__(self, database_url: str) -> None:
        self.conn = psycopg.connect(database_url, autocommit=True)

    def statuses(self, tag: str) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT status, count(*) FROM lifecycle_lifecycle WHERE metadata->>'run' = %s GROUP BY status", [tag]
        ).fetchall()
        return dict(rows)

    def ids(self, tag: str) -> set[str]:
        rows = self.conn.execute("SELECT id::text FROM lifecycle_lifecycle WHERE metadata->>'run' = %s", [tag])
        return {row[0] for row in rows.fetchall()}

    def wait_deliveries(self, tag: str, expected: int, timeout: float) -> None:
        """Until every lifecycle of the run has its delivery row (generated, waiting for a worker)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._deliveries(tag) < expected:
            time.sleep(0.5)

    def _deliveries(self, tag: str, status: str | None = None) -> int:
        query = (
            "SELECT count(*) FROM webhooks_delivery d JOIN lifecycle_lifecycle l ON l.id = d.lifecycle_id "
            "WHERE l.metadata->>'run' = %s"
        )
        params = [tag]
        if status:
            query += " AND d.status = %s"
            params.append(status)
        return self.conn.execute(query, params).fetchone()[0]

    def delivered(self, tag: str) -> int:
        return self._deliveries(tag, "succeeded")

    def attempt_times(self, tag: str) -> dict[str, float]:
        """p50 in ms of the run's attempts: the HTTP exchange itself, and claim → recorded (how long each
        holds one of its endpoint's in-flight slots)."""
        row = self.conn.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a.latency_ms), "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.delivered_at - a.started_at) * 1000) "
            "FROM webhooks_deliveryattempt a JOIN webhooks_delivery d ON d.id = a.delivery_id "
            "JOIN lifecycle_lifecycle l ON l.id = d.lifecycle_id "
            "WHERE l.metadata->>'run' = %s AND a.outcome = 'succeeded'",
            [tag],
        ).fetchone()
        return {"attempt_http_p50_ms": round(row[0] or 0, 1), "slot_held_p50_ms": round(row[1] or 0, 1)}

    # Where a lifecycle's time goes, from the step timestamps each transition records (docs/performance.md).
    STEPS = {
        "to_claimed": "generating_at - created_at",  # outbox → relay → Kafka → generator claims it
        "generating": "coalesce(delivering_at, finished_at) - generating_at",  # echo at 0 ms: DB work only
        "to_delivered": "awaiting_callback_at - delivering_at",  # Celery queue → claim → signed POST → 2xx
        "to_called_back": "finished_at - awaiting_callback_at",  # backend's callback POST → completed
        "accept_to_finished": "finished_at - created_at",
    }

    def step_percentiles(self, tag: str) -> dict[str, float]:
        """p50 and p99 in ms of each of :attr:`STEPS` over a run's completed lifecycles."""
        columns = ", ".join(
            f"percentile_cont({q}) WITHIN GROUP (ORDER BY extract(epoch FROM {expr}) * 1000)"
            for expr in self.STEPS.values()
            for q in (0.5, 0.99)
        )
        # The columns come from STEPS only; the tag is a parameter.
        query = f"SELECT {columns} FROM lifecycle_lifecycle WHERE metadata->>'run' = %s AND status = 'completed'"  # noqa: S608
        row = self.conn.execute(query, [tag]).fetchone()
        names = [f"{step}_{q}_ms" for step in self.STEPS for q in ("p50", "p99")]
        return {name: round(value, 1) for name, value in zip(names, row, strict=True) if value is not None}

    def finished_percentiles(self, tag: str) -> dict[str, float]:
        """Seconds from accept to finished of a run's lifecycles: p50, p95 and the slowest."""
        row = self.conn.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s), percentile_cont(0.95) WITHIN GROUP (ORDER BY s), "
            "max(s) FROM (SELECT extract(epoch FROM finished_at - created_at) AS s FROM lifecycle_lifecycle "
            "WHERE metadata->>'run' = %s AND finished_at IS NOT NULL) t",
            [tag],
        ).fetchone()
        return {name: round(float(value or 0), 2) for name, value in zip(("p50_s", "p95_s", "max_s"), row, strict=True)}

    def delivery_percentiles(self, tag: str) -> dict[str, float]:
        """ms from a delivery's creation (its lifecycle generated) to its delivery, p50 and p99, for a run."""
        row = self.conn.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s), percentile_cont(0.99) WITHIN GROUP (ORDER BY s) "
            "FROM (SELECT extract(epoch FROM d.delivered_at - d.created_at) * 1000 AS s FROM webhooks_delivery d "
            "JOIN lifecycle_lifecycle l ON l.id = d.lifecycle_id WHERE l.metadata->>'run' = %s "
            "AND d.delivered_at IS NOT NULL) t",
            [tag],
        ).fetchone()
        return {"p50": round(float(row[0] or 0), 1), "p99": round(float(row[1] or 0), 1)}

    def outbox_backlog(self) -> int:
        return self.conn.execute("SELECT count(*) FROM lifecycle_outboxmessage WHERE published_at IS NULL").fetchone()[
            0
        ]

    def redriven(self, tag: str) -> int:
        """The run's lifecycles the reconciler published again (it took them for lost)."""
        return self.conn.execute(
            "SELECT count(*) FROM lifecycle_lifecycle WHERE metadata->>'run' = %s AND redrive_count > 0", [tag]
        ).fetchone()[0]

    def drain_s(self, tag: str) -> float | None:
        (value,) = self.conn.execute(
            "SELECT extract(epoch FROM max(finished_at) - min(created_at)) FROM lifecycle_lifecycle "
            "WHERE metadata->>'run' = %s",
            [tag],
        ).fetchone()
        return float(value) if value is not None else None

    def quiet(self, timeout: float) -> float:
        """Wait until no lifecycle of any run is still moving (a scenario that stops its clock may leave some
        in flight), so the next scenario does not measure the last one's backlog. Returns the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            (moving,) = self.conn.execute(
                "SELECT count(*) FROM lifecycle_lifecycle WHERE status IN ('pending', 'generating', 'delivering')"
            ).fetchone()
            if not moving:
                break
            time.sleep(0.5)
        return round(time.monotonic() - started, 1)

    def settle(self, tag: str, expected: int, timeout: float) -> dict[str, int]:
        """Wait until every lifecycle of the run is terminal (or the timeout), and return the counts."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.statuses(tag)
            terminal = sum(counts.get(s, 0) for s in ("completed", "failed", "cancelled"))
            if terminal >= expected or time.monotonic() > deadline:
                return counts
            time.sleep(0.2)


def balanced(answered_202: list[str], counts: dict[str, int], ledger: Ledger, tag: str) -> bool:
    """Every 202 the client saw is a row, and every row is completed, failed or still in flight: nothing
    lost. (A request the client gave up on may still have been accepted: it is a row, counted too.)"""
    rows = ledger.ids(tag)
    return set(answered_202) <= rows and sum(counts.values()) == len(rows)


def burst_run(base: str, baseline: str, key: str, ledger: Ledger, args) -> dict:
    sync = load("burst", f"{baseline}/bench/sync-generate", key, "--n", str(args.burst),
                "--timeout", str(args.client_timeout), "--body", json.dumps("hello"))  # fmt: skip
    tag = uuid.uuid4().hex
    body = {"model": "openai/bench", "prompt": "hello", "metadata": {"run": tag}}
    started = time.monotonic()
    event = load("burst", f"{base}/v1/lifecycles", key, "--n", str(args.burst),
                 "--timeout", str(args.client_timeout), "--body", json.dumps(body))  # fmt: skip
    accepted = event["outcomes"].get("202", 0)
    counts = ledger.settle(tag, accepted, timeout=args.latency_ms / 1000 * 4 + 60)
    return {
        "sync_completed": sync["outcomes"].get("200", 0),
        "sync_timed_out": sync["outcomes"].get("timeout", 0),
        "sync_drain_s": sync["last_answer_s"],
        "sync_p50_ms": sync["p50_ms"],
        "event_accepted": accepted,
        "event_accept_p99_ms": event["p99_ms"],
        "event_completed": counts.get("completed", 0),
        "event_failed": counts.get("failed", 0),
        "event_drain_s": ledger.drain_s(tag),
        "event_wall_s": time.monotonic() - started,
        "ledger_ok": balanced(event["ids"], counts, ledger, tag),
    }


PIPELINE = ("relay", "generator", "delivery", "worker", "beat")
# The order they run in: overhead and cpu want a stack that has carried little (the embedded broker's CPU per
# message grows with its in-memory log: docs/embedded.md), accept leaves the biggest backlog.
ALL_SCENARIOS = (
    "burst",
    "overhead",
    "cpu",
    "flight",
    "sockets",
    "webhooks",
    "accept",
    "fairness",
    "limits",
    "relay",
    "endpoints",
)


def accept_run(stack: ServiceProcesses, others: dict[str, str], key: str, ledger: Ledger, args) -> dict:
    """The accept path alone: the pipeline behind it is paused (SIGSTOP; the outbox holds what is accepted,
    and drains once it resumes), so on this 2-core machine the API gets the CPU the pipeline would take.
    Closed-loop on the web process (gunicorn), then on other servers of the same Django project: daphne
    (the realtime process's server) and uvicorn, each serving the whole API. Then the whole pipeline
    running: closed-loop, and at a fixed rate."""
    base, seconds = stack.base_url, str(args.accept_seconds)
    healthz = load("closed", f"{base}/healthz", key, "--seconds", seconds, "--concurrency", "64")
    tag = uuid.uuid4().hex
    body = json.dumps({"model": "echo/bench", "prompt": "hi", "metadata": {"run": tag}})

    def closed_loop(url: str) -> dict:
        return load("closed", f"{url}/v1/lifecycles", key, "--seconds", seconds, "--concurrency", "64", "--body", body)

    phases: dict[str, dict] = {}
    for name in PIPELINE:
        stack.signal(name, signal.SIGSTOP)
    try:
        for name, url in {"web": base, **others}.items():
            phases[name] = closed_loop(url)
    finally:
        for name in PIPELINE:
            stack.signal(name, signal.SIGCONT)
    ledger.settle(tag, sum(p["outcomes"].get("202", 0) for p in phases.values()), timeout=180)
    phases["pipeline"] = closed_loop(base)
    rate = load("rate", f"{base}/v1/lifecycles", key, "--seconds", seconds,
                "--rate", str(args.rate), "--concurrency", "256", "--body", body)  # fmt: skip
    runs = [*phases.values(), rate]
    counts = ledger.settle(tag, sum(run["outcomes"].get("202", 0) for run in runs), timeout=600)
    closed = phases["web"]
    figures = {
        "healthz_per_s": healthz["rate_per_s"],
        "accept_per_s": closed["rate_per_s"],
        "accept_vs_healthz": closed["rate_per_s"] / healthz["rate_per_s"],
        "closed_p50_ms": closed["p50_ms"],
        "closed_p99_ms": closed["p99_ms"],
    }
    for name in others:
        figures[f"{name}_accept_per_s"] = phases[name]["rate_per_s"]
        figures[f"{name}_p99_ms"] = phases[name]["p99_ms"]
        figures[f"{name}_vs_web"] = phases[name]["rate_per_s"] / closed["rate_per_s"] if closed["rate_per_s"] else None
    return figures | {
        "with_pipeline_per_s": phases["pipeline"]["rate_per_s"],
        "with_pipeline_p99_ms": phases["pipeline"]["p99_ms"],
        "rate_achieved_per_s": rate["rate_per_s"],
        "rate_p50_ms": rate["p50_ms"],
        "rate_p99_ms": rate["p99_ms"],
        "errors": {k: v for run in runs for k, v in run["outcomes"].items() if k != "202"},
        "completed_after": counts.get("completed", 0),
        "ledger_ok": balanced([i for run in runs for i in run["ids"]], counts, ledger, tag),
    }


def overhead_run(base: str, key: str, ledger: Ledger, args) -> dict:
    """Echo at 0 ms; accept → final WebSocket message, direct and through a loopback backend that calls back
    at once (the overhead project has an endpoint, so its lifecycles default to webhook + callback). At each
    of ``--overhead-rates``: a light one shows the orchestration's own latency, a heavy one what queueing adds
    once the two cores are busy. Then closed-loop through the webhook for the sustained completion rate."""
    seconds = str(args.accept_seconds)
    bodies = {
        "direct": {"model": "echo/bench", "prompt": "hi", "delivery": {"mode": "direct"}},
        "webhook": {"model": "echo/bench", "prompt": "hi"},
    }
    figures: dict = {}
    runs: dict[str, dict] = {}  # run tag → what the client saw
    light = args.overhead_rates.split(",")[0]
    for rate in args.overhead_rates.split(","):
        for path, body in bodies.items():
            tag = uuid.uuid4().hex
            runs[tag] = overhead("rate", base, key, "--rate", rate, "--seconds", seconds,
                                 "--body", json.dumps(body | {"metadata": {"run": tag}}))  # fmt: skip
            figures[f"{path}_at_{rate}_p50_ms"] = runs[tag]["p50_ms"]
            figures[f"{path}_at_{rate}_p99_ms"] = runs[tag]["p99_ms"]
            if rate == light:
                ledger.settle(tag, len(runs[tag]["ids"]), timeout=60)
                steps = ledger.step_percentiles(tag)
                figures |= {f"{path}_at_{rate}_{name}": value for name, value in steps.items()}
    tag = uuid.uuid4().hex
    runs[tag] = overhead("closed", base, key, "--concurrency", "64", "--seconds", seconds,
                         "--body", json.dumps(bodies["webhook"] | {"metadata": {"run": tag}}))  # fmt: skip
    ledger_ok = True
    for run_tag, run in runs.items():
        counts = ledger.settle(run_tag, len(run["ids"]), timeout=120)
        ledger_ok &= balanced(run["ids"], counts, ledger, run_tag)
    return figures | {
        "sustained_completed_per_s": runs[tag]["completed_per_s"],
        "sustained_p50_ms": runs[tag]["p50_ms"],
        "errors": {k: v for run in runs.values() for k, v in run["outcomes"].items() if k != "lifecycle.completed"},
        "ledger_ok": ledger_ok,
    }


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its children (the Procfile's shell runs the real process)."""
    total = 0
    for task in [pid, *(int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]:
        for line in Path(f"/proc/{task}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def flight_run(stack: ServiceProcesses, api: str, key: str, ledger: Ledger, args) -> dict:
    """N lifecycles in flight at once against the slow model: accepted while the relay is paused (the requests
    wait in the outbox), then released together; time until all are done, and the generator's peak RSS."""
    tag = uuid.uuid4().hex
    body = json.dumps({"model": "openai/bench", "prompt": "hello", "metadata": {"run": tag}})
    stack.signal("relay", signal.SIGSTOP)
    try:
        accepted = load("burst", f"{api}/v1/lifecycles", key, "--n", str(args.flight),
                        "--timeout", "600", "--body", body)  # fmt: skip
    finally:
        stack.signal("relay", signal.SIGCONT)
    released = time.monotonic()
    peak, counts = 0.0, {}
    while time.monotonic() - released < args.latency_ms / 1000 * 6 + 60:
        peak = max(peak, rss_mib(stack.procs["generator"].pid))
        counts = ledger.statuses(tag)
        if sum(counts.get(s, 0) for s in ("completed", "failed", "cancelled")) >= accepted["outcomes"].get("202", 0):
            break
        time.sleep(0.25)
    return {
        "in_flight": accepted["outcomes"].get("202", 0),
        "all_done_s": round(time.monotonic() - released, 2),
        "completed": counts.get("completed", 0),
        "failed": counts.get("failed", 0),
        "generator_peak_rss_mib": round(peak, 1),
        "ledger_ok": balanced(accepted["ids"], counts, ledger, tag),
    }


def restart_generator(stack: ServiceProcesses, ledger: Ledger, key: str, **env: str) -> None:
    """The generator again with ``env``, ready: it has joined its group and run a lifecycle."""
    stack.stop("generator")
    stack.env.update(env)
    stack.start("generator")
    warm = uuid.uuid4().hex
    load("burst", f"{stack.base_url}/v1/lifecycles", key, "--n", "1",
         "--body", json.dumps({"model": "echo/warm", "prompt": "x", "metadata": {"run": warm}}))  # fmt: skip
    ledger.settle(warm, 1, timeout=60)


def fairness_run(stack: ServiceProcesses, keys: dict[str, str], ledger: Ledger, args) -> dict:
    """Noisy neighbour (issue #20's scenario): one generator with ``--fair-slots`` generations at a time and
    the 8 s model; project A submits ``--flood`` at once, then project B ``--trickle`` at ``--trickle-rate``/s.
    B's accept → finished against the model's own latency: in Kafka order B would wait for A's backlog
    (flood * latency / slots), in turn it waits for one slot to free."""
    url = f"{stack.base_url}/v1/lifecycles"
    restart_generator(stack, ledger, keys["flood"], GENERATOR_CONCURRENCY=str(args.fair_slots))
    try:
        flood, trickle = uuid.uuid4().hex, uuid.uuid4().hex
        body = {"model": "openai/bench", "prompt": "hello"}
        a = load("burst", url, keys["flood"], "--n", str(args.flood), "--timeout", "120",
                 "--body", json.dumps(body | {"metadata": {"run": flood}}))  # fmt: skip
        b = load("rate", url, keys["trickle"], "--seconds", str(args.trickle / args.trickle_rate),
                 "--rate", str(args.trickle_rate), "--concurrency", "4",
                 "--body", json.dumps(body | {"metadata": {"run": trickle}}))  # fmt: skip
        b_accepted, a_accepted = b["outcomes"].get("202", 0), a["outcomes"].get("202", 0)
        b_counts = ledger.settle(trickle, b_accepted, timeout=300)
        b_times = ledger.finished_percentiles(trickle)
        backlog_s = a_accepted * args.latency_ms / 1000 / args.fair_slots
        a_counts = ledger.settle(flood, a_accepted, timeout=backlog_s * 2 + 120)
    finally:
        restart_generator(stack, ledger, keys["flood"], GENERATOR_CONCURRENCY=os.environ["GENERATOR_CONCURRENCY"])
    return {
        "flood": a_accepted,
        "trickle": b_accepted,
        "trickle_p50_s": b_times["p50_s"],
        "trickle_p95_s": b_times["p95_s"],
        "trickle_max_s": b_times["max_s"],
        "trickle_p95_over_model": round(b_times["p95_s"] / (args.latency_ms / 1000), 2),
        "flood_drain_s": round(float(ledger.drain_s(flood) or 0), 1),
        "flood_backlog_s": round(backlog_s, 1),
        "failed": a_counts.get("failed", 0) + b_counts.get("failed", 0),
        "redriven": ledger.redriven(flood) + ledger.redriven(trickle),
        "ledger_ok": balanced(a["ids"], a_counts, ledger, flood) and balanced(b["ids"], b_counts, ledger, trickle),
    }


def limits_run(stack: ServiceProcesses, llm: str, key: str, ledger: Ledger, args) -> dict:
    """A burst of ``--limited`` against a model the provider limits to ``BENCH_LIMITED_RPM`` calls a minute
    (bench/fake_llm.py, 429 past it), configured with the same limit (``PROVIDER_LIMITS``): how many 429s
    reached the provider, and the rate the burst drained at against the limit."""
    import httpx

    tag = uuid.uuid4().hex
    httpx.get(f"{llm}/limited?reset", timeout=5).raise_for_status()
    body = json.dumps({"model": "openai/limited", "prompt": "[limited][fast] hello", "metadata": {"run": tag}})
    accepted = load("burst", f"{stack.base_url}/v1/lifecycles", key, "--n", str(args.limited),
                    "--timeout", "120", "--body", body)  # fmt: skip
    n = accepted["outcomes"].get("202", 0)
    counts = ledger.settle(tag, n, timeout=n / LIMITED_RPM * 60 * 1.5 + 120)
    seen = httpx.get(f"{llm}/limited", timeout=5).json()
    span_s = (seen["last_answered"] or 0) - (seen["first_answered"] or 0)
    per_min = (seen["answered"] - 1) / span_s * 60 if span_s > 0 else 0.0
    return {
        "burst": n,
        "completed": counts.get("completed", 0),
        "failed": counts.get("failed", 0),
        "provider_429s": seen["refused"],
        "drained_per_min": round(per_min, 1),
        "limit_per_min": LIMITED_RPM,
        "drain_over_limit": round(per_min / LIMITED_RPM, 3),
        "all_done_s": round(float(ledger.drain_s(tag) or 0), 1),
        "redriven": ledger.redriven(tag),
        "ledger_ok": balanced(accepted["ids"], counts, ledger, tag),
    }


def slow_endpoint_run(stack: ServiceProcesses, keys: dict[str, str], ledger: Ledger, args) -> dict:
    """One slow endpoint (5 s per answer) beside a fast one (#18): the fast endpoint's deliveries at
    ``--endpoint-rate``/s for ``--endpoint-seconds``, alone, then again while the slow endpoint is offered
    ``--slow-rate``/s (more than its attempts in flight can take: its backlog grows), then alone again. The
    fast one's delivery latency (delivery created → delivered), p50 and p99, beside against alone (the mean of
    the two); the slow one is held to ``WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT`` attempts at a time."""
    url = f"{stack.base_url}/v1/lifecycles"

    def body(tag: str) -> str:
        return json.dumps({"model": "echo/bench", "prompt": "hi", "delivery": {"mode": "webhook"},
                           "metadata": {"run": tag}})  # fmt: skip

    def fast(tag: str) -> dict:
        return load("rate", url, keys["fast"], "--seconds", str(args.endpoint_seconds),
                    "--rate", str(args.endpoint_rate), "--body", body(tag))  # fmt: skip

    # Alone, beside, alone again: the stack drifts over a run (the embedded broker's log grows, the host is
    # shared), so beside is compared with the two alones around it, not with one before it.
    before, beside, after, slow = (uuid.uuid4().hex for _ in range(4))
    a = fast(before)
    ledger.settle(before, a["outcomes"].get("202", 0), timeout=120)
    with ThreadPoolExecutor(2) as pool:
        slow_load = pool.submit(
            load, "rate", url, keys["slow"], "--seconds", str(args.endpoint_seconds),
            "--rate", str(args.slow_rate), "--body", body(slow),
        )  # fmt: skip
        b = fast(beside)
        s = slow_load.result()
    ledger.settle(beside, b["outcomes"].get("202", 0), timeout=120)
    slow_n = s["outcomes"].get("202", 0)
    ledger.settle(slow, slow_n, timeout=slow_n * 5 / 8 + 120)  # the slow backlog gone before the last alone
    c = fast(after)
    ledger.settle(after, c["outcomes"].get("202", 0), timeout=120)
    first, beside_ms, last = (ledger.delivery_percentiles(tag) for tag in (before, beside, after))
    alone_p50, alone_p99 = (first["p50"] + last["p50"]) / 2, (first["p99"] + last["p99"]) / 2
    return {
        "fast_deliveries": sum(run["outcomes"].get("202", 0) for run in (a, b, c)),
        "fast_alone_p50_ms": round(alone_p50, 1),
        "fast_alone_p99_ms": round(alone_p99, 1),
        "fast_alone_p99_first_last_ms": f"{first['p99']}/{last['p99']}",
        "fast_beside_slow_p50_ms": beside_ms["p50"],
        "fast_beside_slow_p99_ms": beside_ms["p99"],
        "p99_beside_over_alone": round(beside_ms["p99"] / alone_p99, 2) if alone_p99 else None,
        "slow_deliveries": slow_n,
        "slow_delivered": ledger.delivered(slow),
        "ledger_ok": all(
            balanced(run["ids"], ledger.statuses(tag), ledger, tag)
            for run, tag in ((a, before), (b, beside), (c, after), (s, slow))
        ),
    }


def relay_run(stack: ServiceProcesses, key: str, ledger: Ledger, args) -> dict:
    """The relay's ceiling (it publishes from one leader, so it does not scale out): ``--relay-backlog``
    lifecycles accepted with the relay and the generator paused (two outbox messages each: the created
    event and the generation request), then the relay alone released; messages published per second until
    the outbox is empty. The generator is released after, and runs them."""
    tag = uuid.uuid4().hex
    body = json.dumps({"model": "echo/bench", "prompt": "hi", "metadata": {"run": tag}})
    stack.signal("generator", signal.SIGSTOP)
    try:
        stack.signal("relay", signal.SIGSTOP)
        try:
            accepted = load("burst", f"{stack.base_url}/v1/lifecycles", key, "--n", str(args.relay_backlog),
                            "--timeout", "600", "--body", body)  # fmt: skip
            backlog = ledger.outbox_backlog()
        finally:
            stack.signal("relay", signal.SIGCONT)
        released = time.monotonic()
        left = backlog
        while left and time.monotonic() - released < 600:
            time.sleep(0.05)
            left = ledger.outbox_backlog()
        drained_s = time.monotonic() - released
    finally:
        stack.signal("generator", signal.SIGCONT)
    n = accepted["outcomes"].get("202", 0)
    counts = ledger.settle(tag, n, timeout=300)
    return {
        "messages": backlog,
        "drained_s": round(drained_s, 2),
        "messages_per_s": round(backlog / drained_s, 1),
        "lifecycles_per_s": round(backlog / 2 / drained_s, 1),
        "ledger_ok": balanced(accepted["ids"], counts, ledger, tag),
    }


def webhooks_run(stack: ServiceProcesses, servers: EmbeddedStack, key: str, ledger: Ledger, args) -> dict:
    """Webhook deliveries per second to a fast loopback receiver: N deliveries queued while the delivery
    process is paused, then released; attempts per second until all are delivered. With
    ``--webhook-endpoints`` K > 1, the deliveries are spread over K endpoints of the receiver (one endpoint's
    in-flight cap no longer bounds the rate).

    Also where the CPU went while they were delivered, per delivery and by process (``cpu_*_ms``; what each
    delivery sets off counts too: the lifecycle's move to awaiting its callback goes through the outbox,
    relay and broker), and the receiver's own apart (``receiver_cpu_ms``): on these two shared cores,
    the rate is what they divide by."""
    tag = uuid.uuid4().hex
    endpoints = args.webhook_endpoint_ids

    def body(endpoint_id: str) -> str:
        delivery = {"mode": "webhook", "endpoint_id": endpoint_id}
        return json.dumps({"model": "echo/bench", "prompt": "hi", "delivery": delivery, "metadata": {"run": tag}})

    stack.signal("delivery", signal.SIGSTOP)
    try:
        share = args.webhooks // len(endpoints)
        with ThreadPoolExecutor(len(endpoints)) as pool:
            loads = list(pool.map(
                lambda endpoint_id: load("burst", f"{stack.base_url}/v1/lifecycles", key, "--n", str(share),
                                         "--timeout", "600", "--body", body(endpoint_id)),
                endpoints,
            ))  # fmt: skip
        accepted = sum(run["outcomes"].get("202", 0) for run in loads)
        ledger.wait_deliveries(tag, accepted, timeout=300)
        receiver = psutil.Process(args.backend_pid)
        before, receiver_before = cpu.cpu_seconds(stack, servers), cpu.process_seconds(receiver)
    finally:
        stack.signal("delivery", signal.SIGCONT)
    released = time.monotonic()
    delivered = 0
    while time.monotonic() - released < 600 and delivered < accepted:
        delivered = ledger.delivered(tag)
        time.sleep(0.2)
    elapsed = time.monotonic() - released
    spent = cpu.per_group(before, cpu.cpu_seconds(stack, servers))
    per = max(delivered, 1) / 1000
    cpu_ms = {
        f"cpu_{group}_ms": round(seconds / per, 2) for group, seconds in sorted(spent.items(), key=lambda i: -i[1])
    }
    counts = ledger.settle(tag, accepted, timeout=60)
    return {
        "endpoints": len(endpoints),
        "deliveries": delivered,
        "delivered_in_s": round(elapsed, 2),
        "deliveries_per_s": round(delivered / elapsed, 1),
        **ledger.attempt_times(tag),
        "cores_busy": round(sum(spent.values()) / elapsed, 2),
        "cpu_total_ms": round(sum(spent.values()) / per, 2),
        **cpu_ms,
        "receiver_cpu_ms": round((cpu.process_seconds(receiver) - receiver_before) / per, 2),
        "ledger_ok": balanced([i for run in loads for i in run["ids"]], counts, ledger, tag),
    }


def cpu_run(stack: ServiceProcesses, servers: EmbeddedStack, keys: dict[str, str], ledger: Ledger, args) -> dict:
    """CPU per lifecycle, by process (bench/cpu.py), at a fixed rate the stack keeps up with, each lifecycle
    watched on its WebSocket to its final message as a frontend would (bench/overhead.py), on a model
    answering at once over HTTP: direct, then through webhook + callback to a backend that calls back at
    once. Then, side by side, the naive Celery + Redis pipeline a user would otherwise write
    (bench/baseline.py: the POST enqueues a task that calls the same model and posts the result to a
    webhook). The window runs from the first request until every lifecycle of the run is over.

    Also side by side, the same stack idle for ``--cpu-seconds``: what each process burns doing nothing
    (polling Kafka, heartbeats, sweeps) is reported as cores busy, and taken out of the per-lifecycle figures
    (``_net_ms``), which are what one more lifecycle costs."""
    before, started = cpu.cpu_seconds(stack, servers), time.monotonic()
    time.sleep(args.cpu_seconds)
    idle_wall = time.monotonic() - started
    idle = {
        group: seconds / idle_wall for group, seconds in cpu.per_group(before, cpu.cpu_seconds(stack, servers)).items()
    }
    figures: dict = {"ledger_ok": True, "idle_cores_busy": round(sum(idle.values()), 3)}
    for group, cores in sorted(idle.items(), key=lambda item: -item[1]):
        figures[f"idle_{group}_cores"] = round(cores, 3)

    def measure(mode: str, run) -> None:
        with cpu.profiled(stack, servers, args.profile, mode):
            before, started = cpu.cpu_seconds(stack, servers), time.monotonic()
            done, ok = run()
            spent = cpu.per_group(before, cpu.cpu_seconds(stack, servers))
        wall = time.monotonic() - started
        net = {group: seconds - idle.get(group, 0.0) * wall for group, seconds in spent.items()}
        per = max(done, 1) / 1000
        figures[f"{mode}_lifecycles"] = done
        figures[f"{mode}_cores_busy"] = round(sum(spent.values()) / wall, 2)
        figures[f"{mode}_total_ms"] = round(sum(spent.values()) / per, 2)
        figures[f"{mode}_net_ms"] = round(sum(net.values()) / per, 2)
        for group, seconds in sorted(net.items(), key=lambda item: -item[1]):
            figures[f"{mode}_{group}_net_ms"] = round(seconds / per, 2)
        figures["ledger_ok"] &= ok

    def lifecycles(mode: str):
        tag = uuid.uuid4().hex
        body = {"model": "openai/bench", "prompt": f"{FAST} hi", "delivery": {"mode": mode}, "metadata": {"run": tag}}
        sent = overhead("rate", stack.base_url, keys[mode], "--rate", str(args.cpu_rate),
                        "--seconds", str(args.cpu_seconds), "--body", json.dumps(body))  # fmt: skip
        counts = ledger.settle(tag, len(sent["ids"]), timeout=300)
        figures[f"{mode}_final_message_p50_ms"] = sent["p50_ms"]
        return len(sent["ids"]), balanced(sent["ids"], counts, ledger, tag) and sent["completed"] == len(sent["ids"])

    def naive():
        scenario = f"naive-{uuid.uuid4().hex}"
        body = {"prompt": f"{FAST} hi", "webhook_url": f"{args.backend}/hooks/{scenario}/silent"}
        sent = load("rate", f"{stack.base_url}/bench/naive-enqueue", keys["direct"], "--seconds",
                    str(args.cpu_seconds), "--rate", str(args.cpu_rate), "--concurrency", "256",
                    "--body", json.dumps(body))  # fmt: skip
        accepted = sent["outcomes"].get("202", 0)
        delivered = poll_count(f"{args.backend}/received/{scenario}", accepted, timeout=300)
        return delivered, delivered == accepted

    measure("direct", lambda: lifecycles("direct"))
    measure("webhook_callback", lambda: lifecycles("webhook_callback"))
    measure("naive_celery", naive)
    for mode in ("direct", "webhook_callback"):
        figures[f"{mode}_to_naive_ratio"] = round(
            figures[f"{mode}_net_ms"] / max(0.01, figures["naive_celery_net_ms"]), 2
        )
    return figures


FAST = "[fast]"  # the fake model answers at once (bench/fake_llm.py)
NAIVE_WORKER = "celery -A orchestrator worker -Q naive --loglevel=WARNING --concurrency=4"


def poll_count(url: str, expected: int, *, timeout: float) -> int:
    """How many webhooks the customer backend has received at ``url``, once it has ``expected`` (or at the
    timeout)."""
    import httpx

    deadline, received = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        received = len(httpx.get(url, timeout=30).json())
        if received >= expected:
            break
        time.sleep(0.5)
    return received


def sockets_run(stack: ServiceProcesses, key: str, ledger: Ledger, args) -> dict:
    """5,000 sockets on the one realtime process (daphne), final-message lateness, and its RSS across 10,000
    connect and disconnect cycles (the second half compared with the first, so warm-up growth does not count)."""
    web = stack.procs["realtime"].pid
    peak = rss_mib(web)
    tag = uuid.uuid4().hex
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(sockets, "hold", stack.base_url, key, "--lifecycles", str(args.sockets // 5),
                           "--per-lifecycle", "5", "--tag", tag)  # fmt: skip
        while not held.done():
            peak = max(peak, rss_mib(web))
            time.sleep(0.5)
        hold = held.result()
    half = str(args.cycles // 2)
    sockets("churn", stack.base_url, key, "--cycles", half)
    after_first_half = rss_mib(web)
    churn = sockets("churn", stack.base_url, key, "--cycles", half)
    after = rss_mib(web)
    counts = ledger.settle(tag, len(hold["ids"]), timeout=120)
    return {
        "lifecycles": hold["lifecycles"],
        "sockets_open_at_once": hold["peak_open"],
        "hold_errors": {k: v for k, v in hold["outcomes"].items() if k != "final"},
        "finals_received": hold["outcomes"].get("final", 0),
        "final_late_p50_ms": hold["final_late_p50_ms"],
        "final_late_p99_ms": hold["final_late_p99_ms"],
        "realtime_peak_rss_mib": round(peak, 1),
        "rss_after_half_cycles_mib": round(after_first_half, 1),
        "rss_after_all_cycles_mib": round(after, 1),
        "rss_growth_second_half_mib": round(after - after_first_half, 1),
        "churn_errors": {k: v for k, v in churn["outcomes"].items() if k != "closed"},
        "ledger_ok": balanced(hold["ids"], counts, ledger, tag),
    }


def summarise(runs: list[dict], fields: list[str]) -> list[str]:
    lines = ["| figure | median | min | max |", "| --- | --- | --- | --- |"]
    for field in fields:
        values = [r[field] for r in runs if isinstance(r.get(field), int | float)]
        if not values:
            continue
        fmt = "{:.0f}" if all(abs(v) >= 100 for v in values) else "{:.3g}"
        median, low, high = (fmt.format(v) for v in (statistics.median(values), min(values), max(values)))
        lines.append(f"| {field} | {median} | {low} | {high} |")
    return lines


def main() -> int:
    unwind_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenarios", default="all", help=f"comma-separated, or all: {','.join(ALL_SCENARIOS)}")
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=8000)
    parser.add_argument("--client-timeout", type=float, default=30)
    parser.add_argument("--accept-seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--overhead-rates", default="5,50", help="lifecycles/s offered, comma-separated (overhead)")
    parser.add_argument("--flight", type=int, default=10000, help="lifecycles in flight at once (scenario flight)")
    parser.add_argument("--webhooks", type=int, default=2000, help="deliveries queued at once (scenario webhooks)")
    parser.add_argument("--webhook-endpoints", type=int, default=1, help="endpoints they go to (scenario webhooks)")
    parser.add_argument("--sockets", type=int, default=5000, help="sockets open at once (scenario sockets)")
    parser.add_argument("--cycles", type=int, default=10000, help="connect/disconnect cycles (scenario sockets)")
    parser.add_argument("--cpu-rate", type=float, default=20, help="lifecycles/s offered (scenario cpu)")
    parser.add_argument("--cpu-seconds", type=float, default=15, help="seconds of load per mode (scenario cpu)")
    parser.add_argument("--fair-slots", type=int, default=64, help="generations at a time (scenario fairness)")
    parser.add_argument("--flood", type=int, default=800, help="project A's requests at once (scenario fairness)")
    parser.add_argument("--trickle", type=int, default=20, help="project B's requests (scenario fairness)")
    parser.add_argument("--trickle-rate", type=float, default=2, help="project B's requests/s (scenario fairness)")
    parser.add_argument("--endpoint-rate", type=float, default=50, help="fast endpoint's deliveries/s (endpoints)")
    parser.add_argument("--slow-rate", type=float, default=4, help="slow endpoint's deliveries/s (endpoints)")
    parser.add_argument("--endpoint-seconds", type=float, default=20, help="seconds of load (scenario endpoints)")
    parser.add_argument("--relay-backlog", type=int, default=10000, help="lifecycles waiting (scenario relay)")
    parser.add_argument("--limited", type=int, default=2000, help="burst to the rate-limited model (scenario limits)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="py-spy the stack in each cpu scenario phase into DIR (skews its figures)")  # fmt: skip
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for every process of the stack, to compare settings run by run")  # fmt: skip
    args = parser.parse_args()
    scenarios = ALL_SCENARIOS if args.scenarios == "all" else args.scenarios.split(",")
    if unknown := set(scenarios) - set(ALL_SCENARIOS):
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))} (choose from {', '.join(ALL_SCENARIOS)})")

    # A fresh database each time: lifecycles left in flight by an interrupted run would load this one.
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    with running(EmbeddedStack.on_free_ports(STATE_DIR)) as servers:
        logs = STATE_DIR / "logs"
        llm_port = free_port()
        env = {
            **servers.environ(),
            **PRODUCTION_ON_LOOPBACK,
            "OPENAI_BASE_URL": f"http://127.0.0.1:{llm_port}",
            "OPENAI_API_KEY": "bench",
            "PROVIDER_TIMEOUT_S": str(args.latency_ms / 1000 + 30),
            "GENERATOR_CONCURRENCY": "12000",
            "RATE_LIMIT_PER_S": "1000000",
            "BENCH_BASELINE": "true",
            # The rate-limited model of the limits scenario, configured as the fake provider limits it.
            "PROVIDER_LIMITS": f"openai/limited=rpm:{LIMITED_RPM}",
            "BENCH_LIMITED_RPM": str(LIMITED_RPM),
            **dict(setting.split("=", 1) for setting in args.env),
        }
        os.environ.update(env)
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=PROJECT_DIR, check=True)
        key, overhead_key, webhooks_key, trickle_key, fast_key, slow_key = (
            create_project(n)
            for n in ("bench", "bench-overhead", "bench-webhooks", "bench-trickle", "bench-fast", "bench-slow")
        )
        backend_port = free_port()
        backend = subprocess.Popen([sys.executable, "-m", "tests.fakes.customer_backend", str(backend_port)],
                                   cwd=PROJECT_DIR)  # fmt: skip
        llm = subprocess.Popen([sys.executable, "-m", "bench.fake_llm", str(llm_port), str(args.latency_ms)],
                               cwd=PROJECT_DIR)  # fmt: skip
        stack = ServiceProcesses.create(log_dir=logs, **env)
        baseline_port, uvicorn_port, daphne_port = free_port(), free_port(), free_port()
        # The same project under ASGI servers, for the accept path's comparison: daphne (the realtime process's
        # server) and uvicorn with one worker per core. ORCHESTRATOR_ASGI=0: they serve the whole API, which the
        # realtime process does not (orchestrator/urls_realtime.py).
        whole_api = {**stack.env, "PROCESS_NAME": "realtime", "ORCHESTRATOR_ASGI": "0"}
        uvicorn = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "orchestrator.asgi:application", "--workers", str(os.cpu_count() or 2),
             "--port", str(uvicorn_port), "--log-level", "warning", "--no-access-log"],
            cwd=PROJECT_DIR, env=whole_api,
        )  # fmt: skip
        daphne = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(daphne_port),
             "orchestrator.asgi:application"],
            cwd=PROJECT_DIR, env=whole_api, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def start_baseline(port: int) -> subprocess.Popen:
            return subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "orchestrator.wsgi:application", "-w", str(GUNICORN_WORKERS),
                 "-b", f"127.0.0.1:{port}", "--timeout", "120", "--log-level", "warning"],
                cwd=PROJECT_DIR, env=stack.env,
            )  # fmt: skip

        gunicorn = start_baseline(baseline_port)
        ledger = Ledger(env["DATABASE_URL"])
        args.backend = f"http://127.0.0.1:{backend_port}"
        args.backend_pid = backend.pid
        try:
            stack.start(*PROCFILE)
            # The naive Celery peer's worker (cpu scenario), on its own queue, counted with the stack.
            stack.run("naive", NAIVE_WORKER)
            baseline = f"http://127.0.0.1:{baseline_port}"
            wait_until(lambda: answers(f"{baseline}/healthz"), timeout=30, what="gunicorn")
            wait_until(lambda: answers(f"http://127.0.0.1:{uvicorn_port}/healthz"), timeout=30, what="uvicorn")
            wait_until(lambda: answers(f"http://127.0.0.1:{daphne_port}/healthz"), timeout=30, what="daphne")
            warm = uuid.uuid4().hex
            load("burst", f"{stack.base_url}/v1/lifecycles", key, "--n", "5",
                 "--body", json.dumps({"model": "echo/warm", "prompt": "x", "metadata": {"run": warm}}))  # fmt: skip
            ledger.settle(warm, 5, timeout=60)
            register_endpoint(stack.base_url, overhead_key, f"http://127.0.0.1:{backend_port}", "now")
            args.webhook_endpoint_ids = [
                register_endpoint(stack.base_url, webhooks_key, f"http://127.0.0.1:{backend_port}", "silent",
                                  f"silent-{n}" if n else "")
                for n in range(args.webhook_endpoints)
            ]  # fmt: skip
            register_endpoint(stack.base_url, fast_key, f"http://127.0.0.1:{backend_port}", "silent", "fast")
            register_endpoint(stack.base_url, slow_key, f"http://127.0.0.1:{backend_port}", "hang", "slow")
            results: dict[str, list[dict]] = {s: [] for s in scenarios}

            def burst() -> dict:
                nonlocal gunicorn, baseline
                if results["burst"]:  # a fresh baseline: the last burst's abandoned requests keep it busy for minutes
                    gunicorn.terminate()
                    port = free_port()
                    baseline = f"http://127.0.0.1:{port}"
                    gunicorn = start_baseline(port)
                    wait_until(lambda: answers(f"{baseline}/healthz"), timeout=30, what="gunicorn")
                return burst_run(stack.base_url, baseline, key, ledger, args)

            others = {
                "daphne": f"http://127.0.0.1:{daphne_port}",
                "uvicorn": f"http://127.0.0.1:{uvicorn_port}",
            }
            run_scenario = {
                "burst": burst,
                "overhead": lambda: overhead_run(stack.base_url, overhead_key, ledger, args),
                "cpu": lambda: cpu_run(stack, servers, {"direct": key, "webhook_callback": overhead_key}, ledger, args),
                "flight": lambda: flight_run(stack, stack.base_url, key, ledger, args),
                "sockets": lambda: sockets_run(stack, key, ledger, args),
                "webhooks": lambda: webhooks_run(stack, servers, webhooks_key, ledger, args),
                "accept": lambda: accept_run(stack, others, key, ledger, args),
                "fairness": lambda: fairness_run(stack, {"flood": key, "trickle": trickle_key}, ledger, args),
                "limits": lambda: limits_run(stack, f"http://127.0.0.1:{llm_port}", key, ledger, args),
                "relay": lambda: relay_run(stack, key, ledger, args),
                "endpoints": lambda: slow_endpoint_run(stack, {"fast": fast_key, "slow": slow_key}, ledger, args),
            }
            for i in range(args.runs):
                for name in (name for name in ALL_SCENARIOS if name in scenarios):
                    waited = ledger.quiet(timeout=900)
                    results[name].append(run_scenario[name]() | {"quiet_wait_s": waited})
                print(f"run {i + 1}/{args.runs}: {json.dumps({k: v[-1] for k, v in results.items()})}", flush=True)
        finally:
            try:
                for proc in (gunicorn, uvicorn, daphne, llm, backend):
                    proc.terminate()
            finally:
                stack.stop_all()
    if results.get("burst"):
        print(f"\n## burst: {args.burst} requests at once, model latency {args.latency_ms:.0f} ms, client timeout "
              f"{args.client_timeout:.0f} s (sync: gunicorn, {GUNICORN_WORKERS} sync workers)\n")  # fmt: skip
        print("\n".join(summarise(results["burst"], list(results["burst"][0]))))
    if results.get("accept"):
        print(f"\n## accept path: {args.accept_seconds:.0f} s closed-loop (64 in flight), then {args.rate:.0f}/s\n")
        print("\n".join(summarise(results["accept"], list(results["accept"][0]))))
    for name, title in (
        ("flight", f"{args.flight} in flight at once, model latency {args.latency_ms:.0f} ms"),
        ("webhooks", f"{args.webhooks} webhook deliveries released at once to a loopback receiver"),
        ("sockets", f"{args.sockets} sockets on one realtime process, then {args.cycles} connect/close cycles"),
        ("cpu", f"CPU ms per lifecycle by process, {args.cpu_rate:.0f}/s offered for {args.cpu_seconds:.0f} s"),
        (
            "fairness",
            f"noisy neighbour: {args.fair_slots} slots, model {args.latency_ms:.0f} ms, A {args.flood} at "
            f"once, then B {args.trickle} at {args.trickle_rate:g}/s",
        ),
        ("limits", f"{args.limited} at once to a model limited to {LIMITED_RPM}/min, configured the same"),
        (
            "relay",
            f"the relay alone draining the outbox of {args.relay_backlog} lifecycles accepted while it was paused",
        ),
        ("endpoints", f"a fast endpoint at {args.endpoint_rate:g}/s alone, then beside one answering in 5 s"),
    ):
        if results.get(name):
            print(f"\n## {name}: {title}\n")
            print("\n".join(summarise(results[name], list(results[name][0]))))
    if results.get("overhead"):
        print(f"\n## overhead: echo at 0 ms, accept → final WebSocket message at {args.overhead_rates}/s offered; "
              "then 64 in flight through the webhook + callback\n")  # fmt: skip
        print("\n".join(summarise(results["overhead"], list(results["overhead"][0]))))
    void = [r for rs in results.values() for r in rs if not r["ledger_ok"]]
    print(f"\nledger: {'balanced in every run' if not void else f'{len(void)} run(s) VOID'}")
    return 1 if void else 0


def register_endpoint(base: str, key: str, backend: str, script: str, scenario: str = "") -> str:
    """A project's endpoint on the customer backend: ``now`` answers 200 and calls back at once, ``silent``
    only answers 200, ``hang`` answers 200 after 5 s (tests/fakes/customer_backend.py)."""
    import httpx

    scenario = f"bench-{scenario or script}"
    created = httpx.post(f"{base}/v1/webhook-endpoints", json={"url": f"{backend}/hooks/{scenario}/{script}"},
                         headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    created.raise_for_status()
    share = httpx.post(f"{backend}/secrets/{scenario}", json={"secrets": [created.json()["secret"]]})
    share.raise_for_status()
    return created.json()["id"]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
