"""AdamW groups and the step-indexed schedule (LLAMA2.md §2), checked against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from llama2.model.config import get_preset
from llama2.model.transformer import Transformer
from llama2.train.optim import build_optimizer, lr_at, param_groups


def test_warmup_is_linear_from_the_first_step() -> None:
    # peak 1e-3, 4 warmup steps: 1/4, 2/4, 3/4, 4/4 of the peak.
    values = [lr_at(step, peak=1e-3, warmup_steps=4, max_steps=14) for step in range(4)]
    assert values == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])


def test_cosine_decays_to_a_tenth_of_the_peak() -> None:
    kwargs = {"peak": 1e-3, "warmup_steps": 4, "max_steps": 14, "min_ratio": 0.1}
    # Step 4 starts the cosine at the peak; step 9 is halfway: 1e-4 + 0.5 * 9e-4 * (1 + cos(pi/2)).
    assert lr_at(4, **kwargs) == pytest.approx(1e-3)
    assert lr_at(9, **kwargs) == pytest.approx(5.5e-4)
    # A quarter of the way (2 of 8 decay steps): 1e-4 + 0.5 * 9e-4 * (1 + cos(pi/4)) = 8.6820e-4.
    assert lr_at(6, **{**kwargs, "max_steps": 12}) == pytest.approx(1e-4 + 0.45e-3 * (1 + math.sqrt(0.5)))
    assert lr_at(14, **kwargs) == pytest.approx(1e-4)
    assert lr_at(100, **kwargs) == pytest.approx(1e-4)


def test_schedule_is_monotone_after_warmup() -> None:
    values = [lr_at(s, peak=3e-4, warmup_steps=20, max_steps=200) for s in range(20, 201)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_without_warmup_the_first_step_uses_the_peak() -> None:
    assert lr_at(0, peak=3e-4, warmup_steps=0, max_steps=10) == pytest.approx(3e-4)


def test_weight_decay_applies_to_matrices_only() -> None:
    with torch.device("meta"):
        model = Transformer(get_preset("tiny"))
    decayed, plain = param_groups(model, weight_decay=0.1)
    names = {id(p): name for name, p in model.named_parameters()}
    decayed_names = {names[id(p)] for p in decayed["params"]}
    plain_names = {names[id(p)] for p in plain["params"]}
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert plain_names == {"norm.weight"} | {f"layers.{i}.{n}_norm.weight" for i in range(2) for n in ("attention", "ffn")}
    assert {"tok_embeddings.weight", "output.weight", "layers.0.attention.wq.weight", "layers.1.feed_forward.w2.weight"} <= decayed_names
    assert len(decayed_names) + len(plain_names) == len(list(model.parameters()))


def test_optimizer_uses_llama2_settings() -> None:
    model = Transformer(get_preset("tiny"))
    optimizer = build_optimizer(model, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-5)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert optimizer.defaults["betas"] == (0.9, 0.95) and optimizer.defaults["eps"] == 1e-5
