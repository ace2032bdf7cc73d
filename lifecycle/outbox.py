"""The transactional outbox: Kafka messages written in the same transaction as the change they announce.

:func:`enqueue` is the only way application code sends anything to Kafka; the relay process
(``manage.py relay``) publishes committed rows. A ``NOTIFY`` in the same transaction wakes the relay the
moment the transaction commits, so the outbox adds no polling delay.
"""

from __future__ import annotations

from django.db import connection

from lifecycle.models import OutboxMessage

NOTIFY_CHANNEL = "outbox"

TOPIC_REQUESTS = "lifecycle.requests"
TOPIC_EVENTS = "lifecycle.events"
TOPIC_DLQ = "lifecycle.dlq"
TOPICS = (TOPIC_REQUESTS, TOPIC_EVENTS, TOPIC_DLQ)


def enqueue(*, topic: str, key: str, event_type: str, payload: dict, headers: dict[str, str]) -> OutboxMessage:
    """Add a message to the outbox. Call inside the transaction that makes the change it announces."""
    message = OutboxMessage.objects.create(
        topic=topic, key=key, event_type=event_type, payload=payload, headers=headers
    )
    with connection.cursor() as cursor:
        # Postgres folds identical notifications within one transaction into one, so a burst costs one wake-up.
        cursor.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])
    return message
