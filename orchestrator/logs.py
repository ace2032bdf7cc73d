"""Structured JSON logs. Every line carries the lifecycle, project and trace it is about, when known:
code binds them once (``with log_context(lifecycle_id=..., ...)``) and every log call inside, in any
module, picks them up. Context variables follow asyncio tasks, so concurrent generations don't mix."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime

from lifecycle.tracing import trace_id as trace_id_of

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("log_context", default=None)
PROCESS = os.environ.get("PROCESS_NAME", "")


def _bound(traceparent: str | None, fields: dict) -> dict[str, str]:
    bound = {k: str(v) for k, v in fields.items() if v}
    if traceparent and trace_id_of(traceparent):
        bound["trace_id"] = trace_id_of(traceparent)
    return {**(_context.get() or {}), **bound}


@contextlib.contextmanager
def log_context(*, traceparent: str | None = None, **fields) -> Iterator[None]:
    """Bind fields (``lifecycle_id``, ``project_id``, ...) and the trace id of ``traceparent``."""
    token = _context.set(_bound(traceparent, fields))
    try:
        yield
    finally:
        _context.reset(token)


def bind(*, traceparent: str | None = None, **fields) -> None:
    """Bind for the rest of the current context (an asyncio task: each has a copy of its own)."""
    _context.set(_bound(traceparent, fields))


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.context = _context.get() or {}
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
            **({"process": PROCESS} if PROCESS else {}),
            **getattr(record, "context", {}),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = getattr(record, "context", {})
        return f"{text} {context}" if context else text
