"""Batched log-likelihood scoring (lm-evaluation-harness's `loglikelihood` contract), done with as
little model work as the requests allow.

Benchmark requests repeat themselves. A multiple-choice question sends one request per choice with
the same context, and a single-token continuation makes the model input identical (the input is
`context + continuation[:-1]`), so identical inputs run once. Few-shot prompts share a long prefix
(MMLU's five exemplars per subject), so requests are grouped by common prefix: the prefix runs once
into a KV cache and only each request's own suffix is computed on top of it. Logits are projected
only at the positions that are scored, never over the whole sequence.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from llama2.model.kv_cache import KVCache
from llama2.model.transformer import Transformer

Tokens = tuple[int, ...]


@dataclass
class _Input:
    """One distinct model input and every request scored on it: `(request index, first position,
    continuation)`, where the hidden state at `first` predicts the continuation's first token."""

    tokens: Tokens
    targets: list[tuple[int, int, Tokens]]

    @property
    def first_scored(self) -> int:
        return min(first for _, first, _ in self.targets)


@dataclass
class _Group:
    """Inputs that share their first `prefix` tokens (0: nothing shared, each input runs whole)."""

    prefix: int
    inputs: list[_Input]


def group_inputs(requests: Sequence[tuple[Sequence[int], Sequence[int]]], min_prefix: int) -> list[_Group]:
    """Deduplicate model inputs, then cluster them by shared prefix.

    Sorted lexicographically, inputs with long common prefixes are neighbours; a group grows while
    the prefix it shares stays at least `min_prefix` tokens and at least half of what it was (so a
    one-line shared header does not swallow subjects that share a long few-shot block). A prefix
    never reaches a scored position, so every request's scored hidden states lie in its suffix.
    """
    distinct: dict[Tokens, _Input] = {}
    for index, (context, continuation) in enumerate(requests):
        tokens = tuple(context) + tuple(continuation)[:-1]
        entry = distinct.setdefault(tokens, _Input(tokens, []))
        entry.targets.append((index, len(context) - 1, tuple(continuation)))
    groups: list[_Group] = []
    for entry in sorted(distinct.values(), key=lambda e: e.tokens):
        if groups:
            group = groups[-1]
            shared = min(_common_prefix(group.inputs[0].tokens, entry.tokens), entry.first_scored, group.prefix)
            if shared >= min_prefix and 2 * shared >= group.prefix:
                group.prefix = shared
                group.inputs.append(entry)
                continue
        groups.append(_Group(prefix=entry.first_scored, inputs=[entry]))
    for group in groups:
        if len(group.inputs) == 1:
            group.prefix = 0
    return groups


def _common_prefix(a: Tokens, b: Tokens) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@torch.inference_mode()
def score_loglikelihood(
    model: Transformer,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    batch_tokens: int = 8192,
    max_rows: int = 64,
    min_prefix: int = 32,
) -> list[tuple[float, bool]]:
    """`(sum of log-probabilities, is greedy)` for each `(context, continuation)` of token ids.

    Requests must be validated by the caller (non-empty, within the context window). `batch_tokens`
    bounds the tokens computed per forward pass (rows x padded width, cached prefix included).
    """
    results: list[tuple[float, bool] | None] = [None] * len(requests)
    device = model.tok_embeddings.weight.device
    for group in group_inputs(requests, min_prefix):
        prefix_cache = _run_prefix(model, group.inputs[0].tokens[: group.prefix], device) if group.prefix else None
        for chunk in _chunks(group, batch_tokens, max_rows):
            hidden = _suffix_hidden_states(model, group.prefix, prefix_cache, chunk, device)
            for row, entry in enumerate(chunk):
                for index, first, continuation in entry.targets:
                    start = first - group.prefix
                    results[index] = _score(model, hidden[row, start : start + len(continuation)], continuation)
    return results  # type: ignore[return-value]


def _chunks(group: _Group, batch_tokens: int, max_rows: int) -> Iterator[list[_Input]]:
    """Rows of similar suffix length (less padding), as many as fit in `batch_tokens`."""
    inputs = sorted(group.inputs, key=lambda e: -len(e.tokens))
    start = 0
    while start < len(inputs):
        width = len(inputs[start].tokens)  # the longest in this chunk, prefix included
        count = max(1, min(max_rows, batch_tokens // width))
        yield inputs[start : start + count]
        start += count


def _run_prefix(model: Transformer, prefix: Tokens, device: torch.device) -> KVCache:
    """The shared prefix's keys and values, computed once (one row)."""
    cache = KVCache(model.args, 1, len(prefix), dtype=model.tok_embeddings.weight.dtype, device=device, zeroed=False)
    model.hidden_states(torch.tensor([prefix], device=device), 0, cache=cache)
    return cache


def _suffix_hidden_states(
    model: Transformer, prefix: int, prefix_cache: KVCache | None, chunk: list[_Input], device: torch.device
) -> torch.Tensor:
    """Final hidden states `(rows, width, dim)` of each input's tokens after the shared prefix,
    right-padded (causal attention keeps padding out of every real position)."""
    suffixes = [entry.tokens[prefix:] for entry in chunk]
    width = max(len(s) for s in suffixes)
    tokens = torch.zeros((len(chunk), width), dtype=torch.long)
    for row, suffix in enumerate(suffixes):
        tokens[row, : len(suffix)] = torch.tensor(suffix)
    tokens = tokens.to(device)
    if prefix_cache is None:
        return model.hidden_states(tokens)
    # Every slot is written before it is read: the prefix is copied in, the suffix (padding too) is
    # computed, and the cache is exactly prefix + width long — so no zero-fill is needed.
    cache = KVCache(model.args, len(chunk), prefix + width, dtype=prefix_cache.k.dtype, device=device, zeroed=False)
    cache.k[:, :, :, :prefix] = prefix_cache.k[:, :1, :, :prefix]
    cache.v[:, :, :, :prefix] = prefix_cache.v[:, :1, :, :prefix]
    return model.hidden_states(tokens, prefix, cache=cache)


def _score(model: Transformer, hidden: torch.Tensor, continuation: Tokens) -> tuple[float, bool]:
    """Sum of log-probabilities of `continuation` from the hidden states `(len, dim)` that predict it."""
    log_probs = torch.log_softmax(model.output(hidden).float(), -1)
    target = torch.tensor(continuation, device=hidden.device)
    return float(log_probs.gather(-1, target[:, None]).sum()), bool((log_probs.argmax(-1) == target).all())
