"""W3C trace context (``traceparent``) for lifecycles: minted or continued at the API, then carried on every
outbox message, Kafka header and webhook so one trace covers the whole lifecycle."""

from __future__ import annotations

import re
import secrets

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def new_span(traceparent: str | None = None) -> str:
    """A child span of ``traceparent`` when it is valid, in its trace and sampled as it is (as OpenTelemetry's
    default sampler decides), else the root span of a new, sampled trace."""
    match = _TRACEPARENT.match((traceparent or "").strip().lower())
    if match is None or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    sampled = int(match.group(3), 16) & 1
    return f"00-{match.group(1)}-{secrets.token_hex(8)}-0{sampled}"


def trace_id(traceparent: str) -> str:
    """The trace id of a valid traceparent, else ``""``."""
    match = _TRACEPARENT.match(traceparent or "")
    return match.group(1) if match and match.group(1) != "0" * 32 else ""
