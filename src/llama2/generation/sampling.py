"""Choosing the next token from logits: greedy, temperature, top-k and top-p (LLAMA2.md §1.4).

Parameters are per row so that one batch can mix requests with different settings (the server's
continuous batching); each row may carry its own seeded generator, so a seeded request gives the
same tokens whatever else shares its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RowSampling:
    """Per-row sampling settings, as tensors `(B,)` on the logits' device."""

    temperature: torch.Tensor
    top_p: torch.Tensor
    top_k: torch.Tensor
    generators: list[torch.Generator | None]

    @classmethod
    def build(
        cls,
        temperatures: list[float],
        top_ps: list[float],
        top_ks: list[int],
        seeds: list[int | None],
        device: torch.device,
    ) -> "RowSampling":
        """Settings with a fresh generator per seeded row."""
        generators = [None if seed is None else torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        return cls.of(temperatures, top_ps, top_ks, generators, device)

    @classmethod
    def of(
        cls,
        temperatures: list[float],
        top_ps: list[float],
        top_ks: list[int],
        generators: list[torch.Generator | None],
        device: torch.device,
    ) -> "RowSampling":
        """Settings over existing generators (a decoding sequence keeps its own from step to step)."""
        return cls(
            temperature=torch.tensor(temperatures, dtype=torch.float32, device=device),
            top_p=torch.tensor(top_ps, dtype=torch.float32, device=device),
            top_k=torch.tensor(top_ks, dtype=torch.long, device=device),
            generators=generators,
        )


def filter_top_k_top_p(probs: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Zero out tokens outside each row's top-k and top-p nucleus, then renormalise `(B, V)`.

    Top-p follows Meta's `sample_top_p`: sort descending and drop every token whose cumulative
    mass *before* it already exceeds p, so the most likely token always survives. top_k <= 0 and
    top_p >= 1 disable the respective filter; when no row filters, nothing is sorted (a sort of the
    whole vocabulary per step is a good part of a small model's sampling time).
    """
    if not bool(((top_k > 0) | (top_p < 1)).any()):
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    drop = mass_before > top_p[:, None]
    ranks = torch.arange(probs.shape[-1], device=probs.device)[None, :]
    drop |= (top_k[:, None] > 0) & (ranks >= top_k[:, None])
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    filtered = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return filtered / filtered.sum(dim=-1, keepdim=True)


def sample_next(logits: torch.Tensor, params: RowSampling) -> torch.Tensor:
    """Next token ids `(B,)` from last-position logits `(B, V)`; rows with temperature 0 are greedy."""
    greedy = logits.argmax(dim=-1)
    sampled_rows = params.temperature > 0
    if not bool(sampled_rows.any()):
        return greedy
    temperature = params.temperature.clamp_min(1e-5)[:, None]
    probs = filter_top_k_top_p(torch.softmax(logits.float() / temperature, dim=-1), params.top_k, params.top_p)
    # Exponential-race sampling (argmax of p / E, E ~ Exp(1)) equals sampling from p and lets each
    # row draw its noise from its own generator.
    noise = torch.empty_like(probs)
    for row, generator in enumerate(params.generators):
        noise[row].exponential_(generator=generator)
    sampled = (probs / noise).argmax(dim=-1)
    return torch.where(sampled_rows, sampled, greedy)
