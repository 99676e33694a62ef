"""Supervised fine-tuning (Llama 2 §3.1; LLAMA2.md §3), optionally through LoRA adapters.

Dialogs (`data.sft`: messages, prompt/completion or Alpaca records, JSONL or Parquet, several files
mixed by weight) become training examples through the model core's chat format, with the loss on
assistant tokens only (every assistant turn of a multi-turn dialog). Examples are packed into
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

import functools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llama2.data.sft import mix_sft, parse_mixture
from llama2.data.sft_examples import PackedRows, attention_mask, build_examples, pack_examples
from llama2.errors import ConfigError, Llama2Error
from llama2.model.checkpoint import find_tokenizer, load_state, read_model_args, resolve_model_path, save_meta
from llama2.model.config import ModelArgs
from llama2.model.tokenizer import Tokenizer
from llama2.model.transformer import Transformer
from llama2.train.config import TrainConfig
from llama2.train.distributed import Runtime
from llama2.train.lora import LoraConfig, apply_lora, load_lora_state_dict, merge_lora, save_peft_adapter
from llama2.train.loop import LossOutput, compute_dtype
from llama2.train.metrics import flops_per_token

TOKENIZER_FILE = "tokenizer.model"
ADAPTER_DIR = "adapter"
FINAL_DIR = "model"


@dataclass(kw_only=True)
class SFTConfig(TrainConfig):
    """SFT settings on top of the loop's. `data` is a file, a list of files, or `{file: weight}`;
    `init` a checkpoint folder or `default`. Give `epochs` or `max_steps` (epochs wins)."""

    data: str | list[Any] | dict[str, Any]
    init: str = "default"
    max_steps: int = 0
    epochs: float | None = None
    seq_len: int | None = None
    packing: Literal["block_diagonal", "concatenate"] = "block_diagonal"
    format: Literal["messages", "prompt_completion", "alpaca"] | None = None
    system_prompt: str | None = None
    truncate: Literal["error", "drop"] = "error"
    val_fraction: float = 0.0
    lora: dict[str, Any] | None = None
    lr: float = 2e-5
    weight_decay: float = 0.1

    def problems(self, world_size: int) -> list[str]:
        found = [p for p in super().problems(world_size) if not p.startswith("max_steps")]
        if self.epochs is None and self.max_steps <= 0:
            found.append("give epochs (e.g. 2, as the paper) or max_steps")
        if self.epochs is not None and self.epochs <= 0:
            found.append(f"epochs must be positive, got {self.epochs}")
        if self.seq_len is not None and self.seq_len <= 1:
            found.append(f"seq_len must be at least 2, got {self.seq_len}")
        if not 0.0 <= self.val_fraction < 1.0:
            found.append(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if self.eval_every and self.val_fraction == 0:
            found.append("eval_every needs held-out dialogs: set val_fraction (e.g. 0.05) or eval_every=0")
        try:
            sources = parse_mixture(self.data)
        except Llama2Error as error:
            found.append(f"data: {error}")
        else:
            found += [f"data: {source} does not exist" for source, _ in sources
                      if isinstance(source, (str, Path)) and not Path(source).expanduser().exists()]
        try:
            self.lora_config()
        except Llama2Error as error:
            found.append(str(error))
        try:
            args = read_model_args(resolve_model_path(self.init))
        except Llama2Error as error:
            return found + [f"init: {error}"]
        if self.seq_len is not None and self.seq_len > args.max_seq_len:
            found.append(f"seq_len {self.seq_len} exceeds the model's max_seq_len {args.max_seq_len}")
        return found

    def lora_config(self) -> LoraConfig | None:
        return None if self.lora is None else LoraConfig.from_mapping(self.lora, source="lora")


class SFT:
    """The SFT recipe for the one loop (see `llama2.train.loop.Recipe`)."""

    Config = SFTConfig
    perplexity = True

    def __init__(self, config: SFTConfig) -> None:
        self.config = config
        self.lora = config.lora_config()

    # ---- data -------------------------------------------------------------------------------

    def prepare(self, runtime: Runtime) -> None:
        """Read, split, tokenize and pack the dialogs (every rank alike: it is deterministic)."""
        config = self.config
        self.init_path = resolve_model_path(config.init)
        self.args: ModelArgs = read_model_args(self.init_path)
        tokenizer_path = find_tokenizer(self.init_path)
        if tokenizer_path is None:
            raise ConfigError(f"init {config.init}: no tokenizer.model beside the checkpoint; SFT needs the model's tokenizer")
        self.tokenizer_path = tokenizer_path
        tokenizer = Tokenizer(tokenizer_path)
        seq_len = config.seq_len or self.args.max_seq_len
        dialogs = mix_sft(config.data, seed=config.seed, format=config.format)
        held_out = int(round(len(dialogs) * config.val_fraction))
        if config.val_fraction and held_out == 0:
            held_out = 1
        train, val = dialogs[held_out:], dialogs[:held_out]
        if not train:
            raise ConfigError(f"data holds {len(dialogs)} dialog(s); nothing is left to train on after val_fraction")

        def rows(part) -> PackedRows:
            examples = build_examples(tokenizer, part, seq_len, truncate=config.truncate,
                                      system_prompt=config.system_prompt)
            return pack_examples(examples, seq_len, mode=config.packing)

        self.train_rows = rows(train)
        self.val_rows = rows(val) if val else None
        self.seq_len = seq_len
        per_step = config.batch_size * config.grad_accum * runtime.world_size
        if config.epochs is not None:
            config.max_steps = max(1, math.ceil(config.epochs * len(self.train_rows) / per_step))
        if runtime.is_main:
            print(f"sft: {len(train)} dialogs in {len(self.train_rows)} rows of {seq_len} tokens "
                  f"({self.train_rows.fill:.0%} full, {self.train_rows.num_loss_tokens} trained tokens); "
                  f"{config.max_steps} steps of {per_step} rows", file=sys.stderr, flush=True)

    def batches(self, step: int, runtime: Runtime, model: nn.Module | None = None) -> list[dict[str, torch.Tensor]]:
        """This rank's micro-batches of step `step`: rows taken in the seeded per-epoch order."""
        config, per_micro = self.config, self.config.batch_size
        total = per_micro * config.grad_accum * runtime.world_size
        picks = [self._row_at(step * total + i) for i in range(total)]
        return [self.train_rows.batch(picks[(m * runtime.world_size + runtime.rank) * per_micro:][:per_micro])
                for m in range(config.grad_accum)]

    def _row_at(self, index: int) -> int:
        epoch, offset = divmod(index, len(self.train_rows))
        return int(self._epoch_order(epoch)[offset])

    @functools.lru_cache(maxsize=2)  # a step reads one epoch, or the end of one and the start of the next
    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.config.seed, epoch]).permutation(len(self.train_rows))

    def eval_batches(self, runtime: Runtime) -> list[dict[str, torch.Tensor]]:
        """Held-out rows, split across ranks; ranks with fewer rows repeat their last (same count)."""
        assert self.val_rows is not None
        config, world = self.config, runtime.world_size
        indices = list(range(len(self.val_rows)))[runtime.rank::world] or [len(self.val_rows) - 1]
        per_micro = config.batch_size
        count = min(config.eval_batches, math.ceil(math.ceil(len(self.val_rows) / world) / per_micro))
        return [self.val_rows.batch((indices * per_micro)[m * per_micro:(m + 1) * per_micro]) for m in range(count)]

    # ---- model ------------------------------------------------------------------------------

    def build_model(self) -> nn.Module:
        model = Transformer(self.args)
        if self.lora is not None:
            apply_lora(model, self.lora, base_dtype=self._base_dtype())
        return model

    def _base_dtype(self) -> torch.dtype | None:
        """LoRA keeps the frozen base in bf16 where the run computes in bf16 (half the memory)."""
        device = torch.device("cuda" if torch.cuda.is_available() and self.config.device != "cpu" else "cpu")
        return torch.bfloat16 if compute_dtype(self.config.dtype, device) == torch.bfloat16 else None

    def initial_state(self) -> dict[str, torch.Tensor]:
        """The init checkpoint's weights (fp32), plus freshly initialised adapters (seeded)."""
        _, state = load_state(self.init_path, self.args)
        state = {name: tensor.float() for name, tensor in state.items()}
        if self.lora is None:
            return state
        model = Transformer(self.args)
        model.load_state_dict(state)
        apply_lora(model, self.lora, generator=torch.Generator().manual_seed(self.config.seed))
        return model.state_dict()

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

    def flops_per_token(self) -> float:
        return flops_per_token(self.args, self.seq_len)

    # ---- outputs ----------------------------------------------------------------------------

    def export(self, folder: Path) -> None:
        """params.json and tokenizer.model beside the weights; with LoRA also `adapter/` (PEFT)."""
        (folder / "params.json").write_text(json.dumps(self.args.to_params(), indent=2) + "\n")
        (folder / TOKENIZER_FILE).write_bytes(self.tokenizer_path.read_bytes())
        if self.lora is not None:
            model = self._trained_model(folder)
            save_peft_adapter(model, self.lora, folder / ADAPTER_DIR, base_model_name_or_path=str(self.init_path))

    def finalize(self, checkpoint: Path) -> Path:
        """OUTPUT_DIR/model: the trained model as a plain Meta checkpoint (LoRA merged in)."""
        model = self._trained_model(checkpoint)
        if self.lora is not None:
            model = merge_lora(model)
        out = Path(self.config.output_dir) / FINAL_DIR
        save_meta(model, self.args, out, tokenizer=self.tokenizer_path, overwrite=True)
        return out

    def _trained_model(self, checkpoint: Path) -> Transformer:
        state = torch.load(checkpoint / "consolidated.00.pth", map_location="cpu", weights_only=True)
        model = Transformer(self.args)
        if self.lora is None:
            model.load_state_dict(state)
            return model
        apply_lora(model, self.lora)
        model.load_state_dict({k: v for k, v in state.items() if "lora_" not in k}, strict=False)
        load_lora_state_dict(model, {k: v for k, v in state.items() if "lora_" in k})
        return model
