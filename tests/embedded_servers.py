"""pytest plugin (loaded with ``-p`` before pytest-django reads the settings): starts the embedded
PostgreSQL, Redis and Kafka on free ports for the session, points the settings at them through the
environment, and stops them at the end. A server whose URL is already in the environment is used as is."""

from __future__ import annotations

import os

import pytest

from orchestrator.embedded import DEFAULT_STATE_DIR, EmbeddedStack, unconfigured

STATE_DIR = DEFAULT_STATE_DIR / "test"
_stack: EmbeddedStack | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args) -> None:
    global _stack
    _stack = EmbeddedStack.on_free_ports(STATE_DIR, ephemeral=True, **unconfigured())
    _stack.start()
    os.environ.update(_stack.environ())
    # Local-only defaults the tests rely on: loopback backends are allowed through the SSRF guard.
    os.environ.setdefault("DEBUG", "true")


def pytest_unconfigure(config) -> None:
    if _stack is not None:
        _stack.stop()


def embedded_stack() -> EmbeddedStack:
    assert _stack is not None
    return _stack
