"""Attempts are claimed from the database by the delivery process, no longer queued as Celery tasks: the
column that tracked when a task was queued goes, and a statement-level trigger NOTIFYs
``webhook_deliveries_due`` when deliveries are inserted, so the delivery workers wake at that commit (as the
outbox wakes the relay: no round trip, once per statement, never for a rolled-back insert)."""

from django.db import migrations

CREATE = """
CREATE FUNCTION webhooks_delivery_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('webhook_deliveries_due', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER webhooks_delivery_notify
    AFTER INSERT ON webhooks_delivery
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks_delivery_notify();
"""

DROP = """
DROP TRIGGER IF EXISTS webhooks_delivery_notify ON webhooks_delivery;
DROP FUNCTION IF EXISTS webhooks_delivery_notify();
"""


class Migration(migrations.Migration):
    dependencies = [("webhooks", "0001_initial")]

    operations = [
        migrations.RemoveField(model_name="delivery", name="enqueued_at"),
        migrations.RunSQL(CREATE, DROP),
    ]
