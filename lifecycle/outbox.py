"""The transactional outbox: Kafka messages written in the same transaction as the change they announce.

:func:`enqueue` is the only way application code sends anything to Kafka; the relay process
(``manage.py relay``) publishes committed rows. A trigger on the table (migration 0004) NOTIFYs
``outbox`` once per INSERT statement; PostgreSQL delivers it when the transaction commits, which wakes the
relay at once, so the outbox adds no polling delay and no round trip.
"""

from __future__ import annotations

from lifecycle.models import OutboxMessage

NOTIFY_CHANNEL = "outbox"

TOPIC_REQUESTS = "lifecycle.requests"
TOPIC_EVENTS = "lifecycle.events"
TOPIC_DLQ = "lifecycle.dlq"
TOPICS = (TOPIC_REQUESTS, TOPIC_EVENTS, TOPIC_DLQ)


def message(*, topic: str, key: str, event_type: str, payload: dict, headers: dict[str, str]) -> OutboxMessage:
    """An outbox row, not yet written: ``lifecycle.store`` writes it with the step it announces."""
    return OutboxMessage(topic=topic, key=key, event_type=event_type, payload=payload, headers=headers)


def enqueue(*, topic: str, key: str, event_type: str, payload: dict, headers: dict[str, str]) -> OutboxMessage:
    """Add a message to the outbox. Call inside the transaction that makes the change it announces."""
    return OutboxMessage.objects.create(topic=topic, key=key, event_type=event_type, payload=payload, headers=headers)
