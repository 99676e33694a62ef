"""FSDP2 on 2 CPU processes (gloo) trains like one process at the same global batch, and its
checkpoints resume in one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama2.model.checkpoint import load_transformer
from llama2.train.loop import train
from llama2.train.recipes.pretrain import Pretrain

from .torchrun import train_on_two_processes

pytestmark = pytest.mark.slow

# A constant rate after warmup, so runs of different max_steps follow the same schedule.
COMMON = {"seq_len": 32, "lr": 3e-3, "warmup_steps": 2, "min_lr_ratio": 1.0, "save_every": 5}


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one_and_resume_in_one(tiny_settings, tiny_config, tmp_path: Path) -> None:
    train(Pretrain(tiny_config(output_dir=str(tmp_path / "single"), max_steps=7, batch_size=4, **COMMON)))
    single = read_metrics(tmp_path / "single")

    settings = tiny_settings(output_dir=str(tmp_path / "fsdp"), max_steps=5, batch_size=2, **COMMON)
    train_on_two_processes("pretrain", [f"{key}={value}" for key, value in settings.items()])
    sharded = read_metrics(tmp_path / "fsdp")
    assert [r["step"] for r in sharded] == [1, 2, 3, 4, 5]
    for got, want in zip(sharded, single):
        assert got["tokens"] == want["tokens"]  # 4 sequences per step either way
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-3)

    checkpoint = tmp_path / "fsdp" / "checkpoints" / "step-00000005"
    assert json.loads((checkpoint / "trainer.json").read_text())["world_size"] == 2
    assert load_transformer(checkpoint).args.n_layers == 2  # the gathered weights are a plain model

    train(Pretrain(tiny_config(output_dir=str(tmp_path / "fsdp"), max_steps=7, batch_size=4, **COMMON)))
    resumed = read_metrics(tmp_path / "fsdp")
    assert [r["step"] for r in resumed] == list(range(1, 8))
    for got, want in zip(resumed[5:], single[5:]):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)
