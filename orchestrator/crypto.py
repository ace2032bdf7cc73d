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
from django.db import models

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


def migration(table: str, *columns: str):
    """A ``RunPython`` pair for a migration that starts encrypting ``columns``: forwards encrypts what is
    stored in clear, backwards decrypts it again."""

    def rewrite(schema_editor, convert) -> None:
        quote = schema_editor.connection.ops.quote_name
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(f"SELECT id, {', '.join(map(quote, columns))} FROM {quote(table)}")  # noqa: S608
            for key, *values in cursor.fetchall():
                assignments = ", ".join(f"{quote(c)} = %s" for c in columns)
                cursor.execute(
                    f"UPDATE {quote(table)} SET {assignments} WHERE id = %s",  # noqa: S608
                    [*(convert(v) if v else v for v in values), key],
                )

    def forwards(apps, schema_editor) -> None:
        rewrite(schema_editor, encrypt)

    def backwards(apps, schema_editor) -> None:
        rewrite(schema_editor, lambda v: decrypt(v) if v.startswith(PREFIX) else v)

    return forwards, backwards
