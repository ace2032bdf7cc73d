"""Channel-layer group names. Group names allow only a few characters, so identities are hashed."""

from __future__ import annotations

import hashlib

from lifecycle.streaming import live_group as lifecycle_group

__all__ = ["lifecycle_group", "subscriber_group"]


def subscriber_group(project_id: str, user_id: str) -> str:
    digest = hashlib.sha256(f"{project_id}\x00{user_id}".encode()).hexdigest()[:40]
    return f"subscriber.{digest}"
