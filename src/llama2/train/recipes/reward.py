"""Reward models (Llama 2 §3.2.2; LLAMA2.md §4.2-4.4) on the one loop: `llama2 train reward`.

The model is the `init` chat checkpoint with its next-token head replaced by a scalar head
(`model.reward.RewardTransformer`, head freshly initialised; an `init` that is already a reward
model continues from its own head). Each pair's two replies are scored at their last token and
trained with the binary ranking loss `-log σ(r_c - r_r - m(r))` (`losses.ranking_loss`), the
margin m(r) by preference strength from the paper's tables: `margin: none | small | large`
(Table 27; `small` by default, the best average in the paper's ablation, T28 — which margin the
final models used is not stated).

Helpfulness and safety reward models are this one recipe with different data mixes (weights in
`data`, as SFT mixes files; LLAMA2.md §4.3) and, for safety, `safety_aux_weight` > 0: our safety
auxiliary term (`losses.safety_aux_loss`; the paper gives no formula), a binary cross-entropy that
pushes the rewards of replies labelled safe above 0 and of replies labelled unsafe below 0, i.e.
makes σ(r) = 0.5 the unsafe/safe threshold the paper measures recall at (T29). Pairs without
`chosen_safe`/`rejected_safe` labels add nothing to it.

`center_rewards` > 0 (beyond the paper; 0, off, by default) adds `center_rewards * (r_c + r_r)^2`
per pair (`losses.centring_loss`; Eisenstein et al. 2023, TRL's `center_rewards_coefficient`, which
recommends 0.01): the ranking loss cannot see a constant added to every reward, and the combined
reward of rejection sampling and PPO compares σ(R_s) with 0.15, which means something only if the
scores are centred on 0.

The 2B rows of a micro-batch differ in length; padded to the longest, nearly half of the positions
computed were padding (bench/rlhf.py), so `packed_rewards` packs them first-fit into as few rows of that
width as hold them, each sequence with its own positions under a block-diagonal causal mask: the
same rewards (each sequence still sees only itself), less work.

Logged: the loss, `accuracy` (share of pairs with r_c > r_r), `reward_gap` (mean r_c - r_r),
`safety_aux` and `centring` when weighted; with `eval_every` the same on held-out pairs (`val_accuracy`, ...).
Every checkpoint is a reward model folder (`RewardModel.from_pretrained`); `finalize` writes
OUTPUT_DIR/model (LoRA merged in). Under LoRA the head trains besides the adapters; checkpoints then
hold the unmerged adapters (no PEFT export: PEFT has no form for our head), load OUTPUT_DIR/model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from llama2.data.preference import MARGINS, STRENGTHS
from llama2.data.sft_examples import attention_mask
from llama2.model.reward import (
    PAD_ID,
    RewardTransformer,
    initial_reward_state,
    last_token_rewards,
    save_reward_model,
    write_reward_files,
)
from llama2.train.losses import centring_loss, ranking_loss, safety_aux_loss
from llama2.train.loop import LossOutput
from llama2.train.recipes.finetune import FINAL_DIR
from llama2.train.recipes.pairs import PreferenceConfig, PreferenceRecipe


@dataclass(kw_only=True)
class RewardConfig(PreferenceConfig):
    """Reward-model keys on top of the preference recipes'; `init` is a chat checkpoint."""

    init: str = "default-chat"
    margin: Literal["none", "small", "large"] = "small"
    safety_aux_weight: float = 0.0
    center_rewards: float = 0.0
    lr: float = 1e-5

    def problems(self, world_size: int) -> list[str]:
        found = super().problems(world_size)
        if self.safety_aux_weight < 0:
            found.append(f"safety_aux_weight must be 0 or more, got {self.safety_aux_weight}")
        if self.center_rewards < 0:
            found.append(f"center_rewards must be 0 or more (0.01 is TRL's recommendation), got {self.center_rewards}")
        return found


class RewardRecipe(PreferenceRecipe):
    """The reward-model recipe for the one loop (see `llama2.train.loop.Recipe`)."""

    Config = RewardConfig
    name = "reward"
    trainable_modules = ("reward_head",)

    def __init__(self, config: RewardConfig) -> None:
        super().__init__(config)
        table = MARGINS.get(config.margin, {})
        self.margins = torch.tensor([table.get(strength, 0.0) for strength in STRENGTHS])  # m(r) by strength index

    def _new_model(self) -> nn.Module:
        return RewardTransformer(self.args)

    def _init_state(self) -> dict[str, torch.Tensor]:
        return initial_reward_state(self.init_path, self.args, generator=torch.Generator().manual_seed(self.config.seed))

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        """Ranking loss with margin (plus the weighted safety and centring terms) summed over the micro-batch's pairs."""
        rewards = packed_rewards(model, batch["tokens"], batch["lengths"])  # (2B,): chosen, then rejected
        chosen, rejected = rewards.chunk(2)
        margin = self.margins.to(rewards.device)[batch["strength"]]
        loss_sum = ranking_loss(chosen, rejected, margin).sum()
        sums = {"accuracy": (chosen > rejected).sum(), "reward_gap": (chosen - rejected).detach().sum()}
        if self.config.safety_aux_weight:
            aux = safety_aux_loss(rewards, batch["safe"]).sum()
            loss_sum = loss_sum + self.config.safety_aux_weight * aux
            sums["safety_aux"] = aux.detach()
        if self.config.center_rewards:
            centring = centring_loss(chosen, rejected).sum()
            loss_sum = loss_sum + self.config.center_rewards * centring
            sums["centring"] = centring.detach()
        return LossOutput(loss_sum=loss_sum, count=chosen.numel(), tokens=batch["tokens"].numel(), sums=sums)

    def export(self, folder: Path) -> None:
        """params.json, tokenizer.model and reward_model.json beside the weights: a reward model folder."""
        write_reward_files(folder, self.args, self.tokenizer_path, self._info())

    def finalize(self, checkpoint: Path) -> Path:
        """OUTPUT_DIR/model: the trained reward model folder (LoRA merged in)."""
        out = Path(self.config.output_dir) / FINAL_DIR
        return save_reward_model(self._merged_model(checkpoint), self.args, out, tokenizer=self.tokenizer_path,
                                 info=self._info(), overwrite=True)

    def _info(self) -> dict[str, Any]:
        config = self.config
        return {"init": str(self.init_path), "margin": config.margin, "safety_aux_weight": config.safety_aux_weight,
                "center_rewards": config.center_rewards, "data": config.data, "lora": config.lora}


def packed_rewards(model: nn.Module, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Rewards `(N,)` of right-padded rows `tokens (N, T)` of `lengths (N,)` tokens, as
    `last_token_rewards` gives them, computed on the rows packed first-fit (longest first) into rows
    of width T: positions restart and attention stops at each sequence's end (padding is a segment
    of its own, so no query is left without a key). Unpacked when packing saves no row."""
    sizes, width = lengths.tolist(), tokens.shape[1]
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        fit = next((b for b, free in enumerate(room) if free >= sizes[i]), len(bins))
        if fit == len(bins):
            bins.append([])
            room.append(width)
        bins[fit].append(i)
        room[fit] -= sizes[i]
    if len(bins) == len(sizes):
        return last_token_rewards(model, tokens, lengths)
    packed = torch.full((len(bins), width), PAD_ID, dtype=tokens.dtype, device=tokens.device)
    positions = torch.zeros_like(packed)
    segments = torch.full_like(packed, -1)
    ends = [0] * len(sizes)
    for row, members in enumerate(bins):
        start = 0
        for segment, i in enumerate(members):
            end = start + sizes[i]
            packed[row, start:end] = tokens[i, :sizes[i]]
            positions[row, start:end] = torch.arange(sizes[i], device=tokens.device)
            segments[row, start:end] = segment
            ends[i] = row * width + end - 1
            start = end
        positions[row, start:] = torch.arange(width - start, device=tokens.device)
    scores = model(packed, positions=positions, mask=attention_mask(segments, positions))  # (rows, width)
    return scores.flatten()[torch.tensor(ends, device=tokens.device)]
