"""The ``make dev`` runner's supervisor restarts a process that exits, with backoff, and keeps the others."""

from __future__ import annotations

import io
import os
import threading

from orchestrator.supervisor import Supervisor
from tests.processes import poll_until


def test_a_process_that_exits_is_restarted_and_the_others_keep_running(tmp_path):
    out = io.StringIO()
    supervisor = Supervisor(env=dict(os.environ), cwd=tmp_path, out=out)
    supervisor.add("flaky", "echo up; sleep 0.3; exit 3")
    supervisor.add("steady", "echo steady; exec sleep 60")
    runner = threading.Thread(target=supervisor.run, kwargs={"handle_signals": False})
    runner.start()
    try:
        poll_until(lambda: out.getvalue(), lambda text: "restart 2" in text, timeout=15, what="two restarts")
        steady = supervisor.processes["steady"]
        assert steady.restarts == 0 and steady.process is not None and steady.process.poll() is None
    finally:
        supervisor.stopping.set()
        runner.join(timeout=30)
    text = out.getvalue()
    assert "flaky" in text and "exited with code 3" in text
    assert "restarting in 1 s (restart 1)" in text and "restarting in 2 s (restart 2)" in text
    assert "steady" in text and "stopped" in text
    assert steady.process.poll() is not None  # stopped with the rest
