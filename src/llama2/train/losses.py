"""Preference losses, per pair (the recipes sum them; the loop takes the mean over the global batch).

- `ranking_loss`: the reward model's binary ranking loss with a margin (Llama 2 §3.2.2, eq. 2;
  LLAMA2.md §4.2): `-log σ(r_chosen - r_rejected - m(r))`, m(r) from the rating (`MARGINS`).
- `safety_aux_loss`: our safety auxiliary term. The paper adds "a safety auxiliary loss" to the
  safety reward model without a formula (T29: it lifts unsafe-response recall at score threshold
  0.5 from 73.0 to 90.4). Ours is that threshold made a target: a binary cross-entropy pushing the
  reward of each response labelled safe above 0 (σ(r) > 0.5) and of each labelled unsafe below,
  `-log σ(r)` and `-log σ(-r)`; unlabelled responses add nothing.
- `centring_loss`: beyond the paper, the reward-centring regularizer of Eisenstein et al. 2023
  (arXiv 2312.09244, eq. 2) as TRL's RewardTrainer adds it (`center_rewards_coefficient`):
  `(r_chosen + r_rejected)^2` per pair. The ranking loss is blind to a constant added to every
  reward, so without it the scores can drift anywhere; a rule that reads the score's scale (the
  combined reward's σ(R_s) < 0.15) needs them centred on 0.
- `dpo_loss`: Direct Preference Optimization (Rafailov et al. 2023, eq. 7) on summed response
  log-probabilities: `-log σ(β Δ)` with `Δ = (log π(y_c) - log π0(y_c)) - (log π(y_r) - log π0(y_r))`;
  `label_smoothing` ε gives conservative DPO (cDPO, Mitchell 2023: labels flipped with probability
  ε); `loss="ipo"` is IPO (Azar et al. 2023, eq. 17) on per-token mean log-ratios, as TRL computes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llama2.errors import ConfigError

DPO_LOSSES = ("sigmoid", "ipo")
SAFE, UNSAFE, UNLABELLED = 1, 0, -1


def ranking_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """`(B,)` losses from rewards `(B,)` and margins m(r) `(B,)` (or one number)."""
    return -F.logsigmoid(chosen - rejected - margin)


def centring_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """`(B,)` losses `(r_chosen + r_rejected)^2` from rewards `(B,)`: their mean times a coefficient is
    TRL's `center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)`."""
    return (chosen + rejected) ** 2


def safety_aux_loss(rewards: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`(N,)` losses from rewards `(N,)` and labels `(N,)`: SAFE (1), UNSAFE (0) or UNLABELLED (-1)."""
    sign = torch.where(labels == SAFE, 1.0, -1.0).to(rewards.dtype)
    return torch.where(labels == UNLABELLED, 0.0, -F.logsigmoid(sign * rewards))


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    *,
    beta: float,
    loss: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """`(B,)` losses from the summed response log-probabilities `(B,)` of the policy and the frozen
    reference. IPO also needs each response's token count (`chosen_tokens`, `rejected_tokens`)."""
    chosen_ratio, rejected_ratio = policy_chosen - reference_chosen, policy_rejected - reference_rejected
    if loss == "sigmoid":
        logits = beta * (chosen_ratio - rejected_ratio)
        return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    if loss == "ipo":
        if chosen_tokens is None or rejected_tokens is None:
            raise ConfigError("the IPO loss needs the response token counts")
        delta = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        return (delta - 1 / (2 * beta)) ** 2
    raise ConfigError(f"unknown DPO loss {loss!r}; use one of {', '.join(DPO_LOSSES)}")


def response_logps(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probabilities `(B,)` of the masked targets: `logits (B, T, V)` predict
    `targets (B, T)`, and `mask (B, T)` marks the response's tokens."""
    logps = -F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)
    return (logps * mask).sum(dim=1)
