"""What every long-running process (relay, generator, delivery) shares: a stop flag set by SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import threading

from orchestrator import liveness


class GracefulExit:
    """Set on SIGTERM or SIGINT; the loop finishes the work in hand, then returns."""

    def __init__(self) -> None:
        self.event = threading.Event()
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, signum, frame) -> None:
        self.event.set()

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def wait(self, seconds: float) -> bool:
        liveness.beat()  # waiting (for a server, for leadership) is not hanging
        return self.event.wait(seconds)


def unwind_on_sigterm() -> None:
    """For supervisors (the bench runners): SIGTERM unwinds like Ctrl-C, so ``finally`` blocks stop what was
    started. Further SIGTERMs (``timeout`` forwarding one, a second ``pkill``) are ignored from then on, so
    they cannot cut that cleanup short and orphan its processes."""

    def unwind(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, unwind)
