"""The ``make dev`` runner's process supervisor: every Procfile process, its output prefixed with its name,
and a process that exits restarted with backoff instead of taking the whole stack down with it.

A process that exits on its own is started again after 1 s, then 2, 4, ... up to 30 s while it keeps
exiting; one that stayed up for a minute starts again at 1 s. Ctrl-C or SIGTERM stops them all (SIGTERM
to each process group, SIGKILL to what is left after the grace period).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0
STOP_GRACE_S = 20.0
COLOURS = ("36", "33", "32", "35", "34", "31", "96", "93")


@dataclass
class Supervised:
    name: str
    command: str
    colour: str
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = FIRST_BACKOFF_S
    restart_at: float | None = None


@dataclass
class Supervisor:
    env: dict[str, str]
    cwd: Path
    out: TextIO = sys.stdout
    processes: dict[str, Supervised] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    _print_lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, command: str) -> None:
        self.processes[name] = Supervised(name, command, COLOURS[len(self.processes) % len(COLOURS)])

    @property
    def width(self) -> int:
        return max((len(name) for name in self.processes), default=6)

    def say(self, name: str, line: str, colour: str = "0") -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        tty = self.out.isatty()
        prefix = f"{stamp} {name:<{self.width}} | "
        with self._print_lock:
            self.out.write(f"\033[{colour}m{prefix}\033[0m{line}\n" if tty else f"{prefix}{line}\n")
            self.out.flush()

    def _start(self, proc: Supervised) -> None:
        # The Procfile's own command line, run by a shell (as honcho and foreman do), in its own process group
        # so that stopping it stops whatever it started.
        proc.process = subprocess.Popen(  # noqa: S602
            proc.command,
            shell=True,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc.started_at = time.monotonic()
        proc.restart_at = None
        threading.Thread(target=self._pump, args=(proc, proc.process), daemon=True).start()
        self.say(proc.name, f"started with pid {proc.process.pid}", proc.colour)

    def _pump(self, proc: Supervised, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            self.say(proc.name, raw.decode(errors="replace").rstrip("\n"), proc.colour)

    def _exited(self, proc: Supervised, code: int) -> None:
        ran_s = time.monotonic() - proc.started_at
        if ran_s >= STABLE_AFTER_S:
            proc.backoff_s = FIRST_BACKOFF_S
        proc.restarts += 1
        proc.restart_at = time.monotonic() + proc.backoff_s
        self.say(
            proc.name,
            f"exited with code {code} after {ran_s:.1f} s; restarting in {proc.backoff_s:.0f} s "
            f"(restart {proc.restarts})",
            "31",
        )
        proc.backoff_s = min(MAX_BACKOFF_S, proc.backoff_s * 2)
        proc.process = None

    def run(self, *, handle_signals: bool = True) -> int:
        """Start everything and keep it running until SIGINT or SIGTERM (or ``stopping`` is set); then stop it
        all."""
        previous = {}
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: self.stopping.set())
        try:
            for proc in self.processes.values():
                self._start(proc)
            while not self.stopping.wait(0.2):
                now = time.monotonic()
                for proc in self.processes.values():
                    if proc.process is not None and (code := proc.process.poll()) is not None:
                        self._exited(proc, code)
                    elif proc.process is None and proc.restart_at is not None and now >= proc.restart_at:
                        self._start(proc)
        finally:
            self.stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def stop_all(self) -> None:
        running = [p for p in self.processes.values() if p.process is not None and p.process.poll() is None]
        for proc in running:
            self.say(proc.name, "stopping (SIGTERM)", proc.colour)
            _signal_group(proc.process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in running:
            # The shell may go first: wait for its whole group, which finishes the work it holds.
            while _group_alive(proc.process) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _group_alive(proc.process):
                self.say(proc.name, f"still running after {STOP_GRACE_S:.0f} s; killing it", "31")
                _signal_group(proc.process, signal.SIGKILL)
            self.say(proc.name, f"stopped (code {proc.process.wait()})", proc.colour)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _group_alive(process: subprocess.Popen) -> bool:
    process.poll()  # reap the shell if it has exited, so its group can empty
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True
