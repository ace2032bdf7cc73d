"""What a browser is sent about one lifecycle, whatever carries it (a WebSocket or Server-Sent Events): the
``snapshot`` it opens with, the timeline events after a ``seq``, and the outcome a final event carries."""

from __future__ import annotations

import uuid
from datetime import datetime

import orjson
from channels.db import database_sync_to_async
from django.db import connection

from lifecycle import selectors, store
from lifecycle.models import ApiKey, Lifecycle, TimelineEvent
from lifecycle.states import EVENT_FOR_STATUS, TERMINAL, Status, friendly_error

# The events after which a lifecycle says nothing more: those of the state machine's terminal statuses.
FINAL_EVENTS = frozenset(EVENT_FOR_STATUS[status] for status in TERMINAL)


def in_db_thread(fn):
    """``fn`` run on a worker thread, many side by side: channels' default runs every socket's database
    work on one thread per process, which queued handshakes behind each other under a connect storm. The
    realtime process's connections come from psycopg's pool (``DB_POOL_MAX_SIZE``), which bounds them."""
    return database_sync_to_async(fn, thread_sensitive=False)


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def opening(lifecycle_id: str, since: int, key_id: int | None = None) -> tuple[Lifecycle | None, list[dict]]:
    """What a stream opens with, in one query: the lifecycle, whether the API key that minted the token was
    revoked since (``key_revoked``), and its events after ``since``. Written as SQL: the ORM's compilation of
    the same query cost more CPU than the two queries it replaces."""
    if not is_uuid(lifecycle_id):
        return None, []
    with connection.cursor() as cursor:
        cursor.execute(_OPENING_SQL, [key_id, since, lifecycle_id])
        row = cursor.fetchone()
    if row is None:
        return None, []
    *columns, key_revoked, events = row
    lifecycle = store.LIFECYCLE_ROWS.instance(columns)
    lifecycle.key_revoked = key_revoked
    if key_revoked or not events:
        return lifecycle, []
    if isinstance(events, str | bytes):
        events = orjson.loads(events)
    # The timestamps as every other message has them (PostgreSQL's JSON trims the microseconds).
    return lifecycle, [item | {"at": datetime.fromisoformat(item["at"]).isoformat()} for item in events]


_OPENING_SQL = f"""
SELECT {store.LIFECYCLE_ROWS.columns},
       EXISTS (SELECT 1 FROM {ApiKey._meta.db_table} k
               WHERE k.id = %s AND k.revoked_at IS NOT NULL) AS key_revoked,
       (SELECT json_agg(json_build_object('seq', e.seq, 'event', e.event, 'at', e.at, 'data', e.payload)
                        ORDER BY e.seq)
          FROM {TimelineEvent._meta.db_table} e
         WHERE e.lifecycle_id = l.id AND e.seq > %s) AS events_after
  FROM {Lifecycle._meta.db_table} l
 WHERE l.id = %s
"""  # noqa: S608 - table names from the models, values as parameters


def events_after(lifecycle: Lifecycle, seq: int) -> list[dict]:
    return [
        {"seq": e.seq, "event": e.event, "at": e.at.isoformat(), "data": e.payload}
        for e in selectors.timeline(lifecycle=lifecycle, after_seq=seq)
    ]


def outcome_of(lifecycle: Lifecycle) -> dict:
    """What the final event of an ended lifecycle carries to the browser: ``result`` when completed, else a
    friendly ``error``."""
    if lifecycle.status == Status.COMPLETED:
        return {"result": lifecycle.result}
    return {"error": friendly_error(lifecycle.error)}


def final_outcome(lifecycle_id: str) -> dict:
    """:func:`outcome_of` the lifecycle as the database holds it now."""
    lifecycle = Lifecycle.objects.filter(id=lifecycle_id).only("status", "result", "error").first()
    return outcome_of(lifecycle) if lifecycle is not None else {"error": friendly_error(None)}


def outcome_in(event: dict) -> dict | None:
    """A final event's outcome as its ``lifecycle.events`` message carries it (docs/events.md), or ``None``
    when it does not (a result too big for the message): then :func:`final_outcome` reads it."""
    if event.get("event") == "lifecycle.completed":
        return {"result": event["result"]} if "result" in event else None
    error = (event.get("data") or {}).get("error")
    return {"error": friendly_error(error)} if isinstance(error, dict) and "code" in error else None


def snapshot(lifecycle: Lifecycle) -> dict:
    return {
        "type": "snapshot",
        "lifecycle": {
            "id": str(lifecycle.id),
            "status": lifecycle.status,
            "model": lifecycle.model,
            "created_at": lifecycle.created_at.isoformat(),
            "metadata": lifecycle.metadata,
            "result": lifecycle.result if lifecycle.status == "completed" else None,
            "error": friendly_error(lifecycle.error) if lifecycle.error else None,
            "last_seq": lifecycle.last_seq,
        },
    }
