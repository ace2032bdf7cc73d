"""Providers by name: ``model`` is ``"provider/model"``."""

from __future__ import annotations

from lifecycle.providers.anthropic import AnthropicProvider
from lifecycle.providers.base import Generation, GenerationRequest, Provider, ProviderError
from lifecycle.providers.echo import EchoProvider
from lifecycle.providers.openai import OpenAIProvider

PROVIDERS: dict[str, Provider] = {
    "echo": EchoProvider(),
    "openai": OpenAIProvider(),
    "anthropic": AnthropicProvider(),
}

__all__ = ["PROVIDERS", "Generation", "GenerationRequest", "Provider", "ProviderError", "split_model"]


def split_model(model: str) -> tuple[str, str]:
    """``"openai/gpt-4o"`` → ``("openai", "gpt-4o")``; raises ValueError for an unknown provider."""
    provider, sep, name = model.partition("/")
    if not sep or not name or provider not in PROVIDERS:
        raise ValueError(f"unknown model {model!r}: expected one of {sorted(PROVIDERS)} as 'provider/model'")
    return provider, name
