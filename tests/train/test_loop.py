"""The one loop on the tiny model: learning, accumulation, checkpoints, logs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from llama2.errors import ConfigError
from llama2.model.checkpoint import load_transformer
from llama2.train.checkpointing import checkpoint_dirs, read_weights
from llama2.train.loop import train
from llama2.train.recipes.pretrain import Pretrain


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_on_a_tiny_corpus(tiny_config) -> None:
    config = tiny_config(max_steps=40, log_every=5, eval_every=20, eval_batches=2)
    result = train(Pretrain(config))
    records = read_metrics(Path(config.output_dir))
    assert [r["step"] for r in records] == list(range(5, 41, 5))
    assert records[-1]["loss"] < records[0]["loss"] - 1.0
    assert records[-1]["val_loss"] < records[3]["val_loss"]  # eval at steps 20 and 40
    assert result.step == 40 and result.metrics == records[-1]


def test_logs_hold_the_promised_fields(tiny_config) -> None:
    config = tiny_config(max_steps=4, log_every=2, eval_every=4, eval_batches=1, tensorboard=True)
    train(Pretrain(config))
    output = Path(config.output_dir)
    records = read_metrics(output)
    assert {"step", "loss", "lr", "tokens", "tokens_per_s", "grad_norm"} <= set(records[0])
    assert records[0]["tokens"] == 2 * 4 * 32 and records[1]["tokens"] == 4 * 4 * 32
    assert records[1]["val_ppl"] == pytest.approx(2.718281828 ** records[1]["val_loss"])
    assert "mfu" not in records[0]  # a CPU has no known peak unless the recipe gives peak_flops
    with (output / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(row["step"]) for row in rows] == [2, 4]
    assert float(rows[1]["val_loss"]) == pytest.approx(records[1]["val_loss"]) and rows[0]["val_loss"] == ""
    assert list((output / "tensorboard").glob("events.out.tfevents.*"))


def test_mfu_is_reported_with_a_given_peak(tiny_config) -> None:
    config = tiny_config(max_steps=2, peak_flops=1e12)
    train(Pretrain(config))
    assert 0 < read_metrics(Path(config.output_dir))[-1]["mfu"] < 1


def test_grad_accumulation_matches_one_big_batch(tiny_config, tmp_path: Path) -> None:
    """Four sequences in one micro-batch or two of two: the same update (losses are token sums)."""
    one = tiny_config(output_dir=str(tmp_path / "one"), max_steps=4)
    two = tiny_config(output_dir=str(tmp_path / "two"), max_steps=4, batch_size=2, grad_accum=2)
    train(Pretrain(one))
    train(Pretrain(two))
    for a, b in zip(read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two"), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)


def test_activation_checkpointing_changes_nothing_but_memory(tiny_config, tmp_path: Path) -> None:
    plain = tiny_config(output_dir=str(tmp_path / "plain"), max_steps=3)
    recomputed = tiny_config(output_dir=str(tmp_path / "ac"), max_steps=3, activation_checkpointing=True)
    train(Pretrain(plain))
    train(Pretrain(recomputed))
    assert [r["loss"] for r in read_metrics(tmp_path / "ac")] == [r["loss"] for r in read_metrics(tmp_path / "plain")]


def test_bf16_autocast_trains(tiny_config) -> None:
    config = tiny_config(max_steps=10, dtype="bfloat16")
    train(Pretrain(config))
    losses = [r["loss"] for r in read_metrics(Path(config.output_dir))]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_checkpoint_is_a_loadable_model(tiny_config) -> None:
    config = tiny_config(max_steps=6, save_every=2, keep_last=2)
    result = train(Pretrain(config))
    root = Path(config.output_dir) / "checkpoints"
    assert [p.name for p in checkpoint_dirs(root)] == ["step-00000004", "step-00000006"]
    assert result.checkpoint == root / "step-00000006"
    assert {"consolidated.00.pth", "params.json", "tokenizer.model", "optimizer.pt", "trainer.json", "rng-rank0.pt"} <= {
        p.name for p in result.checkpoint.iterdir()}
    trainer = json.loads((result.checkpoint / "trainer.json").read_text())
    assert (trainer["step"], trainer["tokens"], trainer["config"]["max_steps"]) == (6, 6 * 4 * 32, 6)
    model = load_transformer(result.checkpoint)
    weights = read_weights(result.checkpoint / "consolidated.00.pth")
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in weights.items())
    assert not torch.equal(weights["output.weight"], _initial_weights(config)["output.weight"])


def test_training_starts_from_an_init_checkpoint(tiny_config, tmp_path: Path) -> None:
    first = train(Pretrain(tiny_config(output_dir=str(tmp_path / "a"), max_steps=3)))
    start = _initial_weights(tiny_config(output_dir=str(tmp_path / "b"), init=str(first.checkpoint), model=None))
    saved = read_weights(first.checkpoint / "consolidated.00.pth")
    assert all(torch.equal(start[name], saved[name]) for name in saved)


def test_resume_never_refuses_to_overwrite(tiny_config) -> None:
    train(Pretrain(tiny_config(max_steps=2)))
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(Pretrain(tiny_config(max_steps=4, resume="never")))


def test_finished_run_resumes_to_nothing(tiny_config) -> None:
    config = tiny_config(max_steps=3)
    train(Pretrain(config))
    again = train(Pretrain(config))
    assert again.step == 3 and len(read_metrics(Path(config.output_dir))) == 3


def _initial_weights(config) -> dict[str, torch.Tensor]:
    from llama2.train.distributed import Runtime

    recipe = Pretrain(config)
    recipe.prepare(Runtime(0, 1, 0, torch.device("cpu")))
    return recipe.initial_state()
