"""What every bench run sets: production settings (DEBUG off: no per-query bookkeeping, no debug pages),
except what running on loopback needs."""

from __future__ import annotations

import secrets

from cryptography.fernet import Fernet

PRODUCTION_ON_LOOPBACK = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "SECRETS_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    "SECURE_SSL_REDIRECT": "false",  # plain HTTP on loopback, no TLS-terminating proxy in front
    "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",  # the customer backend runs on loopback
    "LOG_LEVEL": "WARNING",
}


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 now (for waiting on a server the bench started)."""
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def service_stack(log_dir, project: str, **settings: str):
    """The Procfile processes' environment over servers already running (``settings`` carry their URLs), the
    database migrated and a project created: returns the (not yet started) processes and the project's API
    key."""
    import json
    import subprocess
    import sys

    from orchestrator.embedded import PROJECT_DIR
    from tests.processes import ServiceProcesses

    stack = ServiceProcesses.create(log_dir=log_dir, **settings)
    manage = {"cwd": PROJECT_DIR, "env": stack.env, "check": True}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], **manage)
    created = subprocess.run([sys.executable, "manage.py", "createproject", project], **manage,
                             capture_output=True, text=True)  # fmt: skip
    return stack, json.loads(created.stdout)["api_key"]
