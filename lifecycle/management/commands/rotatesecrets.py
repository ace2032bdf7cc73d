"""``manage.py rotatesecrets``: re-encrypt every secret stored encrypted (``EncryptedCharField``, in any app)
with the newest of ``SECRETS_ENCRYPTION_KEYS``. Run it after putting a new key first; once it has run, the
old key can be dropped. Safe to run again, and while the service runs (each batch of rows is locked while
it is rewritten)."""

from __future__ import annotations

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import connection, transaction

from orchestrator import crypto

BATCH = 500


def rotate_all() -> int:
    """Re-encrypt every stored secret with the newest key; returns how many rows were rewritten."""
    rewritten = 0
    for model in apps.get_models():
        columns = [f.column for f in model._meta.concrete_fields if isinstance(f, crypto.EncryptedCharField)]
        if not columns:
            continue
        table, pk = model._meta.db_table, model._meta.pk.column
        quote = connection.ops.quote_name
        after = None
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                where = f"WHERE {quote(pk)} > %s " if after is not None else ""
                cursor.execute(
                    f"SELECT {quote(pk)}, {', '.join(map(quote, columns))} FROM {quote(table)} "  # noqa: S608
                    f"{where}ORDER BY {quote(pk)} LIMIT %s FOR UPDATE",
                    [after, BATCH] if after is not None else [BATCH],
                )
                rows = cursor.fetchall()
                for key, *values in rows:
                    assignments = ", ".join(f"{quote(c)} = %s" for c in columns)
                    cursor.execute(
                        f"UPDATE {quote(table)} SET {assignments} WHERE {quote(pk)} = %s",  # noqa: S608
                        [*(crypto.rotate(v) if v else v for v in values), key],
                    )
            rewritten += len(rows)
            if len(rows) < BATCH:
                break
            after = rows[-1][0]
    return rewritten


class Command(BaseCommand):
    help = "Re-encrypt every stored secret with the newest key of SECRETS_ENCRYPTION_KEYS."

    def handle(self, *args, **options) -> None:
        self.stdout.write(f"re-encrypted the secrets of {rotate_all()} rows with the newest key")
