"""PPO's batches: the answers of an iteration as padded tensors, and the reductions over ranks that
whitening them needs (`recipes/ppo.py`).

A row is prompt + answer, right-padded (`tokens (B, L)`); the answer's token t is chosen by the
logits at `starts + t` (`starts = len(prompt) - 1`), where the value of that state is read too.
Per-token tensors are `(B, T)` over the answers, zero past each answer's end (`mask` False there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llama2.train.distributed import Runtime, all_reduce_sum


@dataclass
class Rollout:
    """One answer of an iteration, ready for training: ids and per-token tensors `(R,)`."""

    prompt: list[int]
    response: list[int]
    old_logprobs: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    reward: float  # LOGIT(R_c), before whitening
    whitened: float
    kl: float  # Σ_t (log π_old - log π_0)


def rows_batch(rows: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """`tokens (B, L)` of prompt + answer, `responses (B, T)` (the answers' ids) and `starts (B,)`."""
    length, width = max(len(p) + len(r) for p, r in rows), max(len(r) for _, r in rows)
    tokens = torch.zeros(len(rows), length, dtype=torch.long)
    responses = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (p, r) in enumerate(rows):
        tokens[i, :len(p) + len(r)] = torch.tensor(p + r)
        responses[i, :len(r)] = torch.tensor(r)
    return {"tokens": tokens, "responses": responses, "starts": torch.tensor([len(p) - 1 for p, _ in rows])}


def collate(rollouts: list[Rollout]) -> dict[str, torch.Tensor]:
    """`rows_batch` of the rollouts, with `mask`, their per-token tensors `(B, T)` and per-answer numbers `(B,)`."""
    batch = rows_batch([(r.prompt, r.response) for r in rollouts])
    batch["mask"] = padded([torch.ones(len(r.response)) for r in rollouts]).bool()
    for name in ("old_logprobs", "old_values", "advantages", "returns"):
        batch[name] = padded([getattr(r, name) for r in rollouts])
    for name in ("reward", "whitened", "kl"):
        batch[name] = torch.tensor([getattr(r, name) for r in rollouts])
    return batch


def token_logprobs(picked: torch.Tensor, batch: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
    """`(B, T)` log-probabilities, at `temperature`, of each answer's tokens under the logits at the
    answer's positions `picked (B, T, V)` (`pick`, or a forward with `select=response_positions(batch)`)."""
    return torch.log_softmax(picked.float() / temperature, dim=-1).gather(-1, batch["responses"][..., None]).squeeze(-1)


def response_positions(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """`(B, T)`: the positions `starts + t` that choose each answer's token t, clamped into the row
    (padding past an answer's end is masked out by the caller)."""
    tokens = batch["tokens"]
    width = batch["responses"].shape[1]
    return (batch["starts"][:, None] + torch.arange(width, device=tokens.device)).clamp(max=tokens.shape[1] - 1)


def pick(per_position: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """`(B, T, ...)` from `(B, L, ...)`: the values at `response_positions(batch)`."""
    positions = response_positions(batch)
    if per_position.dim() == 2:
        return per_position.gather(1, positions)
    return per_position.gather(1, positions[..., None].expand(-1, -1, per_position.shape[-1]))


def padded(rows: list[torch.Tensor]) -> torch.Tensor:
    """`(B, T)` from rows of different lengths, zero-padded at the end."""
    out = torch.zeros(len(rows), max(len(r) for r in rows))
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def global_mean(values: torch.Tensor, runtime: Runtime) -> float:
    packed = torch.tensor([float(values.sum()), float(values.numel())], dtype=torch.float64)
    packed = all_reduce_sum(packed.to(reduce_device(runtime)), runtime).cpu()
    return float(packed[0] / packed[1].clamp(min=1.0))


def whiten_masked(values: torch.Tensor, mask: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """`values` centred and scaled by their mean and std over the masked entries of every rank."""
    m = mask.to(torch.float64)
    x = values.double() * m
    packed = torch.stack([x.sum(), (x * x).sum(), m.sum()])
    packed = all_reduce_sum(packed.to(reduce_device(runtime)), runtime).cpu()
    mean = packed[0] / packed[2].clamp(min=1.0)
    var = (packed[1] / packed[2].clamp(min=1.0) - mean * mean).clamp(min=0.0)
    return (((values.double() - mean) / torch.sqrt(var + 1e-8)) * m).float()


def reduce_device(runtime: Runtime) -> torch.device:
    """Where sums are all-reduced: the GPU under NCCL, the CPU under gloo or in one process."""
    return runtime.device if runtime.device.type == "cuda" else torch.device("cpu")
