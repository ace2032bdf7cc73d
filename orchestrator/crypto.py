"""Secrets at rest: what the service must read back to use (webhook signing secrets, JWT issuers' HS256
secrets) is stored encrypted with keys from the environment, so a dump of the database signs nothing.

``SECRETS_ENCRYPTION_KEYS`` holds Fernet keys (cryptography's authenticated encryption: AES-128-CBC with an
HMAC-SHA256), newest first. New writes use the newest; every key listed still decrypts, so a rotation is:
put the new key first, deploy, run ``manage.py rotatesecrets`` (re-encrypts every stored secret with it),
then drop the old key. :class:`EncryptedCharField` does it for the ORM; a raw query that reads such a column
decrypts with :func:`decrypt`.
"""

from __future__ import annotations

import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models, transaction

PREFIX = "fernet:"  # marks a stored value as encrypted, so nothing in clear is ever mistaken for it


class SecretUnreadable(Exception):
    """A stored secret no configured key decrypts (a key dropped too early), or one stored in clear."""


@functools.cache
def _keys() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in settings.SECRETS_ENCRYPTION_KEYS])


def encrypt(value: str) -> str:
    if not value or value.startswith(PREFIX):
        return value
    return PREFIX + _keys().encrypt(value.encode()).decode()


def decrypt(value: str) -> str:
    if not value:
        return value
    if not value.startswith(PREFIX):
        raise SecretUnreadable("a secret is stored in clear (run the migrations, or manage.py rotatesecrets)")
    try:
        return _keys().decrypt(value.removeprefix(PREFIX).encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable("no key in SECRETS_ENCRYPTION_KEYS decrypts a stored secret") from exc


def rotate(value: str) -> str:
    """The stored value encrypted with the newest key (a value in clear, encrypted for the first time)."""
    if not value:
        return value
    if not value.startswith(PREFIX):
        return encrypt(value)
    return PREFIX + _keys().rotate(value.removeprefix(PREFIX).encode()).decode()


class EncryptedCharField(models.CharField):
    """A string kept encrypted in the database and in clear in Python. It cannot be filtered on."""

    def from_db_value(self, value, expression, connection):
        return decrypt(value) if value is not None else value

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return encrypt(value) if isinstance(value, str) else value


def rewrite(connection, table: str, columns: list[str], convert, *, pk: str = "id", batch: int = 500) -> int:
    """Rewrite the stored values of ``columns`` with ``convert`` (encrypt, decrypt, rotate), a locked batch
    of rows per transaction, as they are stored (not through the field); returns how many rows."""
    quote = connection.ops.quote_name
    selected = ", ".join(map(quote, columns))
    assignments = ", ".join(f"{quote(c)} = %s" for c in columns)
    rewritten, after = 0, None
    while True:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            where = f"WHERE {quote(pk)} > %s " if after is not None else ""
            cursor.execute(
                f"SELECT {quote(pk)}, {selected} FROM {quote(table)} {where}"  # noqa: S608
                f"ORDER BY {quote(pk)} LIMIT %s FOR UPDATE",
                [after, batch] if after is not None else [batch],
            )
            rows = cursor.fetchall()
            for key, *values in rows:
                cursor.execute(
                    f"UPDATE {quote(table)} SET {assignments} WHERE {quote(pk)} = %s",  # noqa: S608
                    [*(convert(v) if v else v for v in values), key],
                )
        rewritten += len(rows)
        if len(rows) < batch:
            return rewritten
        after = rows[-1][0]


def migration(table: str, *columns: str):
    """A ``RunPython`` pair for a migration that starts encrypting ``columns``: forwards encrypts what is
    stored in clear, backwards decrypts it again."""

    def forwards(apps, schema_editor) -> None:
        rewrite(schema_editor.connection, table, list(columns), encrypt)

    def backwards(apps, schema_editor) -> None:
        rewrite(schema_editor.connection, table, list(columns), lambda v: decrypt(v) if v.startswith(PREFIX) else v)

    return forwards, backwards
