"""What a remote model's tokens cost: the shipped table `prices.yaml` (editable) plus the user's own.

Prices are US dollars per million tokens, input and output apart, as vendors publish them. A model
name is matched against the table by the longest entry it starts with at a "-" boundary, because
APIs answer with dated names ("gpt-4o-2024-08-06") while people price the family ("gpt-4o").
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

import yaml

from llama2.errors import ProviderError

PRICE_FILE = "prices.yaml"


@dataclass(frozen=True)
class Price:
    """US dollars per one million input (prompt) and output (completion) tokens."""

    input: float
    output: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


def parse_prices(entries: object, source: str) -> dict[str, Price]:
    """`{model: {input: X, output: Y}}` from YAML, checked; `source` names the place in errors."""
    if not isinstance(entries, Mapping):
        raise ProviderError(f"{source}: prices must be a mapping of model name to {{input: X, output: Y}}")
    table = {}
    for model, entry in entries.items():
        if not isinstance(entry, Mapping) or set(entry) != {"input", "output"}:
            raise ProviderError(f"{source}: price of {model!r} must be {{input: X, output: Y}} (USD per 1M tokens)")
        values = [entry["input"], entry["output"]]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values):
            raise ProviderError(f"{source}: price of {model!r} must be two numbers >= 0 (USD per 1M tokens)")
        table[str(model)] = Price(float(values[0]), float(values[1]))
    return table


@functools.cache
def shipped_prices() -> Mapping[str, Price]:
    """The table that comes with the package (read once)."""
    text = resources.files("llama2.providers").joinpath(PRICE_FILE).read_text(encoding="utf-8")
    return parse_prices(yaml.safe_load(text) or {}, f"llama2/providers/{PRICE_FILE}")


def price_table(overrides: Mapping[str, Price] | None = None) -> dict[str, Price]:
    """The shipped prices with the user's entries on top."""
    return {**shipped_prices(), **(overrides or {})}


def lookup_price(model: str, table: Mapping[str, Price]) -> Price | None:
    """The price of `model`: an exact entry, else the longest entry it starts with followed by "-"."""
    if model in table:
        return table[model]
    matches = [name for name in table if model.startswith(name + "-")]
    return table[max(matches, key=len)] if matches else None
