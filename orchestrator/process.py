"""What every long-running process (relay, generator, bridge) shares: a stop flag set by SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import threading


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
        return self.event.wait(seconds)
