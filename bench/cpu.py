"""Where a lifecycle's CPU goes: CPU seconds of every process of the stack over a fixed-rate run, divided
by the lifecycles it carried. The profile that says which process a target waits on (docs/performance.md).

Counted: each Procfile process with everything it started (gunicorn's and Celery's workers), and the
embedded PostgreSQL (its postmaster and every backend), Redis and Kafka broker. Not counted: the load
generator and the customer backend, which stand for the outside world.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import psutil

from orchestrator.embedded import EmbeddedStack
from tests.processes import ServiceProcesses


def _tree(pid: int) -> Iterator[psutil.Process]:
    try:
        root = psutil.Process(pid)
        yield root
        yield from root.children(recursive=True)
    except psutil.NoSuchProcess:
        return


def _postgres_pid(servers: EmbeddedStack) -> int | None:
    pid_file = servers.server("postgres").data_dir / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def processes(stack: ServiceProcesses, servers: EmbeddedStack) -> dict[str, list[psutil.Process]]:
    """The stack's processes by group, as they are now (call again after a restart)."""
    groups = {name: list(_tree(proc.pid)) for name, proc in stack.procs.items() if proc.poll() is None}
    postgres = _postgres_pid(servers)
    if postgres is not None:
        groups["postgres"] = list(_tree(postgres))
    for name in ("redis", "kafka"):
        process = getattr(servers.server(name), "process", None)
        if process is not None and process.poll() is None:
            groups[name] = list(_tree(process.pid))
    return groups


def cpu_seconds(stack: ServiceProcesses, servers: EmbeddedStack) -> dict[int, tuple[str, float]]:
    """pid → (group, CPU seconds so far) for every process of the stack."""
    return seconds((group, process) for group, members in processes(stack, servers).items() for process in members)


def seconds(grouped: Iterable[tuple[str, psutil.Process]]) -> dict[int, tuple[str, float]]:
    """pid → (group, CPU seconds so far) for each ``(group, process)`` still running."""
    out = {}
    for group, process in grouped:
        try:
            out[process.pid] = (group, process_seconds(process))
        except psutil.Error:
            continue
    return out


def process_seconds(process: psutil.Process) -> float:
    """CPU seconds ``process`` has used so far, in user and kernel mode."""
    times = process.cpu_times()
    return times.user + times.system


def per_group(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent by each group between two readings (processes born in between count whole;
    processes gone in between are lost, so keep restarts out of a measured window)."""
    spent: dict[str, float] = {}
    for pid, (group, seconds) in after.items():
        spent[group] = spent.get(group, 0.0) + seconds - before.get(pid, (group, 0.0))[1]
    return spent


PROFILED = ("web", "realtime", "relay", "generator", "delivery")


@contextlib.contextmanager
def profiled(stack: ServiceProcesses, servers: EmbeddedStack, directory: Path | None, phase: str, rate: int = 100):
    """Sample every Python process of the stack with py-spy while the block runs (nothing when ``directory`` is
    None): ``directory/<phase>-<process>-<pid>.txt``, in py-spy's raw (collapsed stack) format. A profiler
    costs CPU on the same cores, so profile a run of its own, not one whose figures are reported."""
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if directory is None or spy is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    spies = []
    for group, members in processes(stack, servers).items():
        if group not in PROFILED:
            continue
        for process in (p for p in members if "python" in " ".join(p.cmdline()[:1])):  # not the shell wrappers
            output = directory / f"{phase}-{group}-{process.pid}.txt"
            command = [spy, "record", "--nonblocking", "-r", str(rate), "-f", "raw", "-p", str(process.pid)]
            spies.append(subprocess.Popen([*command, "-o", str(output)], stderr=subprocess.DEVNULL))
    try:
        yield
    finally:
        for spy_process in spies:
            spy_process.send_signal(signal.SIGINT)  # py-spy writes what it sampled, then exits
        for spy_process in spies:
            spy_process.wait(timeout=30)
