"""Sampling for RLHF through the one engine (DESIGN.md, "One engine"): K answers per prompt, each
with its own seed, from a loaded checkpoint (rejection sampling, context distillation) or from the
policy being trained (PPO).

Seeds: answer j to prompt i gets `sample_seed(*key, i, j)`, where `key` names the run and the
round (seed, iteration); with per-row generators an answer depends only on the weights and its
seed — not on batch size, order or the number of processes — which makes runs reproducible and
resumes exact.

Under FSDP the policy's weights are sharded, and generating through sharded layers all-gathers
every layer at every decoded token: that made the paper's generation ~20x slower (LLAMA2.md §5.2).
`policy_for_sampling` instead gathers the full weights once on every rank (an unsharded state
dict), builds a plain `Transformer` from them (LoRA adapters merged in, cast to the compute dtype),
lets each rank sample its own prompts, and frees the copy afterwards — the paper's fix,
"consolidate the model weights on each node before generation, then free the memory". In one
process there is nothing to gather: the training model itself samples (in eval mode).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from llama2.api import drop_format_space
from llama2.generation.engine import Engine
from llama2.model.chat_format import encode_dialog
from llama2.model.tokenizer import Tokenizer
from llama2.model.transformer import Transformer
from llama2.train.distributed import Runtime
from llama2.train.lora import LoraConfig, apply_lora, merge_lora
from llama2.train.policy_value import VALUE_PREFIX, PolicyValueTransformer
from llama2.types import Dialog, SamplingParams


@dataclass(frozen=True)
class Response:
    """One sampled answer: its ids (ending with EOS when the model chose to stop; without one when
    `max_new_tokens` cut it off) and its text; with an engine that keeps hidden states, also the
    final-normed hidden state each of those ids was sampled from, `(len(tokens), dim)`."""

    tokens: list[int]
    text: str
    finished: bool
    hidden: torch.Tensor | None = None


def sample_seed(*key: int) -> int:
    """A 63-bit seed from a tuple of non-negative integers (the same tuple, the same seed)."""
    low, high = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint32)
    return ((int(high) << 32) | int(low)) & (2**63 - 1)


def encode_prompts(tokenizer: Tokenizer, dialogs: Sequence[Dialog], *, system_prompt: str | None = None) -> list[list[int]]:
    """The chat-format prompt ids of each dialog (ending with a user turn)."""
    return [encode_dialog(tokenizer, dialog, system_prompt=system_prompt) for dialog in dialogs]


def sample_responses(
    engine: Engine,
    prompt_ids: Sequence[Sequence[int]],
    *,
    k: int,
    params: SamplingParams,
    seed_key: Sequence[int],
    prompt_numbers: Sequence[int],
    advance: Callable[[int], None] | None = None,
    chunk: int = 64,
) -> list[list[Response]]:
    """`k` answers to each prompt (`[prompt][j]`), prompt i's answer j seeded by
    `sample_seed(*seed_key, prompt_numbers[i], j)` (`prompt_numbers`: the prompts' global indices,
    so a prompt gets the same answers on whichever rank samples it). `advance(n)` is called as
    prompts finish, `chunk` prompts at a time."""
    eos = engine.eos_id
    out: list[list[Response]] = []
    for start in range(0, len(prompt_ids), chunk):
        rows, settings = [], []
        for i in range(start, min(start + chunk, len(prompt_ids))):
            for j in range(k):
                rows.append(list(prompt_ids[i]))
                settings.append(replace(params, seed=sample_seed(*seed_key, prompt_numbers[i], j), logprobs=False))
        results = engine.generate(rows, settings)
        for i in range(0, len(results), k):
            out.append([Response(r.tokens + ([eos] if r.finish_reason == "stop" and eos is not None else []),
                                 drop_format_space(r.text), r.finish_reason == "stop", r.hidden_states)
                        for r in results[i:i + k]])
        if advance is not None:
            advance(len(results) // k)
    return out


@contextlib.contextmanager
def policy_for_sampling(model: nn.Module, runtime: Runtime, *, lora: LoraConfig | None,
                        dtype: torch.dtype | None = None) -> Iterator[nn.Module]:
    """A model the engine can sample from with the current weights of `model` (see the module
    docstring): `model` itself in one process; under FSDP a full copy on every rank, built from
    the gathered weights (a PPO policy's value head included, so values can be read from the
    sampling pass) and freed on exit. Every rank must enter (the gather is collective)."""
    if not runtime.distributed:
        was_training = model.training
        model.eval()
        try:
            yield model
        finally:
            model.train(was_training)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    with torch.device("meta"):
        plain = PolicyValueTransformer(model.args) if any(k.startswith(VALUE_PREFIX) for k in state) else Transformer(model.args)
    if lora is not None:
        apply_lora(plain, lora)
    names = set(plain.state_dict())
    plain.load_state_dict({k: v for k, v in state.items() if k in names}, assign=True, strict=True)
    del state
    if lora is not None:
        merge_lora(plain)
    plain.requires_grad_(False).eval()
    if dtype is not None:
        plain.to(dtype)
    try:
        yield plain
    finally:
        del plain
        if runtime.device.type == "cuda":
            torch.cuda.empty_cache()


def gather_objects(items: Sequence, runtime: Runtime) -> list:
    """Every rank's `items`, concatenated in rank order, on every rank (a no-op in one process)."""
    if not runtime.distributed:
        return list(items)
    parts: list = [None] * runtime.world_size
    dist.all_gather_object(parts, list(items))
    return [item for part in parts for item in part]


def shard(count: int, runtime: Runtime) -> range:
    """This rank's contiguous share of `count` items (the first `count % world` ranks get one more)."""
    base, extra = divmod(count, runtime.world_size)
    start = runtime.rank * base + min(runtime.rank, extra)
    return range(start, start + base + (runtime.rank < extra))
