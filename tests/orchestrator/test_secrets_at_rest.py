"""Secrets at rest (orchestrator/crypto.py): webhook signing secrets and JWT issuers' HS256 secrets are
stored encrypted, and a key rotation (a new key first, ``manage.py rotatesecrets``, the old key dropped)
keeps every endpoint signing."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from orchestrator import crypto
from tests.lifecycle.helpers import create, wait_status
from tests.processes import poll_until
from tests.webhooks.helpers import endpoint, received

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

HS256_SECRET = "a-shared-secret-of-at-least-32-characters"


def stored(table: str, column: str, row_id: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [row_id])  # noqa: S608
        return cursor.fetchone()[0]


@pytest.fixture
def fresh_keys():
    crypto._keys.cache_clear()
    yield
    crypto._keys.cache_clear()


def test_the_database_holds_no_secret_in_clear(api, customer_backend):
    hook, _ = endpoint(api, customer_backend, "silent")
    rotated = api.post(f"/v1/webhook-endpoints/{hook['id']}/rotate-secret").json()
    issuer = api.post(
        "/v1/jwt-issuers", json={"issuer": "https://idp.example.com/", "audience": "a", "secret": HS256_SECRET}
    ).json()

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM webhooks_webhookendpoint) t "
            "UNION ALL SELECT string_agg(t::text, ' ') FROM (SELECT * FROM lifecycle_jwtissuer) t"
        )
        dump = " ".join(row[0] or "" for row in cursor.fetchall())
    for secret in (hook["secret"], rotated["secret"], HS256_SECRET):
        assert secret not in dump and secret.removeprefix("whsec_") not in dump
    assert stored("webhooks_webhookendpoint", "secret", hook["id"]).startswith(crypto.PREFIX)
    assert crypto.decrypt(stored("webhooks_webhookendpoint", "secret", hook["id"])) == rotated["secret"]
    assert crypto.decrypt(stored("webhooks_webhookendpoint", "previous_secret", hook["id"])) == hook["secret"]
    assert crypto.decrypt(stored("lifecycle_jwtissuer", "secret", issuer["id"])) == HS256_SECRET


def test_a_key_rotation_keeps_every_endpoint_signing(api, customer_backend, stack, fresh_keys):
    hook, scenario = endpoint(api, customer_backend, "silent")
    old_key = settings.SECRETS_ENCRYPTION_KEYS[0]  # the stack's processes derive the same one
    new_key = Fernet.generate_key().decode()
    original = stack.env.get("SECRETS_ENCRYPTION_KEYS")

    def deliver(prompt: str, count: int) -> None:
        body = {"model": "echo/x", "prompt": prompt, "delivery": {"mode": "webhook", "endpoint_id": hook["id"]}}
        assert wait_status(api, create(api, body)["id"])["status"] == "completed"
        got = poll_until(lambda: received(customer_backend, scenario), lambda r: len(r) >= count, timeout=15)
        assert got[-1]["verified"] == [True]  # signed with the secret the receiver holds

    def restart_with(keys: str | None) -> None:
        """Every process gets the same keys (here the two that read or write endpoint secrets)."""
        if keys is None:
            stack.env.pop("SECRETS_ENCRYPTION_KEYS", None)
        else:
            stack.env["SECRETS_ENCRYPTION_KEYS"] = keys
        for name in ("web", "delivery"):
            stack.stop(name)
            stack.start(name)

    try:
        # 1. The new key first, the old one still listed: every process decrypts both.
        restart_with(f"{new_key},{old_key}")
        # 2. Re-encrypt what is stored with the new key.
        with override_settings(SECRETS_ENCRYPTION_KEYS=[new_key, old_key]):
            crypto._keys.cache_clear()
            out = io.StringIO()
            call_command("rotatesecrets", stdout=out)
            assert "re-encrypted" in out.getvalue()
        raw = stored("webhooks_webhookendpoint", "secret", hook["id"])
        assert Fernet(new_key).decrypt(raw.removeprefix(crypto.PREFIX).encode()).decode() == hook["secret"]
        deliver("while both keys are listed", 1)
        # 3. The old key dropped: the endpoint still signs, with the secret it always had.
        restart_with(new_key)
        deliver("with the new key alone", 2)
    finally:
        restart_with(original)  # the tables are emptied after the test: nothing stays under the new key
