"""The soak run: a steady rate for a long time, to show that nothing grows and nothing slows down.

    .venv/bin/python -m bench.soak                          # 35 minutes at 8 lifecycles/s
    .venv/bin/python -m bench.soak --minutes 10 --rate 5    # shorter

It starts its own embedded PostgreSQL, Redis and Kafka and the Procfile processes (production settings), a
fake model (50 ms) and a customer backend that verifies each webhook and calls back at once. Every
lifecycle goes through webhook + callback, and a WebSocket follows each one to its final event. The
embedded broker's log is kept bounded as ``make dev`` keeps it (``orchestrator.run.bound_broker_log``:
restarted empty past ``EMBEDDED_KAFKA_MAX_MESSAGES``, recent messages of live lifecycles published again).

Every 10 s it reads the memory (PSS: shared pages split between the processes sharing them; PostgreSQL's
private memory, without its fixed-size buffer cache) and CPU time of every process (each Procfile process
with its children, and the servers). The verdict compares the last 5 minutes with the first 5 (after a
minute of warm-up): CPU per lifecycle across the stack, and each process's memory, each within 20%; and the
ledger: every lifecycle completed, every socket got its final event. It prints the figures as JSON and exits
non-zero on a miss.

These machines are shared: when a neighbour loads the host, every process spends more CPU on the same
work. So each sample also times a fixed piece of Python work on one thread of this process (the machine
probe), and CPU per lifecycle is judged against the machine's own slowdown between the two windows; the
raw ratio is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil
import psycopg

from bench.cpu import per_group, processes
from bench.environment import PRODUCTION_ON_LOOPBACK, answers, service_stack
from orchestrator.embedded import DEFAULT_STATE_DIR, PROJECT_DIR, EmbeddedStack, free_port, running, wait_until
from orchestrator.process import unwind_on_sigterm
from orchestrator.run import bound_broker_log
from realtime.client import Created, LifecycleClient
from tests.processes import PROCFILE, ServiceProcesses

STATE_DIR = DEFAULT_STATE_DIR / "soak"
SAMPLE_S = 10
WARM_UP_S = 60
WINDOW_S = 300
TOLERANCE = 1.2


def machine_probe() -> float:
    """CPU ms that a fixed piece of Python work takes on this thread now: how fast the machine is running."""
    started = time.thread_time()
    sum(i * i for i in range(200_000))
    return 1000 * (time.thread_time() - started)


class Meter:
    """CPU seconds and RSS of the stack's processes, sampled; a process that is gone (the broker restarted)
    keeps the CPU it had used when last seen."""

    def __init__(self, stack: ServiceProcesses, servers: EmbeddedStack) -> None:
        self.stack, self.servers = stack, servers
        self.last_cpu: dict[int, tuple[str, float]] = {}
        self.samples: list[dict] = []

    def sample(self, completed: int) -> None:
        pss: dict[str, float] = {}
        counts: dict[str, int] = {}
        for group, members in processes(self.stack, self.servers).items():
            counts[group] = len(members)
            for process in members:
                try:
                    times, memory = process.cpu_times(), process.memory_full_info()
                except psutil.NoSuchProcess:
                    continue
                self.last_cpu[process.pid] = (group, times.user + times.system)
                # PSS, not RSS: shared pages split between the processes sharing them. For PostgreSQL, its
                # private memory (USS) only: its shared buffers are a cache of fixed size (shared_buffers)
                # that fills as the tables grow, whatever the load; a leak would be in a backend's own memory.
                size = memory.uss if group == "postgres" else memory.pss
                pss[group] = pss.get(group, 0.0) + size / 2**20
        self.samples.append(
            {
                "t": time.monotonic(),
                "cpu": dict(self.last_cpu),
                "completed": completed,
                "pss_mib": pss,
                "processes": counts,
                "probe_ms": machine_probe(),
            }
        )

    def at(self, t: float) -> dict:
        return min(self.samples, key=lambda s: abs(s["t"] - t))


def drive(
    base_url: str, api_key: str, tag: str, rate: float, seconds: float, finals: dict, followed: list, stop
) -> None:
    """Offer lifecycles at ``rate`` for ``seconds`` (or until ``stop``), each followed on its socket to its
    final event."""

    async def follow(client: LifecycleClient, created: Created) -> None:
        try:
            async for event in client.events(created):
                finals[created.id] = event["event"]
        except Exception as exc:
            finals[created.id] = f"error: {exc!r}"

    async def go() -> None:
        tasks = set()
        async with LifecycleClient(base_url, api_key) as client:
            started = time.monotonic()
            n = 0
            while time.monotonic() - started < seconds and not stop.is_set():
                await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
                try:
                    created = await client.create(
                        model="openai/soak", prompt=f"soak {n}", metadata={"run": tag}, idempotency_key=f"{tag}-{n}"
                    )
                except Exception as exc:
                    print(f"  request {n} refused: {exc!r}", flush=True)
                    n += 1
                    continue
                followed.append(created.id)
                task = asyncio.create_task(follow(client, created))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            if tasks and not stop.is_set():
                await asyncio.wait(tasks, timeout=120)

    asyncio.run(go())


def completed(database_url: str, tag: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT count(*) FROM lifecycle_lifecycle WHERE metadata->>'run' = %s AND status = 'completed'", [tag]
        ).fetchone()[0]


def statuses(database_url: str, tag: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM lifecycle_lifecycle WHERE metadata->>'run' = %s GROUP BY 1", [tag]
        ).fetchall()
    return dict(rows)


def verdict(meter: Meter, started: float, ended: float) -> tuple[dict, list[str]]:
    first = (meter.at(started + WARM_UP_S), meter.at(started + WARM_UP_S + WINDOW_S))
    last = (meter.at(ended - WINDOW_S), meter.at(ended))

    def cpu_ms_by_group(window) -> dict[str, float]:
        """CPU ms per lifecycle of each process within the window: which process a change comes from."""
        done = max(1, window[1]["completed"] - window[0]["completed"])
        return {g: 1000 * s / done for g, s in sorted(per_group(window[0]["cpu"], window[1]["cpu"]).items())}

    def cpu_ms(window) -> float:
        return sum(cpu_ms_by_group(window).values())

    def peak_mib(window) -> dict[str, float]:
        """Each process's highest memory within the window: the broker's grows and drops with its bounded log
        (restarted every few minutes), so a single reading says where in that cycle it was, not whether it
        grows."""
        samples = [s for s in meter.samples if window[0]["t"] <= s["t"] <= window[1]["t"]]
        groups = {group for sample in samples for group in sample["pss_mib"]}
        return {g: round(max(sample["pss_mib"].get(g, 0.0) for sample in samples), 1) for g in sorted(groups)}

    def at_peak(window) -> dict[str, dict]:
        """For each process group, the median memory over the window and how many processes it had at its
        peak: a peak made by a short-lived process (an autovacuum worker, a passing connection) tells apart
        from growth."""
        samples = [s for s in meter.samples if window[0]["t"] <= s["t"] <= window[1]["t"]]
        groups = sorted({group for sample in samples for group in sample["pss_mib"]})
        found = {}
        for g in groups:
            peak = max(samples, key=lambda sample: sample["pss_mib"].get(g, 0.0))
            found[g] = {
                "median_mib": round(statistics.median(sample["pss_mib"].get(g, 0.0) for sample in samples), 1),
                "processes_at_peak": peak.get("processes", {}).get(g),
                "processes_median": statistics.median(sample.get("processes", {}).get(g, 0) for sample in samples),
            }
        return found

    def probe_ms(window) -> float:
        return statistics.median(s["probe_ms"] for s in meter.samples if window[0]["t"] <= s["t"] <= window[1]["t"])

    figures = {
        "cpu_ms_per_lifecycle_first": round(cpu_ms(first), 2),
        "cpu_ms_per_lifecycle_last": round(cpu_ms(last), 2),
        "cpu_ms_by_process_first": {g: round(ms, 2) for g, ms in cpu_ms_by_group(first).items()},
        "cpu_ms_by_process_last": {g: round(ms, 2) for g, ms in cpu_ms_by_group(last).items()},
        "pss_mib_first": peak_mib(first),
        "pss_mib_last": peak_mib(last),
        "memory_detail_first": at_peak(first),
        "memory_detail_last": at_peak(last),
    }
    failures = []
    ratio = figures["cpu_ms_per_lifecycle_last"] / max(0.001, figures["cpu_ms_per_lifecycle_first"])
    machine = probe_ms(last) / max(0.001, probe_ms(first))
    figures["cpu_ratio_last_to_first"] = round(ratio, 3)
    figures["machine_probe_ms_first"] = round(probe_ms(first), 2)
    figures["machine_probe_ms_last"] = round(probe_ms(last), 2)
    figures["cpu_ratio_against_the_machine"] = round(ratio / machine, 3)
    if ratio / machine > TOLERANCE:
        failures.append(f"CPU per lifecycle grew {ratio:.2f}x while the machine slowed {machine:.2f}x")
    for group, mib in figures["pss_mib_last"].items():
        before = figures["pss_mib_first"].get(group)
        if before and mib / before > TOLERANCE:
            failures.append(f"{group} memory (PSS) grew {mib / before:.2f}x ({before:.0f} -> {mib:.0f} MiB)")
    return figures, failures


def main() -> int:
    unwind_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=35)
    parser.add_argument("--rate", type=float, default=8, help="lifecycles offered per second")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR, help="scratch folder, emptied first")
    args = parser.parse_args()
    seconds = args.minutes * 60
    if seconds < WARM_UP_S + 2 * WINDOW_S:
        parser.error(f"a soak needs at least {(WARM_UP_S + 2 * WINDOW_S) / 60:.0f} minutes")
    tag = uuid.uuid4().hex
    shutil.rmtree(args.state_dir, ignore_errors=True)
    logs = args.state_dir / "logs"
    logs.mkdir(parents=True)
    with running(EmbeddedStack.on_free_ports(args.state_dir, ephemeral=True)) as servers:
        llm_port, backend_port = free_port(), free_port()
        env = {**servers.environ(), **PRODUCTION_ON_LOOPBACK, "RATE_LIMIT_PER_S": "100000",
               "OPENAI_BASE_URL": f"http://127.0.0.1:{llm_port}", "OPENAI_API_KEY": "soak"}  # fmt: skip
        stack, api_key = service_stack(logs, "soak", **env)
        helpers = [
            subprocess.Popen([sys.executable, "-m", module, *argv], cwd=PROJECT_DIR)
            for module, argv in (("bench.fake_llm", [str(llm_port), "50"]),
                                 ("tests.fakes.customer_backend", [str(backend_port)]))
        ]  # fmt: skip
        stop = threading.Event()
        try:
            stack.start(*PROCFILE)
            backend = f"http://127.0.0.1:{backend_port}"
            wait_until(lambda: answers(f"{backend}/received/none"), timeout=20, what="customer backend")
            headers = {"Authorization": f"Bearer {api_key}"}
            hook = httpx.post(f"{stack.base_url}/v1/webhook-endpoints", headers=headers,
                              json={"url": f"{backend}/hooks/soak/now"})  # fmt: skip
            hook.raise_for_status()
            httpx.post(f"{backend}/secrets/soak", json={"secrets": [hook.json()["secret"]]}).raise_for_status()
            threading.Thread(target=bound_broker_log, args=(servers, stack.env, stop), daemon=True).start()

            meter, finals, followed = Meter(stack, servers), {}, []
            print(f"soak: {args.rate:.0f} lifecycles/s for {args.minutes:.0f} min, webhook + callback, a socket "
                  "on each", flush=True)  # fmt: skip
            started = time.monotonic()
            load = threading.Thread(
                target=drive,
                args=(stack.base_url, api_key, tag, args.rate, seconds, finals, followed, stop),
                daemon=True,
            )
            load.start()
            while load.is_alive():
                meter.sample(completed(env["DATABASE_URL"], tag))
                if len(meter.samples) % 30 == 0:
                    last = meter.samples[-1]
                    print(f"  {(last['t'] - started) / 60:.0f} min: {last['completed']} completed, "
                          f"PSS {sum(last['pss_mib'].values()):.0f} MiB", flush=True)  # fmt: skip
                load.join(SAMPLE_S)
            ended = meter.samples[-1]["t"]
            figures, failures = verdict(meter, started, ended)
            counts = statuses(env["DATABASE_URL"], tag)
            deaf = [lid for lid in followed if finals.get(lid) != "lifecycle.completed"]
            figures |= {"minutes": args.minutes, "rate": args.rate, "statuses": counts,
                        "sockets": len(followed), "sockets_without_final_event": len(deaf)}  # fmt: skip
            if set(counts) != {"completed"}:
                failures.append(f"not every lifecycle completed: {counts}")
            if deaf:
                failures.append(f"{len(deaf)} sockets missed their final event")
        finally:
            stop.set()
            for helper in helpers:
                helper.terminate()
            stack.stop_all()
    print(json.dumps(figures, indent=2))
    if failures:
        print("soak: FAILED\n- " + "\n- ".join(failures) + f"\n(process logs in {logs})")
        return 1
    print("soak: flat: CPU per lifecycle and every process's memory within 20% from the first 5 minutes to the last")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
