"""Rewards for rejection sampling and PPO (Llama 2 §3.2.3; LLAMA2.md §5.2): the helpfulness and
safety reward models, and the rule that combines them.

A `Scorer` is anything with `score_batch(prompts, responses) -> list[float]` returning *linear*
scores: the reward model's head output, whose sigmoid is the paper's R in (0, 1). `RewardModel`
is one; tests plug in scripted ones (a function that counts a word, say) in its place.

The paper's combination, `R_c = R_s if is_safety(p) or R_s < 0.15 else R_h`, compares the sigmoid
of the safety score with 0.15, which is comparing the linear score with logit(0.15) ≈ -1.73; and
`LOGIT(R_c)`, what PPO whitens, is then simply the linear score of the model chosen. Without a
safety scorer every response gets its helpfulness score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from llama2.errors import ConfigError
from llama2.model.reward import Prompt, RewardModel

SAFETY_THRESHOLD = 0.15


class Scorer(Protocol):
    """What rewards a response: one linear score per (prompt, response)."""

    def score_batch(self, prompts: Sequence[Prompt], responses: Sequence[str], *, batch_size: int = 16) -> list[float]: ...


def safety_selected(safety: torch.Tensor, is_safety: torch.Tensor, *, threshold: float = SAFETY_THRESHOLD) -> torch.Tensor:
    """`(N,)` bool: where the combined reward is the safety score — the prompt is tagged as
    possibly unsafe, or σ(safety score) < `threshold`."""
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"the safety threshold is a probability in (0, 1), got {threshold}")
    return is_safety.bool() | (safety < math.log(threshold) - math.log1p(-threshold))


def combined_scores(helpful: torch.Tensor, safety: torch.Tensor, is_safety: torch.Tensor, *,
                    threshold: float = SAFETY_THRESHOLD) -> torch.Tensor:
    """`LOGIT(R_c)` `(N,)` from the linear helpfulness and safety scores `(N,)` (LLAMA2.md §5.2)."""
    return torch.where(safety_selected(safety, is_safety, threshold=threshold), safety, helpful)


@dataclass(frozen=True)
class Rewards:
    """Scores of N responses: `helpful` and `safety` `(N,)` (safety None without a safety scorer),
    `is_safety` `(N,)` bool (the prompt's tag) and `combined`, `LOGIT(R_c)` `(N,)`."""

    helpful: torch.Tensor
    safety: torch.Tensor | None
    is_safety: torch.Tensor
    combined: torch.Tensor


class RewardFunction:
    """The helpfulness scorer and, optionally, the safety scorer, combined by the paper's rule."""

    def __init__(self, helpful: Scorer, safety: Scorer | None = None, *, threshold: float = SAFETY_THRESHOLD,
                 batch_size: int = 16) -> None:
        self.helpful, self.safety = helpful, safety
        self.threshold, self.batch_size = threshold, batch_size

    @classmethod
    def from_paths(cls, helpful: str, safety: str | None, *, device: torch.device, dtype: str | None = None,
                   threshold: float = SAFETY_THRESHOLD, batch_size: int = 16) -> "RewardFunction":
        """Load the reward model folders (`llama2 train reward` writes them) onto `device`."""
        helpful_model = RewardModel.from_pretrained(helpful, dtype=dtype, device=device)
        safety_model = RewardModel.from_pretrained(safety, dtype=dtype, device=device) if safety else None
        return cls(helpful_model, safety_model, threshold=threshold, batch_size=batch_size)

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str], is_safety: Sequence[bool]) -> Rewards:
        tagged = torch.tensor(list(is_safety), dtype=torch.bool)
        helpful = self._scores(self.helpful, prompts, responses)
        if self.safety is None:
            return Rewards(helpful, None, tagged, helpful)
        safety = self._scores(self.safety, prompts, responses)
        return Rewards(helpful, safety, tagged, combined_scores(helpful, safety, tagged, threshold=self.threshold))

    def _scores(self, scorer: Scorer, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
        if not prompts:
            return torch.zeros(0, dtype=torch.float32)
        return torch.tensor(scorer.score_batch(list(prompts), list(responses), batch_size=self.batch_size), dtype=torch.float32)
