"""orchestrator/liveness.py: the processes without HTTP beat from their work loops, and from the waits of an
outage, so a health check can tell a hung process from one riding out an outage."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from orchestrator import liveness
from orchestrator.embedded import PROJECT_DIR
from orchestrator.outages import Outage
from tests.processes import poll_until


@pytest.fixture
def beating(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVENESS_DIR", str(tmp_path))
    monkeypatch.setenv("PROCESS_NAME", "generator")
    monkeypatch.setattr(liveness, "_last", 0.0)
    return tmp_path


def check(tmp_path, name: str) -> int:
    env = {**os.environ, "LIVENESS_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "orchestrator.liveness", name, "60"]
    return subprocess.run(command, cwd=PROJECT_DIR, env=env).returncode


def test_a_beat_is_alive_a_stale_one_or_none_is_not(beating):
    assert check(beating, "generator") == 1  # never beat

    liveness.beat()
    assert check(beating, "generator") == 0
    stale = time.time() - 120
    os.utime(beating / "alive-generator", (stale, stale))
    assert check(beating, "generator") == 1


def test_riding_out_an_outage_beats(beating):
    Outage("PostgreSQL", __import__("logging").getLogger("test")).failed(ConnectionError("away"))

    assert liveness.alive("generator")


@pytest.mark.stack
@pytest.mark.django_db(transaction=True)
def test_every_process_without_http_beats_from_its_loop(stack):
    for name in ("relay", "generator", "delivery"):
        poll_until(
            lambda name=name: (
                (stack.log_dir / f"alive-{name}").exists()
                and time.time() - (stack.log_dir / f"alive-{name}").stat().st_mtime < 30
            ),
            bool,
            timeout=30,
            what=f"{name} beats",
        )
