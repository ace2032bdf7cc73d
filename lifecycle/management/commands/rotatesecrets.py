"""``manage.py rotatesecrets``: re-encrypt every secret stored encrypted (``EncryptedCharField``, in any app)
with the newest of ``SECRETS_ENCRYPTION_KEYS``. Run it after putting a new key first; once it has run, the
old key can be dropped. Safe to run again, and while the service runs (each batch of rows is locked while
it is rewritten)."""

from __future__ import annotations

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import connection

from orchestrator import crypto


def rotate_all() -> int:
    """Re-encrypt every stored secret with the newest key; returns how many rows were rewritten."""
    rewritten = 0
    for model in apps.get_models():
        columns = [f.column for f in model._meta.concrete_fields if isinstance(f, crypto.EncryptedCharField)]
        if columns:
            table, pk = model._meta.db_table, model._meta.pk.column
            rewritten += crypto.rewrite(connection, table, columns, crypto.rotate, pk=pk)
    return rewritten


class Command(BaseCommand):
    help = "Re-encrypt every stored secret with the newest key of SECRETS_ENCRYPTION_KEYS."

    def handle(self, *args, **options) -> None:
        self.stdout.write(f"re-encrypted the secrets of {rotate_all()} rows with the newest key")
