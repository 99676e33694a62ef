"""Pretraining (Llama 2 §2; LLAMA2.md §2): next-token cross-entropy on packed token shards.

`data` is a shard directory (`llama2 data tokenize`), or a corpus — text, JSONL or Parquet files,
a folder or a glob, or `sample` for the small corpus shipped with the package — that is tokenized
into `OUTPUT_DIR/data` on first use, with `tokenizer` (a tokenizer.model, or `train` to fit a
Llama-style one of the model's vocabulary size on the corpus first).

Batches are a function of (seed, step): step `s` draws the global batch's window starts from
`numpy.random.default_rng([seed, s])` and rank `r` takes its share, so a resumed run, or the same
global batch split over more processes, reads exactly the same tokens.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llama2.data.corpus import DataError, read_documents, resolve_inputs, sample_corpus_path
from llama2.data.shards import MANIFEST, TOKENIZER_FILE, Manifest, TokenSplit, write_shards
from llama2.data.tokenizer_training import train_tokenizer
from llama2.errors import ConfigError, Llama2Error
from llama2.model.checkpoint import load_state, read_model_args
from llama2.model.config import ModelArgs, get_preset
from llama2.model.tokenizer import Tokenizer
from llama2.model.transformer import Transformer
from llama2.train.config import TrainConfig, coerce, describe, did_you_mean
from llama2.train.distributed import Runtime, barrier
from llama2.train.loop import LossOutput
from llama2.train.metrics import flops_per_token

SAMPLE = "sample"
TRAIN_TOKENIZER = "train"
RANDOM_INIT = "random"
PREPARED_DATA = "data"  # folder under output_dir for a corpus tokenized on first use


@dataclass(kw_only=True)
class PretrainConfig(TrainConfig):
    """Pretraining settings on top of the loop's.

    `model` is a preset name (`tiny`, `110m`, `7b`, ...) or a mapping of `ModelArgs` fields, with
    an optional `preset` to start from; `vocab_size` defaults to the tokenizer's. With
    `init` a checkpoint folder, `model` may be left out (the checkpoint's shape is used).
    """

    data: str
    model: str | dict[str, Any] | None = None
    tokenizer: str | None = None
    seq_len: int = 2048
    init: str = RANDOM_INIT
    val_fraction: float = 0.01

    def problems(self, world_size: int) -> list[str]:
        found = super().problems(world_size)
        if self.seq_len <= 0:
            found.append(f"seq_len must be positive, got {self.seq_len}")
        if not 0.0 <= self.val_fraction < 1.0:
            found.append(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        try:
            plan = plan_data(self)
        except Llama2Error as error:
            return found + [str(error)]
        found.extend(plan.problems(self))
        try:
            args = model_args(self, plan.vocab_size)
        except Llama2Error as error:
            return found + [str(error)]
        if plan.vocab_size is not None and plan.vocab_size > args.vocab_size:
            found.append(f"the tokenizer has {plan.vocab_size} pieces but the model only {args.vocab_size} embedding rows; "
                         "leave model.vocab_size out to take the tokenizer's")
        if self.seq_len > args.max_seq_len:
            found.append(f"seq_len {self.seq_len} exceeds the model's max_seq_len {args.max_seq_len}")
        return found


@dataclass(frozen=True)
class DataPlan:
    """Where the shards are (or will be), and what to build them from when they are not there yet."""

    shards: Path
    corpus: tuple[Path, ...]  # inputs still to tokenize into `shards`; empty when they exist
    tokenizer: Path | None  # for a corpus; None means train one
    vocab_size: int | None  # the tokenizer's, when it is known without training it

    def problems(self, config: PretrainConfig) -> list[str]:
        """Checks that need the shards' manifest: enough tokens for a window, a validation split."""
        if self.corpus:
            return []
        manifest = Manifest.load(self.shards)
        found = []
        train_tokens = manifest.splits.get("train")
        if train_tokens is None or train_tokens.tokens <= config.seq_len:
            found.append(f"{self.shards}: the train split holds {train_tokens.tokens if train_tokens else 0} tokens, "
                         f"fewer than seq_len + 1 = {config.seq_len + 1}")
        val = manifest.splits.get("val")
        if config.eval_every and (val is None or val.tokens <= config.seq_len):
            found.append(f"{self.shards}: the val split holds {val.tokens if val else 0} tokens, too few for one "
                         f"window of seq_len {config.seq_len}; set eval_every=0 or tokenize with a larger val fraction")
        return found


def plan_data(config: PretrainConfig) -> DataPlan:
    """Resolve `data` / `tokenizer` without building anything (a `DataError` says what is wrong)."""
    prepared = Path(config.output_dir) / PREPARED_DATA
    data = Path(config.data).expanduser()
    if config.data != SAMPLE and (data / MANIFEST).is_file():
        return DataPlan(data, (), _shard_tokenizer(data, config.tokenizer), Manifest.load(data).vocab_size)
    try:
        corpus = tuple(p.resolve() for p in resolve_inputs([sample_corpus_path() if config.data == SAMPLE else data]))
    except DataError as error:
        raise DataError(f"data: {error}; give a shard folder (with manifest.json), a corpus, or 'sample'") from None
    tokenizer = _corpus_tokenizer(config.tokenizer, config.data)
    vocab_size = Tokenizer(tokenizer).n_words if tokenizer is not None else None
    if (prepared / MANIFEST).is_file():
        _check_prepared(prepared, corpus, tokenizer)
        return DataPlan(prepared, (), prepared / TOKENIZER_FILE, Manifest.load(prepared).vocab_size)
    return DataPlan(prepared, corpus, tokenizer, vocab_size)


def _shard_tokenizer(shards: Path, tokenizer: str | None) -> Path:
    if tokenizer == TRAIN_TOKENIZER:
        raise DataError(f"tokenizer=train fits a tokenizer on a corpus, but {shards} is already tokenized; leave tokenizer out")
    path = Path(tokenizer).expanduser() if tokenizer is not None else shards / TOKENIZER_FILE
    if not path.is_file():
        raise DataError(f"tokenizer: {path} not found; shard folders carry their tokenizer.model, or give tokenizer=PATH")
    return path


def _corpus_tokenizer(tokenizer: str | None, data: str) -> Path | None:
    if tokenizer is None:
        raise DataError(f"data {data!r} is a corpus to tokenize: set tokenizer to a tokenizer.model, or to 'train' "
                        "to fit one of the model's vocabulary size on it")
    if tokenizer == TRAIN_TOKENIZER:
        return None
    path = Path(tokenizer).expanduser()
    if not path.is_file():
        raise DataError(f"tokenizer: {path} not found; give a tokenizer.model, or 'train'")
    return path


def _check_prepared(prepared: Path, corpus: tuple[Path, ...], tokenizer: Path | None) -> None:
    """Shards tokenized on an earlier run must come from the same inputs (and tokenizer, if given)."""
    sources = [source.path for source in Manifest.load(prepared).sources]
    same_tokenizer = tokenizer is None or tokenizer.read_bytes() == (prepared / TOKENIZER_FILE).read_bytes()
    if sources != [str(path) for path in corpus] or not same_tokenizer:
        raise DataError(f"{prepared} holds shards of other inputs or another tokenizer; delete it or choose another output_dir")


def model_args(config: PretrainConfig, vocab_size: int | None) -> ModelArgs:
    """The model's shape from `model` (and the checkpoint given as `init`, if any)."""
    init_args = read_model_args(Path(config.init).expanduser()) if config.init != RANDOM_INIT else None
    if config.model is None:
        if init_args is None:
            raise ConfigError("model is missing: give a preset name or ModelArgs fields (or init=CHECKPOINT)")
        return init_args
    args = _args_from_spec(config.model, vocab_size)
    if init_args is not None and init_args != args:
        raise ConfigError(f"model {args} differs from init checkpoint {config.init}'s {init_args}; leave model out to use the checkpoint's")
    return args


def _args_from_spec(spec: str | dict[str, Any], vocab_size: int | None) -> ModelArgs:
    if isinstance(spec, str):
        return get_preset(spec)
    fields = dict(spec)
    preset = fields.pop("preset", None)
    hints = typing.get_type_hints(ModelArgs)
    wrong = [f"unknown key model.{key}{did_you_mean(str(key), [*hints, 'preset'])}" for key in fields if key not in hints]
    for key, value in list(fields.items()):
        if key in hints:
            fields[key], ok = coerce(value, hints[key])
            if not ok:
                wrong.append(f"model.{key} must be {describe(hints[key])}, got {value!r}")
    if wrong:
        raise ConfigError("; ".join(wrong))
    if preset is not None:
        if not isinstance(preset, str):
            raise ConfigError(f"model.preset must be a preset name, got {preset!r}")
        return get_preset(preset).replace(**fields)
    if "vocab_size" not in fields:
        if vocab_size is None:
            raise ConfigError("model.vocab_size is needed when the tokenizer is trained on the corpus")
        fields["vocab_size"] = vocab_size
    try:
        return ModelArgs(**fields)
    except TypeError as error:
        raise ConfigError(f"model: {error}") from None


class Pretrain:
    """The pretraining recipe for the one loop (see `llama2.train.loop.Recipe`)."""

    Config = PretrainConfig
    perplexity = True

    def __init__(self, config: PretrainConfig) -> None:
        self.config = config

    def prepare(self, runtime: Runtime) -> None:
        """Tokenize a corpus into OUTPUT_DIR/data on first use (rank 0), then open the splits."""
        plan = plan_data(self.config)
        if plan.corpus:
            if runtime.is_main:
                _build_shards(plan, self.config)
            barrier(runtime)
            plan = plan_data(self.config)
        self.tokenizer_path = plan.tokenizer
        self.train_split = TokenSplit(plan.shards, "train")
        self.val_split = TokenSplit(plan.shards, "val") if self.config.eval_every else None
        self.args = model_args(self.config, plan.vocab_size)
        problems = plan.problems(self.config)  # shards built just now are checked only now
        if problems:
            raise DataError("; ".join(problems))

    def build_model(self) -> nn.Module:
        return Transformer(self.args)

    def initial_state(self) -> dict[str, torch.Tensor]:
        """Seeded random weights (the same for any number of processes), or the `init` checkpoint's."""
        if self.config.init != RANDOM_INIT:
            _, state = load_state(Path(self.config.init).expanduser(), self.args)
            return {name: tensor.float() for name, tensor in state.items()}
        model = Transformer(self.args)
        model.init_weights(torch.Generator().manual_seed(self.config.seed))
        return model.state_dict()

    def batches(self, step: int, runtime: Runtime, model: nn.Module | None = None) -> list[dict[str, torch.Tensor]]:
        """Rank `runtime.rank`'s micro-batches of step `step`: `tokens` and `targets`, each (B, T).
        Pretraining reads its windows from the shards; it never needs `model`."""
        config = self.config
        per_micro = config.batch_size
        total = per_micro * config.grad_accum * runtime.world_size
        rng = np.random.default_rng([config.seed, step])
        starts = rng.integers(0, self.train_split.num_tokens - config.seq_len, size=total)
        return [self._windows(self.train_split, starts[(m * runtime.world_size + runtime.rank) * per_micro:][:per_micro])
                for m in range(config.grad_accum)]

    def eval_batches(self, runtime: Runtime) -> list[dict[str, torch.Tensor]]:
        """`eval_batches` micro-batches per rank of fixed windows spread evenly over the val split."""
        config, split = self.config, self.val_split
        per_micro, world = config.batch_size, runtime.world_size
        total = config.eval_batches * per_micro * world
        starts = np.linspace(0, split.num_tokens - config.seq_len - 1, total).astype(np.int64)
        return [self._windows(split, starts[(m * world + runtime.rank) * per_micro:][:per_micro])
                for m in range(config.eval_batches)]

    def _windows(self, split: TokenSplit, starts: np.ndarray) -> dict[str, torch.Tensor]:
        rows = torch.from_numpy(np.stack([split.read(int(s), self.config.seq_len + 1) for s in starts]))
        return {"tokens": rows[:, :-1], "targets": rows[:, 1:]}

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        """Summed next-token cross-entropy over the (B, T) targets."""
        logits = model(batch["tokens"])  # (B, T, V) fp32
        targets = batch["targets"]
        loss_sum = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
        return LossOutput(loss_sum=loss_sum, count=targets.numel(), tokens=targets.numel())

    def flops_per_token(self) -> float:
        return flops_per_token(self.args, self.config.seq_len)

    def export(self, folder: Path) -> None:
        """params.json and tokenizer.model beside the weights: the folder loads as a Meta checkpoint."""
        (folder / "params.json").write_text(json.dumps(self.args.to_params(), indent=2) + "\n")
        (folder / TOKENIZER_FILE).write_bytes(self.tokenizer_path.read_bytes())


def _build_shards(plan: DataPlan, config: PretrainConfig) -> None:
    """Tokenize the corpus into `plan.shards` (training a tokenizer on it first if asked)."""
    print(f"preparing {config.data} -> {plan.shards} (first use)", file=sys.stderr, flush=True)
    plan.shards.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=plan.shards.parent, prefix=".tokenizer-") as scratch:
        tokenizer = plan.tokenizer
        if tokenizer is None:
            vocab_size = model_args(config, None).vocab_size
            tokenizer = train_tokenizer(read_documents(plan.corpus), Path(scratch) / TOKENIZER_FILE,
                                        vocab_size=vocab_size, seed=config.seed).path
        write_shards(read_documents(plan.corpus), tokenizer, plan.shards, val_fraction=config.val_fraction,
                     seed=config.seed, sources=plan.corpus, num_threads=os.cpu_count())
