"""Real service processes for tests, started from the Procfile's own command lines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from honcho.environ import parse_procfile

from orchestrator.embedded import PROJECT_DIR, free_port, wait_until

PROCFILE = parse_procfile((PROJECT_DIR / "Procfile").read_text()).processes


@dataclass
class ServiceProcesses:
    """A set of Procfile processes sharing one environment. ``start(name)`` may be called again after
    ``kill(name)``, which is how tests kill -9 and restart a worker."""

    env: dict[str, str]
    log_dir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @classmethod
    def create(cls, *, log_dir: Path, **overrides: str) -> ServiceProcesses:
        port = overrides.pop("PORT", None) or str(free_port())
        realtime_port = overrides.pop("REALTIME_PORT", None) or str(free_port())
        env = {
            **os.environ,
            "PORT": port,
            "REALTIME_PORT": realtime_port,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "PUBLIC_WS_URL": f"ws://127.0.0.1:{realtime_port}",
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "STATE_DIR": str(log_dir),
            **overrides,
        }
        log_dir.mkdir(parents=True, exist_ok=True)
        return cls(env=env, log_dir=log_dir)

    @property
    def base_url(self) -> str:
        """The web process (HTTP)."""
        return f"http://127.0.0.1:{self.env['PORT']}"

    @property
    def ws_url(self) -> str:
        """The realtime process (WebSockets)."""
        return f"ws://127.0.0.1:{self.env['REALTIME_PORT']}"

    def start(self, *names: str) -> None:
        for name in names:
            # The Procfile's own command line, run by a shell as honcho runs it.
            self.run(name, PROCFILE[name])
            if name in self.SERVERS:
                self.wait_ready(name)

    def run(self, name: str, command: str) -> None:
        """Run ``command`` with the set's environment, as one more of its processes."""
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.procs[name] = subprocess.Popen(  # noqa: S602
            command,
            shell=True,
            cwd=PROJECT_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    # The processes that listen, and the port each answers /healthz on.
    SERVERS = {"web": "PORT", "realtime": "REALTIME_PORT"}

    def wait_ready(self, name: str, timeout: float = 60) -> None:
        url = f"http://127.0.0.1:{self.env[self.SERVERS[name]]}/healthz"

        def up() -> bool:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited; log:\n{self.log(name)}")
            try:
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=timeout, what=name)

    def signal(self, name: str, sig: int) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, sig)

    def kill(self, name: str) -> None:
        """kill -9 the process and everything it started, and wait for it."""
        self.signal(name, signal.SIGKILL)
        self.procs[name].wait(timeout=10)

    def stop(self, name: str, timeout: float = 20) -> int:
        self.signal(name, signal.SIGTERM)
        try:
            return self.procs[name].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(name)
            return -9

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None


def poll_until(fetch, predicate, *, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Call ``fetch`` until ``predicate(value)`` holds; return the value. Fails with the last value seen."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fetch()
        if predicate(value):
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not reached in {timeout}s; last value: {value!r}")
