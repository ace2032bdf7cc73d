"""The delivery trigger NOTIFYs only when its statement inserted rows: an ``INSERT … SELECT`` of operational
events that found nothing to send (most record batches) must not wake every delivery worker for nothing."""

from django.db import migrations

CREATE = """
DROP TRIGGER IF EXISTS webhooks_delivery_notify ON webhooks_delivery;
CREATE OR REPLACE FUNCTION webhooks_delivery_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted) THEN
        PERFORM pg_notify('webhook_deliveries_due', '');
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER webhooks_delivery_notify
    AFTER INSERT ON webhooks_delivery
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks_delivery_notify();
"""

PREVIOUS = """
DROP TRIGGER IF EXISTS webhooks_delivery_notify ON webhooks_delivery;
CREATE OR REPLACE FUNCTION webhooks_delivery_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('webhook_deliveries_due', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER webhooks_delivery_notify
    AFTER INSERT ON webhooks_delivery
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks_delivery_notify();
"""


class Migration(migrations.Migration):
    dependencies = [("webhooks", "0004_secrets_at_rest")]

    operations = [migrations.RunSQL(CREATE, PREVIOUS)]
