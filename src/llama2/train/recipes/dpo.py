"""Direct Preference Optimization (Rafailov et al. 2023) on the one loop: `llama2 train dpo`.

The cheaper alternative to reward model + PPO that most teams use today, on the same preference
pairs and formats as `llama2 train reward`: the policy starts from `init` (a chat checkpoint), the
frozen reference π0 is that same `init`, and each pair's loss compares the policy's and π0's summed
log-probabilities of the two replies (`losses.dpo_loss`): `loss: sigmoid` (DPO; `label_smoothing`
ε > 0 gives conservative DPO) or `ipo` (IPO, per-token mean log-ratios as TRL computes it), with
`beta` (0.1 by default). Only the reply's tokens (the final answer and its EOS) count; the prompt,
including earlier turns of a dialog, is context.

Reference log-probabilities are precomputed, not recomputed per batch: at step 0, before the first
update, the model being trained *is* π0, so one no-grad pass over the training and held-out pairs
(in the run's own precision, split across ranks under FSDP) gives every pair's π0 log-probabilities
with no second copy of the weights in memory — which also covers LoRA and sharded models alike. They
are kept in OUTPUT_DIR/reference_logps.pt (with a fingerprint of `init` and the tokenized data), so
a resumed run reuses them; a file made for other data or another `init` is refused.

Logged: the loss, `accuracy` (pairs whose implicit reward β·log-ratio is higher for the chosen
reply), `margin` (mean chosen minus rejected implicit reward), `chosen_reward` and
`rejected_reward`; `val_*` on held-out pairs with `eval_every`. OUTPUT_DIR/model is the trained
policy, an ordinary checkpoint (LoRA merged; checkpoints also hold a PEFT adapter).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from llama2.atomic import atomic_file
from llama2.data.preference_examples import PreferenceExample, collate_pairs
from llama2.errors import CheckpointError, ConfigError
from llama2.train.distributed import Runtime, all_reduce_sum, barrier
from llama2.train.losses import dpo_loss, response_logps
from llama2.train.loop import LossOutput, compute_dtype, to_device
from llama2.train.recipes.pairs import PreferenceConfig, PreferenceRecipe

REFERENCE_FILE = "reference_logps.pt"


@dataclass(kw_only=True)
class DPOConfig(PreferenceConfig):
    """DPO keys on top of the preference recipes'; `init` is the chat checkpoint to start from (and π0)."""

    init: str = "default-chat"
    beta: float = 0.1
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    label_smoothing: float = 0.0
    lr: float = 1e-6

    def problems(self, world_size: int) -> list[str]:
        found = super().problems(world_size)
        if self.beta <= 0:
            found.append(f"beta must be positive, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            found.append(f"label_smoothing must lie in [0, 0.5), got {self.label_smoothing}")
        if self.label_smoothing and self.loss != "sigmoid":
            found.append("label_smoothing applies to loss: sigmoid only")
        return found


class DPO(PreferenceRecipe):
    """The DPO recipe for the one loop (see `llama2.train.loop.Recipe`)."""

    Config = DPOConfig
    name = "dpo"

    def prepare(self, runtime: Runtime) -> None:
        super().prepare(runtime)
        self.reference: dict[str, torch.Tensor] | None = None  # split -> (N, 2) π0 log-probs (chosen, rejected)

    # ---- batches with π0's log-probabilities ---------------------------------------------------

    def batches(self, step: int, runtime: Runtime, model: nn.Module | None = None) -> list[dict[str, torch.Tensor]]:
        self._ensure_reference(step, runtime, model)
        return super().batches(step, runtime, model)

    def _collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return self._with_reference(self.train_examples, "train", indices)

    def eval_batches(self, runtime: Runtime) -> list[dict[str, torch.Tensor]]:
        return [self._with_reference(self.val_examples, "val", indices)
                for indices in self._eval_indices(len(self.val_examples), runtime)]

    def _with_reference(self, examples: list[PreferenceExample], split: str, indices: list[int]) -> dict[str, torch.Tensor]:
        assert self.reference is not None, "reference log-probs are computed at the first batches() call"
        batch = collate_pairs([examples[i] for i in indices])
        batch["reference"] = self.reference[split][indices].T.reshape(-1).float()  # (2B,): chosen, then rejected
        return batch

    def _ensure_reference(self, step: int, runtime: Runtime, model: nn.Module | None) -> None:
        """π0's log-probs: read from OUTPUT_DIR, or computed now with the still-untrained model (step 0)."""
        if self.reference is not None:
            return
        path = Path(self.config.output_dir) / REFERENCE_FILE
        fingerprint = self._fingerprint()
        if path.is_file():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("fingerprint") != fingerprint:
                raise ConfigError(f"{path} holds reference log-probs for other data or another init; "
                                  "use a fresh output_dir (or delete the file to recompute them at step 0)")
            self.reference = {"train": saved["train"], "val": saved["val"]}
            return
        if step != 0 or model is None:
            raise CheckpointError(f"{path} is missing: DPO computes π0's log-probs at step 0 and keeps them there "
                                  "for resuming; restart from step 0 in a fresh output_dir")
        if runtime.is_main:
            print(f"dpo: reference log-probs of {len(self.train_examples) + len(self.val_examples)} pairs with π0 (init)",
                  file=sys.stderr, flush=True)
        self.reference = {"train": self._reference_logps(model, self.train_examples, runtime),
                          "val": self._reference_logps(model, self.val_examples, runtime)}
        if runtime.is_main:
            with atomic_file(path, overwrite=True) as tmp:
                torch.save({"fingerprint": fingerprint, **self.reference}, tmp)
        barrier(runtime)

    @torch.no_grad()
    def _reference_logps(self, model: nn.Module, examples: list[PreferenceExample], runtime: Runtime) -> torch.Tensor:
        """`(N, 2)` summed reply log-probs under `model`; rank r computes pairs r, r+W, ... and a
        sum over ranks gathers them (under FSDP every rank runs the same number of forwards)."""
        values = torch.zeros(len(examples), 2, dtype=torch.float64, device=runtime.device)
        if not examples:
            return values.cpu()
        per_micro = self.config.batch_size
        mine = list(range(runtime.rank, len(examples), runtime.world_size))
        rounds = math.ceil(math.ceil(len(examples) / runtime.world_size) / per_micro)
        chunks = [mine[i:i + per_micro] for i in range(0, len(mine), per_micro)] or [[]]
        chunks += [chunks[-1]] * (rounds - len(chunks))  # repeats rewrite the same values
        was_training = model.training
        model.eval()
        report_every = max(1, rounds // 10)
        for done, chunk in enumerate(chunks, start=1):
            run = chunk or [len(examples) - 1]  # a rank with no pairs still joins the collective forward
            batch = to_device(collate_pairs([examples[i] for i in run]), runtime.device)
            with self._autocast(runtime.device):
                logps = response_logps(model(batch["tokens"]), batch["targets"], batch["loss_mask"])
            if chunk:
                values[chunk] = logps.view(2, -1).T.double()
            if runtime.is_main and (done % report_every == 0 or done == rounds):
                print(f"dpo: π0 log-probs, {min(done * per_micro * runtime.world_size, len(examples)):,}/{len(examples):,} "
                      "pairs", file=sys.stderr, flush=True)
        model.train(was_training)
        return all_reduce_sum(values, runtime).cpu()

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The loop's precision, so π0's log-probs are computed as the policy's will be."""
        dtype = compute_dtype(self.config.dtype, device)
        return contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(device_type=device.type, dtype=dtype)

    def _fingerprint(self) -> str:
        digest = hashlib.sha256(f"{self.init_path.resolve()}|{self.config.dtype}|".encode())
        for examples in (self.train_examples, self.val_examples):
            for e in examples:
                digest.update(np.asarray(e.chosen + [-1] + e.rejected + [-2, e.prompt_len], dtype=np.int64).tobytes())
            digest.update(b"|")
        return digest.hexdigest()

    # ---- loss -------------------------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        """DPO (or IPO) summed over the micro-batch's pairs, on the replies' summed log-probs."""
        config = self.config
        logps = response_logps(model(batch["tokens"]), batch["targets"], batch["loss_mask"])  # (2B,)
        policy_chosen, policy_rejected = logps.chunk(2)
        reference_chosen, reference_rejected = batch["reference"].to(logps.dtype).chunk(2)
        chosen_tokens, rejected_tokens = batch["loss_mask"].sum(dim=1).chunk(2)
        losses = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta=config.beta,
                          loss=config.loss, label_smoothing=config.label_smoothing,
                          chosen_tokens=chosen_tokens, rejected_tokens=rejected_tokens)
        chosen_reward = config.beta * (policy_chosen - reference_chosen).detach()
        rejected_reward = config.beta * (policy_rejected - reference_rejected).detach()
        sums = {"accuracy": (chosen_reward > rejected_reward).sum(), "margin": (chosen_reward - rejected_reward).sum(),
                "chosen_reward": chosen_reward.sum(), "rejected_reward": rejected_reward.sum()}
        return LossOutput(loss_sum=losses.sum(), count=losses.numel(), tokens=batch["tokens"].numel(), sums=sums)
