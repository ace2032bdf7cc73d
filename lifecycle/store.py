"""The hot path's statements, written as SQL: a lifecycle's steps, and the API key of every request.

Every step of every lifecycle goes through three writes (its row, its timeline events, their outbox
messages) and, for a transition, one locking read. Through the ORM each statement costs ~0.4 ms of CPU to
build and compile, more than PostgreSQL spends running it (docs/performance.md). Here the columns, SQL and
value preparation come from the models' own field definitions once, at import, and the writes of one step go
to PostgreSQL in one round trip: Django's psycopg cursor binds parameters on the client side, which lets
several statements share one ``execute``.

Only :mod:`lifecycle.services` writes through this; it keeps every rule (the state machine, leases, what an
event says), this module only how a step is read and written. Other hot reads of a lifecycle (a stream's
opening, in ``realtime``) use :data:`LIFECYCLE_ROWS`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Sequence

import orjson
from django.db import connection
from django.db import transaction as django_transaction
from django.db.models import JSONField
from django.utils import timezone
from psycopg.pq import TransactionStatus

from lifecycle.models import USAGE_SHARDS, ApiKey, Lifecycle, OutboxMessage, Project, TimelineEvent, UsageDaily


class Rows:
    """How one model's rows are read: its columns in order, and a row made back into an instance."""

    def __init__(self, model, alias: str = "") -> None:
        self.model = model
        self.fields = tuple(model._meta.concrete_fields)
        self.attnames = tuple(f.attname for f in self.fields)
        self.by_attname = {f.attname: f for f in self.fields}
        self.json = frozenset(f.attname for f in self.fields if isinstance(f, JSONField))
        prefix = f"{alias}." if alias else ""
        self.columns = ", ".join(prefix + connection.ops.quote_name(f.column) for f in self.fields)

    def instance(self, row: Sequence):
        # psycopg hands jsonb to Django as text (JSONField decodes it): decoded here the same way, faster.
        values = [
            orjson.loads(value) if name in self.json and isinstance(value, str) else value
            for name, value in zip(self.attnames, row, strict=True)
        ]
        return self.model.from_db(connection.alias, self.attnames, values)


_LIFECYCLE = Rows(Lifecycle)
LIFECYCLE_ROWS = Rows(Lifecycle, "l")  # columns as ``l.<column>``
_TABLE = Lifecycle._meta.db_table
_SELECT_FOR_UPDATE = f"SELECT {_LIFECYCLE.columns} FROM {_TABLE} WHERE id = %s FOR UPDATE"  # noqa: S608
# In id order, so two processes locking overlapping batches cannot deadlock.
_SELECT_MANY_FOR_UPDATE = f"SELECT {_LIFECYCLE.columns} FROM {_TABLE} WHERE id = ANY(%s::uuid[]) ORDER BY id FOR UPDATE"  # noqa: S608


def _placeholder(attname: str) -> str:
    return "%s::jsonb" if attname in _LIFECYCLE.json else "%s"


_INSERT = (
    f"INSERT INTO {_TABLE} ({_LIFECYCLE.columns}) "  # noqa: S608
    f"VALUES ({', '.join(_placeholder(name) for name in _LIFECYCLE.attnames)})"
)

_EVENTS = TimelineEvent._meta.db_table
_EVENT_ROW = "(%s, %s, %s, %s, %s, %s::jsonb)"
_OUTBOX = OutboxMessage._meta.db_table
_OUTBOX_ROW = "(%s, %s, %s, %s::jsonb, %s::jsonb, %s)"

_KEY, _PROJECT = Rows(ApiKey, "k"), Rows(Project, "p")
_ACTIVE_KEY = (
    f"SELECT {_KEY.columns}, {_PROJECT.columns} FROM {ApiKey._meta.db_table} k "  # noqa: S608
    f"JOIN {Project._meta.db_table} p ON p.id = k.project_id WHERE k.prefix = %s AND k.revoked_at IS NULL"
)


def _json_text(value) -> str:
    # As Django's JSONField would write it (int keys become strings), and what it could not encode as text.
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def active_key(prefix: str) -> ApiKey | None:
    """The unrevoked API key with this prefix, its project loaded with it, in one statement."""
    with connection.cursor() as cursor:
        cursor.execute(_ACTIVE_KEY, [prefix])
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(_KEY.fields)
    key = _KEY.instance(row[:split])
    key.project = _PROJECT.instance(row[split:])
    return key


def lock(lifecycle_id) -> Lifecycle | None:
    """The lifecycle, its row locked until this transaction ends; ``None`` if there is none."""
    with connection.cursor() as cursor:
        _execute_first(cursor, _SELECT_FOR_UPDATE, [lifecycle_id])
        row = cursor.fetchone()
    return None if row is None else _LIFECYCLE.instance(row)


def lock_many(lifecycle_ids: Sequence) -> list[Lifecycle]:
    """The lifecycles among ``lifecycle_ids`` that exist, their rows locked until this transaction ends."""
    with connection.cursor() as cursor:
        _execute_first(cursor, _SELECT_MANY_FOR_UPDATE, [list(lifecycle_ids)])
        rows = cursor.fetchall()
    return [_LIFECYCLE.instance(row) for row in rows]


_batch = threading.local()


@contextlib.contextmanager
def transaction() -> Iterator[None]:
    """An atomic block of the hot path, in two round trips where Django's takes four: psycopg sends BEGIN on
    its own before the block's first statement and COMMIT on its own at its end. Here BEGIN goes out with the
    first locking read (:func:`lock`, :func:`lock_many`) and COMMIT with the block's writes, which go to
    PostgreSQL together as the block ends (:func:`batched`). Anything else inside, the ORM included, runs in
    the same transaction as in any atomic block, and ``on_commit`` hooks run once it commits; an error
    inside rolls it all back.

    Not nested in another transaction (where it would be a savepoint, and COMMIT would end the outer one):
    there, the block is the caller's, and only batched."""
    if connection.in_atomic_block:
        with batched():
            yield
        return
    with django_transaction.atomic():
        _batch.begin = True
        try:
            with batched(commit=True):
                yield
        finally:
            _batch.begin = False


def _execute_first(cursor, sql: str, params: list) -> None:
    """Execute ``sql``, with BEGIN before it if it opens a :func:`transaction` block. psycopg sends its own
    BEGIN only while it is in charge of transactions (not in autocommit); the block's first statement
    starts the transaction itself, and psycopg goes on in autocommit (what it sends after BEGIN is in the
    transaction anyway) until the block's end: Django commits (or rolls back) and turns autocommit on as
    after any atomic block, and psycopg sends no COMMIT for a transaction already committed."""
    pg = connection.connection
    if getattr(_batch, "begin", False) and pg.info.transaction_status == TransactionStatus.IDLE:
        _batch.begin = False
        pg.autocommit = True
        cursor.execute("BEGIN;\n" + sql, params)
        cursor.nextset()  # past BEGIN's result, to the statement's
    else:
        cursor.execute(sql, params)


@contextlib.contextmanager
def batched(*, commit: bool = False) -> Iterator[None]:
    """The writes made inside the block (:func:`insert`, :func:`update`) go to PostgreSQL together, in one
    round trip, as the block ends (followed by COMMIT, with ``commit``: only :func:`transaction` ends its
    block so); an error inside it writes nothing (the transaction rolls back anyway). Inside another such
    block, the outer one sends them."""
    if getattr(_batch, "pending", None) is not None:
        yield
        return
    _batch.pending = pending = ([], [])
    try:
        yield
    finally:
        del _batch.pending
    if pending[0]:
        # COMMIT goes with the writes once the transaction has begun; with nothing sent yet (idle), psycopg
        # begins it before the writes, and Django commits it.
        if commit and connection.connection.info.transaction_status != TransactionStatus.IDLE:
            pending[0].append("COMMIT")
        _execute(*pending)


def _prepared(lifecycle: Lifecycle, attname: str, *, add: bool = False):
    field = _LIFECYCLE.by_attname[attname]
    value = field.pre_save(lifecycle, add)
    if attname in _LIFECYCLE.json:
        return None if value is None and field.null else _json_text(value)
    return field.get_db_prep_save(value, connection)


def _steps_sql(events: Sequence[TimelineEvent], messages: Sequence[OutboxMessage]) -> tuple[list[str], list]:
    sql, params = [], []
    if events:
        sql.append(
            f"INSERT INTO {_EVENTS} (lifecycle_id, seq, event, at, duration_ms, payload) "  # noqa: S608
            f"VALUES {', '.join([_EVENT_ROW] * len(events))}"
        )
        for e in events:
            params += [e.lifecycle_id, e.seq, e.event, e.at, e.duration_ms, _json_text(e.payload)]
    if messages:
        # In list order: ids are handed out in VALUES order, and the relay publishes in id order.
        sql.append(
            f"INSERT INTO {_OUTBOX} (topic, key, event_type, headers, payload, created_at) "  # noqa: S608
            f"VALUES {', '.join([_OUTBOX_ROW] * len(messages))}"
        )
        now = timezone.now()
        for m in messages:
            params += [m.topic, m.key, m.event_type, _json_text(m.headers), _json_text(m.payload), now]
    return sql, params


def _execute(sql: list[str], params: list) -> None:
    pending = getattr(_batch, "pending", None)
    if pending is not None:
        pending[0].extend(sql)
        pending[1].extend(params)
        return
    with connection.cursor() as cursor:
        cursor.execute(";\n".join(sql), params)


def insert(lifecycle: Lifecycle, *, events: Sequence[TimelineEvent], messages: Sequence[OutboxMessage]) -> None:
    """Write a new lifecycle with its first events and their messages, in one round trip."""
    params = [_prepared(lifecycle, name, add=True) for name in _LIFECYCLE.attnames]
    steps, step_params = _steps_sql(events, messages)
    _execute([_INSERT, *steps], params + step_params)
    lifecycle._state.adding = False
    lifecycle._state.db = connection.alias


def update(
    lifecycle: Lifecycle,
    *,
    fields: Iterable[str],
    events: Sequence[TimelineEvent] = (),
    messages: Sequence[OutboxMessage] = (),
) -> None:
    """Write ``fields`` of a lifecycle this transaction holds locked (and ``updated_at``), with new events
    and their messages, in one round trip."""
    names = list(dict.fromkeys([*fields, "updated_at"]))
    column = connection.ops.quote_name
    assignments = ", ".join(f"{column(_LIFECYCLE.by_attname[n].column)} = {_placeholder(n)}" for n in names)
    steps, step_params = _steps_sql(events, messages)
    _execute(
        [*steps, f"UPDATE {_TABLE} SET {assignments} WHERE id = %s"],  # noqa: S608
        [*step_params, *(_prepared(lifecycle, n) for n in names), lifecycle.pk],
    )


_USAGE = UsageDaily._meta.db_table
_USAGE_ROW = "(%s::uuid, %s::date, %s, %s::smallint, %s::bigint, %s::bigint, %s::bigint, %s::numeric)"
_SHARD = os.getpid() % USAGE_SHARDS


def usage_add(rows: Sequence[tuple]) -> None:
    """Add to the daily usage: rows of ``(project_id, day, model, requests, input_tokens, output_tokens,
    cost_usd)``, one per key (summed by the caller), in key order (two writers cannot deadlock), into this
    process's shard of each."""
    if not rows:
        return
    _execute(
        [
            f"INSERT INTO {_USAGE} AS u (project_id, day, model, shard, requests, input_tokens, output_tokens, "  # noqa: S608
            f"cost_usd) VALUES {', '.join([_USAGE_ROW] * len(rows))} "
            "ON CONFLICT (project_id, day, model, shard) DO UPDATE SET "
            "requests = u.requests + excluded.requests, input_tokens = u.input_tokens + excluded.input_tokens, "
            "output_tokens = u.output_tokens + excluded.output_tokens, cost_usd = u.cost_usd + excluded.cost_usd"
        ],
        [
            value
            for row in sorted(rows, key=lambda r: (str(r[0]), r[1], r[2]))
            for value in (*row[:3], _SHARD, *row[3:])
        ],
    )
