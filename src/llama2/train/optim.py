"""AdamW with weight decay on matrices only, and the learning rate as a pure function of the step.

Llama 2 pretraining (LLAMA2.md §2): AdamW β = (0.9, 0.95), eps 1e-5, weight decay 0.1, linear
warmup (2000 steps) then cosine decay to 10% of the peak. Decay applies to tensors with two or
more dimensions (projections, embeddings); norm gains are left alone (nanoGPT's rule by rank).
Because the rate is a function of the step alone, resuming needs no scheduler state.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: trainable tensors with `dim() >= 2` decay, the rest (gains, biases) do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
) -> torch.optim.AdamW:
    """AdamW over `param_groups(model, weight_decay)`; the rate is reset each step by `set_lr`.

    The fused kernel (one pass over each tensor instead of a dozen) is used where torch has one:
    on CPU and CUDA it takes a third of the time of the multi-tensor path.
    """
    devices = {p.device.type for p in model.parameters()}
    fused = devices <= {"cpu", "cuda"}
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, fused=fused)


def lr_at(step: int, *, peak: float, warmup_steps: int, max_steps: int, min_ratio: float = 0.1) -> float:
    """The rate for optimizer step `step` (0-based).

    Warmup: `peak * (step + 1) / warmup_steps`, so the first step already moves and step
    `warmup_steps - 1` reaches the peak. Then a half cosine from the peak (at `warmup_steps`) to
    `min_ratio * peak` (at `max_steps`), and flat beyond it.
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    floor = min_ratio * peak
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
