"""Supervised fine-tuning (Llama 2 §3.1; LLAMA2.md §3), optionally through LoRA adapters.

Dialogs (`data.sft`: messages, prompt/completion or Alpaca records, JSONL or Parquet, several files
mixed by weight) become training examples through the model core's chat format, with the loss on
assistant tokens only (every assistant turn of a multi-turn dialog). `template: text` trains
prompt/completion pairs as plain text instead, `BOS prompt completion EOS` with the loss on the
completion, for a task that a harness scores by continuing raw text (`sft_examples.encode_text_pair`). Examples are packed into
`seq_len` rows: by default block-diagonally (positions restart and attention stops at each
dialog's end, so packing changes nothing but speed), or `packing: concatenate` as the paper did.

Rows are fixed in `prepare`; optimizer step `s` takes the global batch of rows `s*G .. s*G+G-1` of
the epoch-by-epoch shuffled order (`numpy.random.default_rng([seed, epoch])`), so batches depend on
the step alone and a resumed run reads exactly the same rows. `epochs` sets `max_steps` when given.

With `lora` the base weights are frozen (in bf16 when `dtype` resolves to bf16) and only adapters
train; every checkpoint also carries the adapters in PEFT's format (`adapter/`), and
`finalize` writes OUTPUT_DIR/model: the merged model as an ordinary checkpoint that
`Llama.from_pretrained`, `llama2 chat`, `llama2 eval` and `llama2 serve` load.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from llama2.data.sft import mix_sft
from llama2.data.sft_examples import PackedRows, attention_mask, build_examples, pack_examples
from llama2.train.distributed import Runtime
from llama2.train.loop import LossOutput
from llama2.train.recipes.finetune import FinetuneConfig, FinetuneRecipe, split_off


@dataclass(kw_only=True)
class SFTConfig(FinetuneConfig):
    """SFT settings on top of the shared fine-tuning keys (`finetune.FinetuneConfig`: `init`,
    `data` as a file, a list of files or `{file: weight}`, `epochs` or `max_steps`, `lora`, ...)."""

    packing: Literal["block_diagonal", "concatenate"] = "block_diagonal"
    format: Literal["messages", "prompt_completion", "alpaca"] | None = None
    template: Literal["chat", "text"] = "chat"
    system_prompt: str | None = None
    truncate: Literal["error", "drop"] = "error"

    def problems(self, world_size: int) -> list[str]:
        found = super().problems(world_size)
        if self.template == "text" and self.system_prompt is not None:
            found.append("system_prompt belongs to the chat template; remove it or set template: chat")
        return found


class SFT(FinetuneRecipe):
    """The SFT recipe for the one loop (see `llama2.train.loop.Recipe`)."""

    Config = SFTConfig
    perplexity = True

    # ---- data -------------------------------------------------------------------------------

    def prepare(self, runtime: Runtime) -> None:
        """Read, split, tokenize and pack the dialogs (every rank alike: it is deterministic)."""
        config = self.config
        tokenizer = self._open_init()
        dialogs = mix_sft(config.data, seed=config.seed, format=config.format)
        train, val = split_off(dialogs, config.val_fraction, what="dialog(s)")

        def rows(part) -> PackedRows:
            examples = build_examples(tokenizer, part, self.seq_len, truncate=config.truncate,
                                      system_prompt=config.system_prompt, template=config.template)
            return pack_examples(examples, self.seq_len, mode=config.packing)

        self.train_rows = rows(train)
        self.val_rows = rows(val) if val else None
        per_step = self._set_length(len(self.train_rows), runtime)
        if runtime.is_main:
            print(f"sft: {len(train)} dialogs in {len(self.train_rows)} rows of {self.seq_len} tokens "
                  f"({self.train_rows.fill:.0%} full, {self.train_rows.num_loss_tokens} trained tokens); "
                  f"{config.max_steps} steps of {per_step} rows", file=sys.stderr, flush=True)

    def _collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return self.train_rows.batch(indices)

    def eval_batches(self, runtime: Runtime) -> list[dict[str, torch.Tensor]]:
        """Held-out rows, split across ranks; ranks with fewer rows repeat their last (same count)."""
        assert self.val_rows is not None
        return [self.val_rows.batch(indices) for indices in self._eval_indices(len(self.val_rows), runtime)]

    # ---- model ------------------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        """Summed cross-entropy over the assistant tokens (`loss_mask`) of the packed rows."""
        tokens, targets, keep = batch["tokens"], batch["targets"], batch["loss_mask"]
        if self.config.packing == "block_diagonal":
            mask = attention_mask(batch["segment_ids"], batch["positions"])
            logits = model(tokens, positions=batch["positions"], mask=mask)
        else:
            logits = model(tokens)
        loss_sum = F.cross_entropy(logits[keep], targets[keep], reduction="sum")
        return LossOutput(loss_sum=loss_sum, count=keep.sum(), tokens=tokens.numel())
