"""The one training loop, shared by every recipe (pretraining now; SFT, reward models, PPO, DPO later).

A recipe says *what* to train — it builds the model, hands out batches and computes the loss; the
loop owns *how*: device and precision, FSDP, activation checkpointing and `torch.compile`,
gradient accumulation, clipping, AdamW with the step-indexed schedule, evaluation, logging,
checkpoints and exact resume (LLAMA2.md §2 for the pretraining settings).

Losses are sums with a count (tokens, pairs, ...): the loop adds the sums and counts of all
micro-batches on all ranks and scales the gradients by 1/count before clipping, so the update is
the mean over the whole global batch however it is split across micro-batches and processes.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.utils.checkpoint
from torch import nn

from llama2.errors import ConfigError
from llama2.model.transformer import TransformerBlock
from llama2.train import checkpointing
from llama2.train.config import TrainConfig
from llama2.train.cpu_allocator import keep_freed_memory, release_free_memory
from llama2.train.cpu_matmul import faster_with_onednn, use_onednn
from llama2.train.distributed import Runtime, all_reduce_sum, init_runtime, shard_model, shutdown
from llama2.train.metrics import MetricsLogger, ProgressDisplay, Stopwatch, device_peak_flops, mfu
from llama2.train.optim import build_optimizer, lr_at, set_lr


@dataclass
class LossOutput:
    """A micro-batch's loss as `loss_sum` over `count` units (tokens, pairs), on any device.

    `tokens` is how many tokens the micro-batch ran through the model (for throughput); `sums`
    are extra per-unit quantities, reported as `sum / count` over the global batch.
    """

    loss_sum: torch.Tensor
    count: torch.Tensor | int
    tokens: int
    sums: dict[str, torch.Tensor] = field(default_factory=dict)


class Recipe(Protocol):
    """What a training method supplies to the loop. Batches are nested tensors (moved to the device
    by the loop); `batches(step, ...)` must depend only on the step, the seed, the rank and state a
    checkpoint restores (the weights, the RNGs), which is what makes resume exact."""

    config: TrainConfig
    perplexity: bool  # whether exp(val_loss) means something (token-level losses)

    def prepare(self, runtime: Runtime) -> None:
        """Open (or first build, on rank 0) the data; called once, before the model exists."""

    def build_model(self) -> nn.Module:
        """The model to train, built under `torch.device("meta")` (no memory is touched)."""

    def initial_state(self) -> dict[str, torch.Tensor]:
        """Full CPU weights to start from (seeded random init or a checkpoint); called on rank 0 only."""

    def batches(self, step: int, runtime: Runtime, model: nn.Module) -> Sequence[Any]:
        """This rank's `config.grad_accum` micro-batches for optimizer step `step` (0-based).

        `model` is the one being trained, for recipes that sample their batches from it (PPO,
        rejection sampling); under FSDP every rank must then run the same forward passes.
        """

    def eval_batches(self, runtime: Runtime) -> Sequence[Any]:
        """This rank's validation micro-batches (the same number on every rank)."""

    def loss(self, model: nn.Module, batch: Any) -> LossOutput: ...

    def flops_per_token(self) -> float | None: ...

    def export(self, folder: Path) -> None:
        """Write what makes a checkpoint folder a loadable model besides its weights (params, tokenizer)."""


@dataclass
class TrainResult:
    """Where the run ended: its last step, last checkpoint and the last logged metrics."""

    step: int
    checkpoint: Path | None
    metrics: dict[str, Any]
    main_process: bool = True


def train(recipe: Recipe, runtime: Runtime | None = None) -> TrainResult:
    """Run `recipe` from scratch or from its latest checkpoint up to `config.max_steps`."""
    owns_runtime = runtime is None
    runtime = runtime or init_runtime(recipe.config.device)
    try:
        return _Trainer(recipe, runtime).run()
    finally:
        if owns_runtime:
            shutdown(runtime)


def compute_dtype(name: str, device: torch.device) -> torch.dtype:
    """The autocast dtype for config `dtype` (`auto`: bf16 on GPUs that have it, else fp32)."""
    bf16_ok = device.type != "cuda" or torch.cuda.is_bf16_supported()
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and bf16_ok else torch.float32
    if name == "bfloat16" and not bf16_ok:
        raise ConfigError(f"dtype bfloat16 is not supported on {torch.cuda.get_device_name(device)}; set dtype=float32")
    return torch.bfloat16 if name == "bfloat16" else torch.float32


def checkpoint_activations(block: nn.Module) -> None:
    """Recompute `block`'s activations in the backward pass instead of storing them.

    The forward is replaced on the instance, so parameter names (and checkpoints) are unchanged.
    """
    forward = block.forward

    def recomputed(*args: Any, **kwargs: Any) -> Any:
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)

    block.forward = recomputed


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(batch: Any, device: torch.device) -> Any:
    """`batch` with every tensor in its nested dicts, lists and tuples moved to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


class _Trainer:
    """One run's state: the model, optimizer, loggers and the step counter."""

    def __init__(self, recipe: Recipe, runtime: Runtime) -> None:
        self.recipe, self.runtime, self.config = recipe, runtime, recipe.config
        self.output_dir = Path(self.config.output_dir)
        self.checkpoint_root = self.output_dir / "checkpoints"
        self.dtype = compute_dtype(self.config.dtype, runtime.device)
        self.step = self.tokens_seen = 0
        self.last_checkpoint: Path | None = None
        self.cpu_matmul = "torch"  # which matmul the linears train with (`_choose_cpu_matmul`), saved with each checkpoint

    def run(self) -> TrainResult:
        config, runtime = self.config, self.runtime
        resume_from = self._resume_source()
        self.recipe.prepare(runtime)
        seed_everything(config.seed + runtime.rank)
        if self._keeps_freed_memory:
            keep_freed_memory()  # cpu_allocator.py: each step reuses the last one's pages
        recorded = checkpointing.read_trainer_state(resume_from).get("cpu_matmul") if resume_from is not None else None
        self.model = self._build_model(recorded_matmul=recorded)
        self.optimizer = build_optimizer(self.model, lr=config.lr, weight_decay=config.weight_decay,
                                         betas=config.betas, eps=config.eps)
        if resume_from is not None:
            state = checkpointing.load_checkpoint(resume_from, model=self.model, optimizer=self.optimizer, runtime=runtime)
            self.step, self.tokens_seen, self.last_checkpoint = state["step"], state["tokens"], resume_from
        else:
            initial = self.recipe.initial_state() if runtime.is_main else {}
            checkpointing.load_model_state(self.model, initial, runtime)
            del initial
        self.peak_flops = config.peak_flops or device_peak_flops(runtime.device, self.dtype)
        self.flops_per_token = self.recipe.flops_per_token()
        logger = MetricsLogger(self.output_dir, resume_step=self.step, enabled=runtime.is_main, tensorboard=config.tensorboard)
        progress = ProgressDisplay(total=config.max_steps, start=self.step, enabled=runtime.is_main)
        if resume_from is not None:
            progress.message(f"resumed from {resume_from} at step {self.step}")
        try:
            record = self._loop(logger, progress)
        finally:
            progress.close()
            logger.close()
        return TrainResult(self.step, self.last_checkpoint, record, runtime.is_main)

    def _resume_source(self) -> Path | None:
        """The checkpoint to continue from, per `config.resume`; stale partial saves are removed."""
        checkpointing.remove_partial(self.checkpoint_root, self.runtime)
        latest = checkpointing.latest_checkpoint(self.checkpoint_root)
        if self.config.resume == "auto":
            return latest
        if self.config.resume == "never":
            if latest is not None:
                raise ConfigError(f"{self.output_dir} already holds checkpoints (latest {latest.name}) and resume=never; "
                                  "choose another output_dir or set resume=auto")
            return None
        return Path(self.config.resume)

    def _build_model(self, recorded_matmul: str | None = None) -> nn.Module:
        """Build on `meta`, then checkpointing, compile and FSDP wrappers, then allocate on the device."""
        with torch.device("meta"):
            model = self.recipe.build_model()
        blocks = [m for m in model.modules() if isinstance(m, TransformerBlock)]
        for block in blocks:
            if self.config.activation_checkpointing:
                checkpoint_activations(block)
            if self.config.compile:
                block.compile()
        self._choose_cpu_matmul(model, recorded_matmul)
        if self.runtime.distributed:
            low_precision = self.dtype if self.runtime.device.type == "cuda" and self.dtype != torch.float32 else None
            shard_model(model, blocks, self.runtime, param_dtype=low_precision)
        model.to_empty(device=self.runtime.device)
        return model.train()

    @property
    def _keeps_freed_memory(self) -> bool:
        """Whether malloc keeps freed pages for the next step (`cpu_allocator.py`): CPU runs, by default."""
        return self.runtime.device.type == "cpu" and self.config.keep_freed_memory

    def _choose_cpu_matmul(self, model: nn.Module, recorded: str | None) -> None:
        """oneDNN for the linears of an fp32 one-process CPU run, as `cpu_kernels` says (`cpu_matmul.py`).
        `auto` times both, except on resume: then it keeps the choice the checkpoint was trained with
        (`recorded`), since the two differ in summation order and a resumed run must continue exactly."""
        mode = self.config.cpu_kernels
        eligible = (self.runtime.device.type == "cpu" and self.dtype == torch.float32 and not self.runtime.distributed
                    and not self.config.compile and torch.backends.mkldnn.is_available())
        if mode == "torch" or not eligible:
            if mode == "onednn":
                raise ConfigError("cpu_kernels=onednn is for fp32 training in one process on the CPU without compile; "
                                  "use cpu_kernels=auto or torch")
            return
        if mode == "auto" and recorded in ("onednn", "torch"):
            self.cpu_matmul = recorded
        else:
            rows = self.config.batch_size * (getattr(self.config, "seq_len", None) or model.args.max_seq_len)  # a step's tokens
            self.cpu_matmul = "onednn" if mode == "onednn" or faster_with_onednn(model, rows) else "torch"
        if self.cpu_matmul == "onednn":
            use_onednn(model)

    def _loop(self, logger: MetricsLogger, progress: ProgressDisplay) -> dict[str, Any]:
        config = self.config
        watch, record = Stopwatch(), {}
        while self.step < config.max_steps:
            lr = lr_at(self.step, peak=config.lr, warmup_steps=config.warmup_steps,
                       max_steps=config.max_steps, min_ratio=config.min_lr_ratio)
            stats, step_tokens = self._train_step(lr)
            self.step += 1
            self.tokens_seen += step_tokens
            watch.add(step_tokens)
            done = self.step == config.max_steps
            logged = self.step % config.log_every == 0 or done
            evaluate = bool(config.eval_every) and (self.step % config.eval_every == 0 or done)
            if logged or evaluate:
                record = self._record(lr, stats, watch.lap())
                if evaluate:
                    with watch.pause():
                        record.update(self._evaluate())
                logger.log(record)
            progress.update(self.step, record if logged or evaluate else None)
            if (config.save_every and self.step % config.save_every == 0) or done:
                with watch.pause():
                    self._save()
        return record

    def _train_step(self, lr: float) -> tuple[dict[str, float], int]:
        """Forward/backward over this rank's micro-batches, then one clipped AdamW update.

        Returns the global-batch means (`loss`, the recipe's extra sums, `grad_norm`) and the
        number of tokens all ranks processed.
        """
        model, runtime = self.model, self.runtime
        batches = self.recipe.batches(self.step, runtime, model)
        totals: dict[str, torch.Tensor] = {}
        tokens = 0
        for index, batch in enumerate(batches):
            if runtime.distributed:
                model.set_requires_gradient_sync(index == len(batches) - 1)
            with self._autocast():
                out = self.recipe.loss(model, to_device(batch, runtime.device))
            out.loss_sum.backward()
            tokens += out.tokens
            self._accumulate(totals, out)
        summed = self._reduce(totals, tokens)
        count = summed.pop("count")
        grad_norm = self._normalise_and_clip(runtime.world_size / max(count, 1.0))
        set_lr(self.optimizer, lr)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        step_tokens = int(summed.pop("tokens"))
        means = {key: value / max(count, 1.0) for key, value in summed.items()}
        return {**means, "grad_norm": grad_norm}, step_tokens

    def _accumulate(self, totals: dict[str, torch.Tensor], out: LossOutput) -> None:
        """Add a micro-batch's sums to `totals`, in fp64 on the device (no host sync per micro-batch)."""
        for key, value in {"loss": out.loss_sum, "count": out.count, **out.sums}.items():
            value = torch.as_tensor(value, device=self.runtime.device).detach().double().reshape(())
            totals[key] = totals[key] + value if key in totals else value

    def _reduce(self, totals: dict[str, torch.Tensor], tokens: int) -> dict[str, float]:
        """Sum the per-rank totals over ranks (one collective, one host sync); returns plain floats."""
        keys = sorted(totals)
        tokens_total = torch.tensor(float(tokens), dtype=torch.float64, device=self.runtime.device)
        packed = torch.stack([totals[key] for key in keys] + [tokens_total])
        packed = all_reduce_sum(packed.to(self._reduce_device()), self.runtime).cpu()
        return {**dict(zip(keys, packed[:-1].tolist())), "tokens": packed[-1].item()}

    def _reduce_device(self) -> torch.device:
        return self.runtime.device if self.runtime.device.type == "cuda" else torch.device("cpu")

    @torch.no_grad()
    def _normalise_and_clip(self, scale: float) -> float:
        """Scale the summed-loss gradients to the global-batch mean (FSDP already averaged them
        over ranks, hence `scale = world_size / count`) and clip their norm to `grad_clip`, in one
        pass over the gradients; returns the norm before clipping."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads:
            return 0.0
        norm = torch.nn.utils.get_total_norm(grads)
        if hasattr(norm, "full_tensor"):  # a DTensor under FSDP: the norm over all shards
            norm = norm.full_tensor()
        norm = float(norm) * scale
        clip = min(1.0, self.config.grad_clip / (norm + 1e-6)) if self.config.grad_clip else 1.0
        torch._foreach_mul_(grads, scale * clip)
        return norm

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.runtime.device.type, dtype=self.dtype)

    @torch.no_grad()
    def _evaluate(self) -> dict[str, float]:
        """Mean validation loss over every rank's `eval_batches` (and perplexity for token losses)."""
        self.model.eval()
        totals: dict[str, torch.Tensor] = {}
        for batch in self.recipe.eval_batches(self.runtime):
            with self._autocast():
                out = self.recipe.loss(self.model, to_device(batch, self.runtime.device))
            self._accumulate(totals, out)
        self.model.train()
        summed = self._reduce(totals, 0)
        count = max(summed.pop("count"), 1.0)
        summed.pop("tokens")
        metrics = {f"val_{key}": value / count for key, value in summed.items()}
        if self.recipe.perplexity:
            metrics["val_ppl"] = math.exp(min(metrics["val_loss"], 50.0))
        return metrics

    def _record(self, lr: float, stats: dict[str, Any], tokens_per_s: float) -> dict[str, Any]:
        record = {"step": self.step, "loss": stats.pop("loss"), "lr": lr, "tokens": self.tokens_seen,
                  "tokens_per_s": tokens_per_s, "grad_norm": stats.pop("grad_norm")}
        record.update(stats)
        utilisation = mfu(tokens_per_s, self.flops_per_token, self.peak_flops, self.runtime.world_size) if self.flops_per_token else None
        if utilisation is not None:
            record["mfu"] = utilisation
        if self.runtime.device.type == "cuda":
            record["memory_gib"] = torch.cuda.max_memory_allocated(self.runtime.device) / 2**30
        return record

    def _save(self) -> None:
        state = {"tokens": self.tokens_seen, "data_position": {"seed": self.config.seed, "step": self.step},
                 "config": self.config.to_dict(), "cpu_matmul": self.cpu_matmul}
        self.last_checkpoint = checkpointing.save_checkpoint(
            self.checkpoint_root, self.step, model=self.model, optimizer=self.optimizer, trainer_state=state,
            runtime=self.runtime, keep_last=self.config.keep_last, export=self.recipe.export,
        )
        if self._keeps_freed_memory:
            release_free_memory()  # whatever the heap stranded since the last save goes back
