"""`llama2 train`: recipe + overrides in, one-line errors out."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from llama2.cli.main import main


def settings_args(settings: dict) -> list[str]:
    return [f"{key}={value}" for key, value in settings.items()]


def test_dry_run_prints_the_resolved_config(tiny_settings, tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_settings()))
    assert main(["train", "pretrain", str(recipe), "global_batch_size=8", "--dry-run"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["grad_accum"] == 2 and printed["model"] == "tiny" and printed["betas"] == [0.9, 0.95]
    assert not (tmp_path / "run").exists()  # nothing was built


def test_trains_and_reports(tiny_settings, tmp_path: Path, capsys) -> None:
    assert main(["train", "pretrain", *settings_args(tiny_settings(max_steps=2)), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 2 and result["checkpoint"].endswith("step-00000002")
    assert result["metrics"]["step"] == 2


def test_config_errors_are_one_line(tiny_settings, capsys) -> None:
    assert main(["train", "pretrain", *settings_args(tiny_settings(max_step=5, dtype="fp8"))]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("llama2: error: recipe has 2 problems")
    assert "(did you mean 'max_steps'?)" in err and "dtype must be one of 'auto', 'float32', 'bfloat16'" in err


def test_unknown_recipe_names_the_choices(capsys) -> None:
    assert main(["train", "pretrian"]) == 1
    assert "unknown recipe 'pretrian' (did you mean 'pretrain'?); choose one of pretrain" in capsys.readouterr().err


def test_missing_recipe_file(tmp_path: Path, capsys) -> None:
    assert main(["train", "pretrain", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read recipe" in capsys.readouterr().err


def test_tiny_recipe_trains_out_of_the_box(tmp_path: Path, capsys) -> None:
    """The shipped sample corpus, a tokenizer trained on it, a few steps, a checkpoint that chats."""
    from llama2.api import Llama

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "pretrain-tiny.yaml"
    overrides = [f"output_dir={tmp_path}", "max_steps=3", "batch_size=2", "eval_every=3", "eval_batches=1", "tensorboard=false"]
    assert main(["train", "pretrain", str(recipe), *overrides, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metrics"]["val_loss"] > 0
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["vocab_size"] == 4096 and manifest["splits"]["val"]["tokens"] > 256
    llama = Llama.from_pretrained(result["checkpoint"], device="cpu")
    assert llama.args.vocab_size == 4096 and llama.tokenizer.n_words == 4096
    assert len(llama.generate(["In the beginning"], max_new_tokens=4, temperature=0)[0].tokens) == 4
