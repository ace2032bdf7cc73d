"""pytest plugin (loaded with ``-p`` before pytest-django reads the settings): starts the embedded
PostgreSQL, Redis and Kafka on free ports for the session, points the settings at them through the
environment, and stops them at the end. A server whose URL is already in the environment is used as is."""

from __future__ import annotations

import os

import pytest

from orchestrator.embedded import DEFAULT_STATE_DIR, EmbeddedStack, unconfigured

STATE_DIR = DEFAULT_STATE_DIR / "test"
_stack: EmbeddedStack | None = None

TEST_SETTINGS = {
    "DEBUG": "true",
    "PROVIDER_TIMEOUT_S": "2",
    "PROVIDER_MAX_RETRIES": "2",
    "GENERATION_LEASE_S": "6",
    "RECONCILE_AFTER_S": "5",
    "RECONCILE_INTERVAL_S": "1",
    "WEBHOOK_RETRY_SCHEDULE": "1,1,1",
    "WEBHOOK_TIMEOUT_S": "2",
    "WEBHOOK_LEASE_GRACE_S": "2",
    "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT": "1",
    "REALTIME_RESYNC_S": "2",
}


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args) -> None:
    global _stack
    _stack = EmbeddedStack.on_free_ports(STATE_DIR, ephemeral=True, **unconfigured())
    _stack.start()
    os.environ.update(_stack.environ())
    # The test process and the service processes it starts share these: short leases and timeouts so
    # fault tests finish quickly, loopback backends allowed through the SSRF guard.
    for name, value in TEST_SETTINGS.items():
        os.environ.setdefault(name, value)


def pytest_unconfigure(config) -> None:
    if _stack is not None:
        _stack.stop()


def embedded_stack() -> EmbeddedStack:
    assert _stack is not None
    return _stack
