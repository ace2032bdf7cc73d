"""W3C trace context (``traceparent``) for lifecycles: minted or continued at the API, then carried on every
outbox message, Kafka header and webhook so one trace covers the whole lifecycle."""

from __future__ import annotations

import re
import secrets

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def new_span(traceparent: str | None = None) -> str:
    """A child span of ``traceparent`` when it is valid, else the root span of a new trace."""
    match = _TRACEPARENT.match((traceparent or "").strip().lower())
    trace_id = match.group(1) if match and match.group(1) != "0" * 32 else secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"


def trace_id(traceparent: str) -> str:
    """The trace id of a valid traceparent, else ``""``."""
    match = _TRACEPARENT.match(traceparent or "")
    return match.group(1) if match and match.group(1) != "0" * 32 else ""
