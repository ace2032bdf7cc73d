"""The fault run (bench/chaos.py), smaller: 300 lifecycles while every process is crashed and restarted in
turn, and PostgreSQL, the Kafka broker and Redis are restarted under the running processes, against a
customer backend that fails one attempt in five, with sockets following lifecycles through it all."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator.embedded import PROJECT_DIR
from tests.embedded_servers import TEST_SETTINGS

# The run starts its own servers and settings: nothing of the suite's own environment may leak in.
SUITE_ONLY = {*TEST_SETTINGS, "DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"}


@pytest.mark.timeout(900)
def test_a_fault_run_loses_nothing_and_leaves_nothing_stuck(tmp_path):
    env = {name: value for name, value in os.environ.items() if name not in SUITE_ONLY}
    command = ["-m", "bench.chaos", "--lifecycles", "300", "--rate", "30", "--settle", "180", "--state-dir", tmp_path]
    run = subprocess.run(
        [sys.executable, *map(str, command)],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert "ledger: balanced: 300 lifecycles, every one completed" in run.stdout, run.stdout
    assert "no process exited unless killed, none generated twice at once" in run.stdout, run.stdout
    assert "30 of 30 followed sockets got their final event" in run.stdout, run.stdout
    for fault in ("web", "realtime", "generator", "kafka", "relay", "delivery", "worker", "redis", "beat"):
        assert f"fault: {fault} killed and back" in run.stdout, run.stdout
    for mode in ("fast", "immediate"):
        assert f"fault: postgres-{mode} restarted in place" in run.stdout, run.stdout
