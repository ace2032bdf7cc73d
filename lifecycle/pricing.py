"""What a generation cost: its token usage priced by model (shared/ARCHITECTURE.md, Flow control).

Prices are US dollars per million tokens, input and output, for ``provider/model``. A model's dated or
suffixed names (``openai/gpt-4o-2024-08-06``) take the price of the longest name they start with, so
``gpt-4o-mini`` is not priced as ``gpt-4o``. ``MODEL_PRICES`` (JSON: ``{"openai/my-model": [0.5, 1.5]}``)
adds to the defaults below or overrides them; a model with no price is recorded with its tokens and no
cost (``cost_usd: null``), and a daily budget does not count it: price every model a budget should hold.

The defaults are the providers' list prices for standard (not batch, not cached) tokens, as of late 2025.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings

DEFAULT_PRICES: dict[str, tuple[str, str]] = {
    # OpenAI
    "openai/gpt-5": ("1.25", "10.00"),
    "openai/gpt-5-mini": ("0.25", "2.00"),
    "openai/gpt-5-nano": ("0.05", "0.40"),
    "openai/gpt-4.1": ("2.00", "8.00"),
    "openai/gpt-4.1-mini": ("0.40", "1.60"),
    "openai/gpt-4.1-nano": ("0.10", "0.40"),
    "openai/gpt-4o": ("2.50", "10.00"),
    "openai/gpt-4o-mini": ("0.15", "0.60"),
    "openai/o3": ("2.00", "8.00"),
    "openai/o3-mini": ("1.10", "4.40"),
    "openai/o4-mini": ("1.10", "4.40"),
    "openai/gpt-4-turbo": ("10.00", "30.00"),
    "openai/gpt-3.5-turbo": ("0.50", "1.50"),
    # Anthropic
    "anthropic/claude-opus-4": ("15.00", "75.00"),
    "anthropic/claude-opus-4-5": ("5.00", "25.00"),
    "anthropic/claude-sonnet-4": ("3.00", "15.00"),
    "anthropic/claude-haiku-4-5": ("1.00", "5.00"),
    "anthropic/claude-3-7-sonnet": ("3.00", "15.00"),
    "anthropic/claude-3-5-sonnet": ("3.00", "15.00"),
    "anthropic/claude-3-5-haiku": ("0.80", "4.00"),
    "anthropic/claude-3-haiku": ("0.25", "1.25"),
    # The built-in demo provider costs nothing.
    "echo/": ("0", "0"),
}

MILLION = Decimal(1_000_000)


@functools.cache
def prices() -> dict[str, tuple[Decimal, Decimal]]:
    table = {model: (Decimal(i), Decimal(o)) for model, (i, o) in DEFAULT_PRICES.items()}
    extra = orjson.loads(settings.MODEL_PRICES or "{}")
    for model, pair in extra.items():
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ValueError(f"MODEL_PRICES: {model!r} must be [input, output] dollars per million tokens")
        table[model] = (Decimal(str(pair[0])), Decimal(str(pair[1])))
    return table


def price_of(model: str) -> tuple[Decimal, Decimal] | None:
    """The price of the longest priced name ``model`` starts with."""
    table = prices()
    if model in table:
        return table[model]
    matches = [name for name in table if model.startswith(name)]
    return table[max(matches, key=len)] if matches else None


def cost_usd(model: str, usage: dict[str, Any]) -> Decimal | None:
    price = price_of(model)
    if price is None:
        return None
    input_tokens, output_tokens = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    return (input_tokens * price[0] + output_tokens * price[1]) / MILLION


def priced(model: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    """``usage`` with its ``cost_usd`` (a number, rounded to a millionth of a cent; ``None`` unpriced)."""
    usage = dict(usage or {})
    cost = cost_usd(model, usage)
    usage["cost_usd"] = None if cost is None else float(round(cost, 8))
    return usage
