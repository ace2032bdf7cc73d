"""One question asked of kept-open connections before they are used again: has the other side said anything?"""

from __future__ import annotations

import select


def readable(sock) -> bool:
    """Whether a read from ``sock`` (a socket or its file descriptor) would return at once: data, or the end
    of the stream that a peer which hung up left behind. Asked without waiting."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
