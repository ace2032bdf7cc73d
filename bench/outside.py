"""CPU per lifecycle of a running ``make dev``, measured from outside as a user runs it: every process of the
stack on this machine (found by its command line) and the embedded PostgreSQL, by psutil, over a fixed-rate
run of ``bench.overhead`` (a WebSocket follows each lifecycle to its final message).

    python -m bench.outside API_KEY RATE SECONDS BODY [--base http://127.0.0.1:8000]

Prints one JSON line: lifecycles completed, the p50 accept → final message, and ms of CPU per lifecycle in
total and by process. The fake model and customer backend are reported but not in the total (they stand for
the outside world). Run nothing else on the machine meanwhile: what is counted is found by name.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import psutil

# What a command line contains → the group it is counted in (the first that matches).
GROUPS = (
    ("daphne", "realtime"),
    ("gunicorn", "web"),
    ("manage.py relay", "relay"),
    ("manage.py generator", "generator"),
    ("manage.py bridge", "bridge"),
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


def cpu_seconds(processes: dict[int, tuple[str, psutil.Process]]) -> dict[int, float]:
    seconds = {}
    for pid, (_, process) in processes.items():
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        seconds[pid] = times.user + times.system
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("api_key")
    parser.add_argument("rate")
    parser.add_argument("seconds")
    parser.add_argument("body")
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    args = parser.parse_args()

    processes = stack()
    before = cpu_seconds(processes)
    run = subprocess.run(
        [sys.executable, "-m", "bench.overhead", "rate", args.base, args.api_key, "--rate", args.rate,
         "--seconds", args.seconds, "--body", args.body],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    time.sleep(2)  # the last lifecycles' trailing work (offsets, sweeps)
    after = cpu_seconds(processes)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    per = max(result["completed"], 1) / 1000
    spent: dict[str, float] = {}
    for pid, seconds in after.items():
        group = processes[pid][0]
        spent[group] = spent.get(group, 0.0) + seconds - before.get(pid, seconds)
    total = sum(seconds for group, seconds in spent.items() if group not in OUTSIDE)
    figures = {group: round(seconds / per, 2) for group, seconds in sorted(spent.items(), key=lambda i: -i[1])}
    print(json.dumps({"completed": result["completed"], "p50_ms": round(result["p50_ms"], 1),
                      "total_ms": round(total / per, 2), **figures}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
