"""Liveness for the processes that answer no HTTP (relay, generator, delivery): each touches a file
from the loop that does its work, and a health check asks whether it was touched lately.

    python -m orchestrator.liveness generator 60    # exit 0 if the generator beat within 60 s, else 1

A loop that hangs (a deadlock, a call that never returns) stops beating and the container or pod is
restarted. Riding out an outage is not a hang: the waits for a server that went away beat too
(:class:`orchestrator.outages.Outage` and :class:`orchestrator.process.GracefulExit` do), so a process
waiting for PostgreSQL to come back is left to wait. The file is ``$LIVENESS_DIR/alive-$PROCESS_NAME``
(``LIVENESS_DIR``: the temporary folder unless set); a process without ``PROCESS_NAME`` does not beat.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

EVERY_S = 5.0
DEFAULT_MAX_AGE_S = 60.0
_last = 0.0


def path(name: str) -> Path:
    return Path(os.environ.get("LIVENESS_DIR") or tempfile.gettempdir()) / f"alive-{name}"


def beat() -> None:
    """This process is alive and working: say so (at most every ``EVERY_S``; a cheap call otherwise)."""
    global _last
    now = time.monotonic()
    name = os.environ.get("PROCESS_NAME")
    if not name or now - _last < EVERY_S:
        return
    _last = now
    with contextlib.suppress(OSError):  # a read-only disk must not stop the work; the health check says so
        path(name).touch()


def alive(name: str, max_age_s: float = DEFAULT_MAX_AGE_S) -> bool:
    try:
        return time.time() - path(name).stat().st_mtime <= max_age_s
    except OSError:
        return False


if __name__ == "__main__":
    name, max_age = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_MAX_AGE_S
    sys.exit(0 if alive(name, max_age) else 1)
