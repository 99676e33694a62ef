"""Preference-pair data for the recipes that learn from comparisons (reward models, DPO).

`PreferenceConfig` adds to the shared fine-tuning keys: `val_data` (held-out pairs, in the same forms
as `data`; or `val_fraction` of the mixture), `format` (`pair` or `hh_rlhf`, detected per record when
not given) and `truncate`. `PreferenceRecipe.prepare` mixes the files by weight
(`preference_examples.mix_preferences`), checks every record (`file:line` in every error), tokenizes
each reply with its prompt in the chat format and counts the steps; micro-batches are
`preference_examples.collate_pairs` of `batch_size` pairs (2 x batch_size rows).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

import torch

from llama2.data.preference_examples import build_preference_examples, collate_pairs, mix_preferences
from llama2.train.distributed import Runtime
from llama2.train.recipes.finetune import FinetuneConfig, FinetuneRecipe, data_problems, split_off


@dataclass(kw_only=True)
class PreferenceConfig(FinetuneConfig):
    """Fine-tuning keys plus where the held-out pairs come from and how records are read."""

    val_data: str | list[Any] | dict[str, Any] | None = None
    format: Literal["pair", "hh_rlhf"] | None = None
    truncate: Literal["error", "drop"] = "error"

    def problems(self, world_size: int) -> list[str]:
        found = super().problems(world_size)
        if self.val_data is not None:
            found += data_problems("val_data", self.val_data)
            if self.val_fraction:
                found.append("give val_data or val_fraction, not both")
        return found

    def has_validation(self) -> bool:
        return self.val_fraction > 0 or self.val_data is not None

    def missing_validation(self) -> str:
        return "eval_every needs held-out pairs: set val_data (a file of pairs) or val_fraction (e.g. 0.05), or eval_every=0"


class PreferenceRecipe(FinetuneRecipe):
    """`prepare`, `_collate` and `eval_batches` over preference pairs; subclasses add the loss."""

    name = "preference"

    def prepare(self, runtime: Runtime) -> None:
        config = self.config
        tokenizer = self._open_init()
        pairs = mix_preferences(config.data, seed=config.seed, format=config.format)
        if config.val_data is not None:
            train, val = pairs, mix_preferences(config.val_data, seed=config.seed, format=config.format, shuffle=False)
        else:
            train, val = split_off(pairs, config.val_fraction, what="pair(s)")
        self.train_examples = build_preference_examples(tokenizer, train, self.seq_len, truncate=config.truncate)
        self.val_examples = build_preference_examples(tokenizer, val, self.seq_len, truncate=config.truncate) if val else []
        per_step = self._set_length(len(self.train_examples), runtime)
        if runtime.is_main:
            held_out = f", {len(self.val_examples)} held out" if self.val_examples else ""
            print(f"{self.name}: {len(self.train_examples)} pairs{held_out}; {config.max_steps} steps of {per_step} pairs "
                  f"(warmup {config.warmup_steps})", file=sys.stderr, flush=True)

    def _collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return collate_pairs([self.train_examples[i] for i in indices])

    def eval_batches(self, runtime: Runtime) -> list[dict[str, torch.Tensor]]:
        """Held-out pairs, split across ranks (every rank runs the same number of micro-batches)."""
        return [collate_pairs([self.val_examples[i] for i in indices])
                for indices in self._eval_indices(len(self.val_examples), runtime)]
