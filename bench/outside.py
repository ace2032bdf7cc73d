"""A running ``make dev``, measured from outside as a user runs it.

    python -m bench.outside cpu API_KEY RATE SECONDS BODY [--base http://127.0.0.1:8000]
    python -m bench.outside deliveries N [--base ...] [--backend http://127.0.0.1:9198]

``cpu``: CPU per lifecycle of every process of the stack on this machine (found by its command line) and the
embedded PostgreSQL, by psutil, over a fixed-rate run of ``bench.overhead`` (a WebSocket follows each
lifecycle to its final message). Prints lifecycles completed, the p50 accept → final message, and ms of CPU
per lifecycle in total and by process. The fake model and customer backend are reported but not in the
total (they stand for the outside world).

``deliveries``: webhook deliveries per second. A new project (``manage.py createproject``) gets an endpoint
on the fake customer backend (``python -m tests.fakes.customer_backend 9198``, answering 200 at once); N
lifecycles are accepted and generated while the delivery process is stopped (SIGSTOP), then it is let go
and the receiver counts what arrives.

Run nothing else on the machine meanwhile: what is counted is found by name.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time

import httpx
import psutil

from bench.cpu import per_group, seconds
from bench.run import load, overhead, poll_count, register_endpoint

# What a command line contains → the group it is counted in (the first that matches).
GROUPS = (
    ("daphne", "realtime"),
    ("gunicorn", "web"),
    ("manage.py relay", "relay"),
    ("manage.py generator", "generator"),
    ("manage.py deliver", "delivery"),
    ("celery", "celery"),
    ("orchestrator.run", "runner"),
    ("tansu", "kafka"),
    ("redis-server", "redis"),
    ("bench.fake_llm", "model"),
    ("customer_backend", "backend"),
)
OUTSIDE = {"model", "backend"}


def stack() -> dict[int, tuple[str, psutil.Process]]:
    found = {}
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if not command or "PROCESS_NAME=" in command:
            continue  # the Procfile's shell wrappers
        if command.split()[0].endswith("postgres") and "/.state/" in command:  # the embedded postmaster
            found[process.pid] = ("postgres", process)
            found.update({child.pid: ("postgres", child) for child in process.children(recursive=True)})
            continue
        group = next((group for needle, group in GROUPS if needle in command), None)
        if group is not None:
            found[process.pid] = (group, process)
    return found


def cpu(args) -> dict:
    processes = stack().values()
    before = seconds(processes)
    result = overhead("rate", args.base, args.api_key, "--rate", args.rate, "--seconds", args.seconds,
                      "--body", args.body)  # fmt: skip
    time.sleep(2)  # the last lifecycles' trailing work (offsets, sweeps)
    spent = per_group(before, seconds(processes))
    per = max(result["completed"], 1) / 1000
    total = sum(used for group, used in spent.items() if group not in OUTSIDE)
    figures = {group: round(used / per, 2) for group, used in sorted(spent.items(), key=lambda i: -i[1])}
    return {"completed": result["completed"], "p50_ms": round(result["p50_ms"], 1), "total_ms": round(total / per, 2),
            **figures}  # fmt: skip


def deliveries(args) -> dict:
    scenario = f"outside-{int(time.time())}"
    created = subprocess.run([sys.executable, "manage.py", "createproject", scenario], capture_output=True,
                             text=True, check=True)  # fmt: skip
    key = json.loads(created.stdout.strip().splitlines()[-1])["api_key"]
    api = httpx.Client(base_url=args.base, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    register_endpoint(args.base, key, args.backend, "silent", scenario)
    worker = next(
        p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[1:3] == ["manage.py", "deliver"]
    )
    worker.send_signal(signal.SIGSTOP)
    try:
        body = json.dumps({"model": "echo/bench", "prompt": "hi", "delivery": {"mode": "webhook"}})
        sent = load("burst", f"{args.base}/v1/lifecycles", key, "--n", str(args.n), "--timeout", "600", "--body", body)
        accepted = sent["outcomes"].get("202", 0)
        # Every lifecycle generated: its delivery is queued, waiting for the stopped process.
        while any(
            api.get("/v1/lifecycles", params={"status": status, "limit": 1}).json()["results"]
            for status in ("pending", "generating")
        ):
            time.sleep(1)
        time.sleep(2)
    finally:
        worker.send_signal(signal.SIGCONT)
    released = time.monotonic()
    delivered = poll_count(f"{args.backend}/received/bench-{scenario}", accepted, timeout=600)
    elapsed = time.monotonic() - released
    return {"accepted": accepted, "delivered": delivered, "seconds": round(elapsed, 2),
            "deliveries_per_s": round(delivered / elapsed, 1)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    modes = parser.add_subparsers(dest="mode", required=True)
    cpu_mode = modes.add_parser("cpu")
    for name in ("api_key", "rate", "seconds", "body"):
        cpu_mode.add_argument(name)
    deliveries_mode = modes.add_parser("deliveries")
    deliveries_mode.add_argument("n", type=int)
    deliveries_mode.add_argument("--backend", default="http://127.0.0.1:9198")
    args = parser.parse_args()
    print(json.dumps(cpu(args) if args.mode == "cpu" else deliveries(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
