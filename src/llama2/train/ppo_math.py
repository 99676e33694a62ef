"""The arithmetic of PPO for Llama 2-Chat (Llama 2 §3.2.3; LLAMA2.md §5.2), as pure tensor functions.

The recipe (`recipes/ppo.py`) samples, scores and batches; everything here is a function of tensors
so that tests can check it against hand computations:

- `RunningMoments`: running mean and covariance of d-dimensional values (Chan et al.'s parallel
  update, fed with sums so ranks can all-reduce them) and whitening by them. With d = 1 this is
  the paper's `WHITEN`; with d = 2 over (helpfulness, safety) scores it is ZCA whitening, which
  also decorrelates the two before they are combined.
- `shaped_rewards`: the per-token rewards of `R(g|p) = R̃_c(g|p) - β D_KL(π_θ ‖ π_0)` — per token
  (each token pays its own KL) or per sequence (the summed KL paid at the last token).
- `gae`: generalized advantage estimation (Schulman et al. 2016) over right-padded responses.
- `policy_loss`, `value_loss`: PPO's clipped surrogate and clipped value loss (Schulman et al. 2017).
- `adaptive_beta`: Ziegler et al. (2019)'s proportional KL controller, an option (the paper's β is fixed).

Shapes: `B` responses, `T` the longest response; `mask (B, T)` marks each row's response tokens,
which start at column 0 (right padding).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


class RunningMoments:
    """Running mean and (unbiased) covariance of `dim`-dimensional values, and whitening by them.

    `update(values)` or `update_sums(count, total, outer)` merge a batch in (the sums form lets
    ranks all-reduce `(n, Σx, Σxxᵀ)` and stay identical); `whiten(values)` maps x to
    `W (x - mean)` with `W = Σ^{-1/2}` (ZCA: the symmetric inverse square root, which of all
    whitening matrices keeps each component closest to the original one, so "the helpfulness
    score" stays the helpfulness score). For `dim=1` that is `(x - mean) / std`. `eps` is added to
    the eigenvalues, so constant values whiten to 0 instead of dividing by zero.
    """

    def __init__(self, dim: int = 1, *, eps: float = 1e-8) -> None:
        self.dim, self.eps = dim, eps
        self.count = 0
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self.m2 = torch.zeros(dim, dim, dtype=torch.float64)  # Σ (x - mean)(x - mean)ᵀ

    @property
    def covariance(self) -> torch.Tensor:
        """`(dim, dim)`, unbiased (divided by count - 1); zeros before two values were seen."""
        return self.m2 / (self.count - 1) if self.count > 1 else torch.zeros_like(self.m2)

    def update(self, values: torch.Tensor) -> None:
        """Merge values `(N, dim)` (or `(N,)` when dim is 1)."""
        x = values.detach().double().reshape(-1, self.dim).cpu()
        self.update_sums(x.shape[0], x.sum(0), x.T @ x)

    def update_sums(self, count: int, total: torch.Tensor, outer: torch.Tensor) -> None:
        """Merge a batch given by its size, sum `(dim,)` and sum of outer products `(dim, dim)`."""
        if count <= 0:
            return
        total, outer = total.double().reshape(self.dim).cpu(), outer.double().reshape(self.dim, self.dim).cpu()
        batch_mean = total / count
        batch_m2 = outer - count * torch.outer(batch_mean, batch_mean)
        merged = self.count + count
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (count / merged)
        self.m2 = self.m2 + batch_m2 + torch.outer(delta, delta) * (self.count * count / merged)
        self.count = merged

    def whitening_matrix(self) -> torch.Tensor:
        """`Σ^{-1/2}` `(dim, dim)` (ZCA), from the eigendecomposition of the covariance."""
        values, vectors = torch.linalg.eigh(self.covariance)
        return vectors @ torch.diag((values.clamp(min=0.0) + self.eps).rsqrt()) @ vectors.T

    def whiten(self, values: torch.Tensor) -> torch.Tensor:
        """`W (x - mean)` for values `(N, dim)` (or `(N,)`), in their dtype and on their device."""
        shape = values.shape
        x = values.double().reshape(-1, self.dim).cpu()
        out = (x - self.mean) @ self.whitening_matrix().T
        return out.reshape(shape).to(dtype=values.dtype, device=values.device)

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers (JSON), for resuming a run with the same statistics."""
        return {"dim": self.dim, "count": self.count, "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["dim"] != self.dim:
            raise ValueError(f"running moments of dimension {state['dim']} cannot load into dimension {self.dim}")
        self.count = int(state["count"])
        self.mean = torch.tensor(state["mean"], dtype=torch.float64)
        self.m2 = torch.tensor(state["m2"], dtype=torch.float64)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is true (over `dim`, or everything); 0 where nothing is masked in."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def shaped_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, *, beta: float, kl_mode: str) -> torch.Tensor:
    """Per-token rewards `(B, T)`: the (whitened) score `(B,)` at each response's last token, minus
    `beta` times the KL estimate `kl (B, T)` — at every token (`kl_mode="token"`) or summed at the
    last token (`"sequence"`). Both give every response the same total; they differ in which
    tokens the advantage estimate credits."""
    mask = mask.to(kl.dtype)
    rows = torch.arange(kl.shape[0], device=kl.device)
    last = (mask.sum(1) - 1).clamp(min=0).long()
    if kl_mode == "token":
        rewards = -beta * kl * mask
    elif kl_mode == "sequence":
        rewards = torch.zeros_like(kl)
        rewards[rows, last] = -beta * (kl * mask).sum(1)
    else:
        raise ValueError(f"unknown kl_mode {kl_mode!r}; use token or sequence")
    rewards[rows, last] += scores.to(kl.dtype)
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`(advantages, returns)`, both `(B, T)` and zero past each response's end.

    `δ_t = r_t + γ V_{t+1} - V_t` (V = 0 after the last token), `A_t = Σ_l (γλ)^l δ_{t+l}`,
    returns `A_t + V_t` (the value targets).
    """
    mask = mask.to(values.dtype)
    values = values * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        next_value = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, *,
                clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate per token `(B, T)`, `max(-A r, -A clip(r, 1-ε, 1+ε))` with
    `r = exp(logπ - logπ_old)`, and whether the clipped side was taken (for the clip fraction)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    return torch.maximum(unclipped, clipped), (clipped > unclipped)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, *, clip: float) -> torch.Tensor:
    """Clipped value loss per token `(B, T)`: `½ max((V - R)², (V_old + clip(V - V_old, ±ε) - R)²)`."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)


def adaptive_beta(beta: float, kl: float, *, target: float, steps: int, horizon: int) -> float:
    """Ziegler et al. (2019), eq. 2: `β ← β (1 + clip(KL / target - 1, ±0.2) · steps / horizon)`,
    raising β when the measured KL (per response) is above the target and lowering it below."""
    error = max(-0.2, min(0.2, kl / target - 1.0))
    return beta * (1.0 + error * steps / horizon)
