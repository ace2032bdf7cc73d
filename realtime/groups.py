"""Channel-layer group names. Group names allow only a few characters, so identities are hashed."""

from __future__ import annotations

import hashlib


def lifecycle_group(lifecycle_id: str) -> str:
    return f"lifecycle.{lifecycle_id}"


def subscriber_group(project_id: str, user_id: str) -> str:
    digest = hashlib.sha256(f"{project_id}\x00{user_id}".encode()).hexdigest()[:40]
    return f"subscriber.{digest}"
