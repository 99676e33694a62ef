"""oneDNN matmuls for fp32 CPU training (`train/cpu_matmul.py`): the same outputs and gradients as
`F.linear`, the same losses step by step through the loop, and the key's limits."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llama2.errors import ConfigError
from llama2.model.cpu_kernels import onednn_available
from llama2.model.config import get_preset
from llama2.model.transformer import Transformer
from llama2.train.cpu_matmul import OneDNNLinear, onednn_training_speedup, use_onednn
from llama2.train.config import parse_config
from llama2.train.loop import train
from llama2.train.recipes.pretrain import Pretrain, PretrainConfig

pytestmark = pytest.mark.skipif(not onednn_available(Transformer.random(get_preset("tiny"))),
                                reason="this torch build has no oneDNN")


def test_outputs_and_both_gradients_equal_f_linear():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 17, 48, generator=generator, requires_grad=True)
    weight = torch.randn(80, 48, generator=generator, requires_grad=True)
    upstream = torch.randn(3, 17, 80, generator=generator)
    layer = nn.Linear(48, 80, bias=False)
    layer.weight = nn.Parameter(weight.detach().clone())
    assert use_onednn(layer) == 1 and isinstance(layer, OneDNNLinear)
    x2 = x.detach().clone().requires_grad_()
    (F.linear(x, weight) * upstream).sum().backward()
    out = layer(x2)
    (out * upstream).sum().backward()
    torch.testing.assert_close(out, F.linear(x, weight), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, weight.grad, rtol=1e-5, atol=1e-5)
    frozen = nn.Linear(48, 80, bias=False).requires_grad_(False)
    use_onednn(frozen)
    x3 = x.detach().clone().requires_grad_()
    frozen(x3).sum().backward()  # a frozen weight (LoRA's base): only the input's gradient
    assert x3.grad is not None and frozen.weight.grad is None
    assert onednn_training_speedup(Transformer.random(get_preset("tiny")), 64) > 0


def test_training_with_onednn_follows_the_same_losses(tmp_path, tiny_settings, monkeypatch):
    import llama2.train.loop as loop

    swapped = []
    monkeypatch.setattr(loop, "use_onednn", lambda model: swapped.append(use_onednn(model)))
    losses = {}
    for mode in ("torch", "onednn"):
        config = tiny_settings(cpu_kernels=mode, dtype="float32", device="cpu", output_dir=str(tmp_path / mode))
        train(Pretrain(parse_config(PretrainConfig, config)))
        losses[mode] = [json.loads(line)["loss"] for line in (tmp_path / mode / "metrics.jsonl").read_text().splitlines()]
    assert len(losses["torch"]) == 8 and swapped == [7 * 2 + 1]  # only the onednn run: 7 linears a layer, the head
    assert losses["onednn"] == pytest.approx(losses["torch"], rel=1e-4)
    with pytest.raises(ConfigError, match="cpu_kernels=onednn is for fp32 training in one process on the CPU"):
        train(Pretrain(parse_config(PretrainConfig, tiny_settings(cpu_kernels="onednn", dtype="bfloat16", device="cpu",
                                                                  output_dir=str(tmp_path / "bf16")))))


def test_a_resumed_auto_run_keeps_the_matmul_its_checkpoint_was_trained_with(tmp_path, tiny_settings, monkeypatch):
    """`auto` decides by timing, which can come out differently in the next process; the two products
    differ in summation order, so a resumed run takes its checkpoint's choice to continue exactly."""
    import llama2.train.loop as loop
    from llama2.train.checkpointing import checkpoint_dirs, read_trainer_state

    swapped = []
    monkeypatch.setattr(loop, "use_onednn", lambda model: swapped.append(use_onednn(model)))
    monkeypatch.setattr(loop, "faster_with_onednn", lambda model, rows: True)
    config = tiny_settings(cpu_kernels="auto", output_dir=str(tmp_path / "run"), max_steps=4, save_every=2)
    train(Pretrain(parse_config(PretrainConfig, config)))
    root = tmp_path / "run" / "checkpoints"
    assert swapped and read_trainer_state(checkpoint_dirs(root)[-1])["cpu_matmul"] == "onednn"
    monkeypatch.setattr(loop, "faster_with_onednn", lambda model, rows: False)  # this time timing says MKL
    swapped.clear()
    train(Pretrain(parse_config(PretrainConfig, {**config, "max_steps": 6})))
    assert swapped and read_trainer_state(checkpoint_dirs(root)[-1])["cpu_matmul"] == "onednn"
    fresh = tiny_settings(cpu_kernels="auto", output_dir=str(tmp_path / "fresh"), max_steps=2, save_every=2)
    swapped.clear()
    train(Pretrain(parse_config(PretrainConfig, fresh)))  # a new run does time
    assert not swapped and read_trainer_state(checkpoint_dirs(tmp_path / "fresh" / "checkpoints")[-1])["cpu_matmul"] == "torch"
