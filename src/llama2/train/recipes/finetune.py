"""What every recipe that fine-tunes a checkpoint shares (SFT, reward models, DPO, ...).

`FinetuneConfig` holds the keys they all take — `init`, `data` (a file, a list, or `{file: weight}`),
`output_dir`, `epochs` or `max_steps`, `lr`, `batch_size`, `seq_len`, `val_fraction`, `lora.*`, and
`warmup_ratio` — and checks them whole. `FinetuneRecipe` is the recipe skeleton on the one loop:
it opens the init checkpoint and its tokenizer, sets `max_steps` from `epochs` once the examples are
counted, walks the examples in a seeded per-epoch order (step `s` takes examples `s*G .. s*G+G-1`
of that order, so batches depend on the step alone and resume is exact), splits validation
examples across ranks, builds the model (with LoRA: a frozen base, adapters and whatever
`trainable_modules` names), and exports/finalizes checkpoints. A subclass supplies the data
(`prepare`, `_collate`) and the loss.

Warmup: with `warmup_ratio` r, warmup lasts max(`warmup_steps`, ceil(r * max_steps)) steps — the
paper's reward-model setting "3% of steps, at least 5" is `warmup_ratio: 0.03, warmup_steps: 5`.
"""

from __future__ import annotations

import abc
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llama2.data.sft import parse_mixture
from llama2.errors import ConfigError, Llama2Error
from llama2.model.checkpoint import find_tokenizer, load_state, read_model_args, resolve_model_path, save_meta
from llama2.model.config import ModelArgs
from llama2.model.tokenizer import Tokenizer
from llama2.model.transformer import Transformer
from llama2.train.config import TrainConfig
from llama2.train.distributed import Runtime
from llama2.train.lora import LoraConfig, apply_lora, load_lora_state_dict, merge_lora, save_peft_adapter
from llama2.train.loop import compute_dtype
from llama2.train.metrics import flops_per_token

TOKENIZER_FILE = "tokenizer.model"
ADAPTER_DIR = "adapter"
FINAL_DIR = "model"
WEIGHTS_FILE = "consolidated.00.pth"


@dataclass(kw_only=True)
class FinetuneConfig(TrainConfig):
    """Keys of every fine-tuning recipe on top of the loop's. Give `epochs` or `max_steps` (epochs wins)."""

    data: str | list[Any] | dict[str, Any]
    init: str = "default"
    max_steps: int = 0
    epochs: float | None = None
    seq_len: int | None = None
    val_fraction: float = 0.0
    warmup_ratio: float = 0.0
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
        if not 0.0 <= self.warmup_ratio < 1.0:
            found.append(f"warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")
        if self.eval_every and not self.has_validation():
            found.append(self.missing_validation())
        found += data_problems("data", self.data)
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

    def has_validation(self) -> bool:
        return self.val_fraction > 0

    def missing_validation(self) -> str:
        return "eval_every needs held-out dialogs: set val_fraction (e.g. 0.05) or eval_every=0"

    def lora_config(self) -> LoraConfig | None:
        return None if self.lora is None else LoraConfig.from_mapping(self.lora, source="lora")


def data_problems(key: str, data: Any) -> list[str]:
    """What is wrong with a `data`-like key: its form, and sources that do not exist."""
    try:
        sources = parse_mixture(data)
    except Llama2Error as error:
        return [f"{key}: {error}"]
    return [f"{key}: {source} does not exist" for source, _ in sources
            if isinstance(source, (str, Path)) and not Path(source).expanduser().exists()]


def split_off(items: list, fraction: float, *, what: str = "example(s)") -> tuple[list, list]:
    """`(train, held_out)`: the first round(n * fraction) items held out (at least one when fraction > 0)."""
    held_out = int(round(len(items) * fraction))
    if fraction and held_out == 0:
        held_out = 1
    if held_out >= len(items):
        raise ConfigError(f"data holds {len(items)} {what}; nothing is left to train on after val_fraction")
    return items[held_out:], items[:held_out]


class FinetuneRecipe(abc.ABC):
    """The shared part of fine-tuning recipes (see the module docstring). Subclasses set `Config`,
    implement `prepare` (calling `_open_init` and `_set_length`), `_collate`, `loss`, and may
    override `_new_model` and `_init_state` (the model class and its starting weights)."""

    perplexity = False
    trainable_modules: tuple[str, ...] = ()  # trained besides the adapters under LoRA (e.g. a new head)

    def __init__(self, config: FinetuneConfig) -> None:
        self.config = config
        self.lora = config.lora_config()

    # ---- setup ------------------------------------------------------------------------------

    def _open_init(self) -> Tokenizer:
        """Resolve `init`, read its shape and tokenizer; returns the tokenizer."""
        self.init_path = resolve_model_path(self.config.init)
        self.args: ModelArgs = read_model_args(self.init_path)
        tokenizer_path = find_tokenizer(self.init_path)
        if tokenizer_path is None:
            raise ConfigError(f"init {self.config.init}: no tokenizer.model beside the checkpoint; "
                              "fine-tuning needs the model's tokenizer")
        self.tokenizer_path = tokenizer_path
        self.seq_len = self.config.seq_len or self.args.max_seq_len
        return Tokenizer(tokenizer_path)

    def _set_length(self, num_train: int, runtime: Runtime) -> int:
        """Record the training set size; `epochs` -> `max_steps`, `warmup_ratio` -> `warmup_steps`.
        Returns the examples per optimizer step."""
        config = self.config
        self.num_train = num_train
        per_step = config.batch_size * config.grad_accum * runtime.world_size
        if config.epochs is not None:
            config.max_steps = max(1, math.ceil(config.epochs * num_train / per_step))
        if config.warmup_ratio:
            config.warmup_steps = max(config.warmup_steps, math.ceil(config.warmup_ratio * config.max_steps))
        return per_step

    # ---- batches ----------------------------------------------------------------------------

    def batches(self, step: int, runtime: Runtime, model: nn.Module | None = None) -> list[Any]:
        """This rank's micro-batches of step `step`: examples taken in the seeded per-epoch order."""
        config, per_micro = self.config, self.config.batch_size
        total = per_micro * config.grad_accum * runtime.world_size
        picks = [self._example_at(step * total + i) for i in range(total)]
        return [self._collate(picks[(m * runtime.world_size + runtime.rank) * per_micro:][:per_micro])
                for m in range(config.grad_accum)]

    def _example_at(self, index: int) -> int:
        epoch, offset = divmod(index, self.num_train)
        return int(self._epoch_order(epoch)[offset])

    @functools.lru_cache(maxsize=2)  # a step reads one epoch, or the end of one and the start of the next
    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.config.seed, epoch]).permutation(self.num_train)

    def _eval_indices(self, num_val: int, runtime: Runtime) -> list[list[int]]:
        """Held-out example indices per micro-batch, split across ranks; ranks with fewer examples
        repeat theirs, so every rank runs the same number of micro-batches."""
        config, world, per_micro = self.config, runtime.world_size, self.config.batch_size
        indices = list(range(num_val))[runtime.rank::world] or [num_val - 1]
        count = min(config.eval_batches, math.ceil(math.ceil(num_val / world) / per_micro))
        return [(indices * per_micro)[m * per_micro:(m + 1) * per_micro] for m in range(count)]

    @abc.abstractmethod
    def prepare(self, runtime: Runtime) -> None:
        """Read and tokenize the data (after `_open_init`), then `_set_length`."""

    @abc.abstractmethod
    def _collate(self, indices: list[int]) -> Any:
        """The micro-batch of training examples `indices`."""

    @abc.abstractmethod
    def eval_batches(self, runtime: Runtime) -> list[Any]:
        """This rank's validation micro-batches (`_eval_indices`)."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> Any:
        """The micro-batch's `LossOutput`."""

    # ---- model ------------------------------------------------------------------------------

    def _new_model(self) -> nn.Module:
        return Transformer(self.args)

    def _init_state(self) -> dict[str, torch.Tensor]:
        """The starting weights (fp32) before any adapters: the init checkpoint's."""
        _, state = load_state(self.init_path, self.args)
        return {name: tensor.float() for name, tensor in state.items()}

    def build_model(self) -> nn.Module:
        model = self._new_model()
        if self.lora is not None:
            self._adapt(model, base_dtype=self._base_dtype())
        return model

    def _adapt(self, model: nn.Module, **options: Any) -> None:
        apply_lora(model, self.lora, **options)
        for name in self.trainable_modules:
            model.get_submodule(name).float().requires_grad_(True)

    def _base_dtype(self) -> torch.dtype | None:
        """LoRA keeps the frozen base in bf16 where the run computes in bf16 (half the memory)."""
        device = torch.device("cuda" if torch.cuda.is_available() and self.config.device != "cpu" else "cpu")
        return torch.bfloat16 if compute_dtype(self.config.dtype, device) == torch.bfloat16 else None

    def initial_state(self) -> dict[str, torch.Tensor]:
        """`_init_state()`, plus freshly initialised adapters (seeded) under LoRA."""
        state = self._init_state()
        if self.lora is None:
            return state
        model = self._new_model()
        model.load_state_dict(state)
        self._adapt(model, generator=torch.Generator().manual_seed(self.config.seed))
        return model.state_dict()

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
        out = Path(self.config.output_dir) / FINAL_DIR
        save_meta(self._merged_model(checkpoint), self.args, out, tokenizer=self.tokenizer_path, overwrite=True)
        return out

    def _merged_model(self, checkpoint: Path) -> nn.Module:
        model = self._trained_model(checkpoint)
        return merge_lora(model) if self.lora is not None else model

    def _trained_model(self, checkpoint: Path) -> nn.Module:
        state = torch.load(checkpoint / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model = self._new_model()
        if self.lora is None:
            model.load_state_dict(state)
            return model
        apply_lora(model, self.lora)
        model.load_state_dict({k: v for k, v in state.items() if "lora_" not in k}, strict=False)
        load_lora_state_dict(model, {k: v for k, v in state.items() if "lora_" in k})
        return model
