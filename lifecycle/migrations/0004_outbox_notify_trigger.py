"""Wake the relay from PostgreSQL itself: a statement-level trigger on the outbox NOTIFYs ``outbox``.

Before, every enqueue sent its own ``SELECT pg_notify(...)``: one more round trip per message, on the accept
path twice. A trigger costs no round trip, fires once per INSERT statement however many rows it writes, and
wakes the relay for rows written by anything, not only by :func:`lifecycle.outbox.enqueue`. PostgreSQL
delivers the notification at commit (never for a rolled-back insert) and folds identical ones in one
transaction into one.
"""

from django.db import migrations

CREATE = """
CREATE FUNCTION lifecycle_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER lifecycle_outbox_notify
    AFTER INSERT ON lifecycle_outboxmessage
    FOR EACH STATEMENT EXECUTE FUNCTION lifecycle_outbox_notify();
"""

DROP = """
DROP TRIGGER IF EXISTS lifecycle_outbox_notify ON lifecycle_outboxmessage;
DROP FUNCTION IF EXISTS lifecycle_outbox_notify();
"""


class Migration(migrations.Migration):
    dependencies = [("lifecycle", "0003_lifecycle_redrive_backoff")]

    operations = [migrations.RunSQL(CREATE, DROP)]
