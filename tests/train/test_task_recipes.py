"""The task fine-tuning recipes (recipes/task-math-lora.yaml, recipes/task-code-lora.yaml): two-step
smoke runs on generated task data that train only the LoRA adapters (finite loss, adapters moved,
base frozen) and leave a merged model; both recipes as shipped start from default-chat with its own
512-token context, train plain-text continuations (`template: text`) and pass the whole config check."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from llama2.cli.main import main
from llama2.data.task_data import write_task
from llama2.model.checkpoint import load_state

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.mark.filterwarnings("ignore:dropped")  # the test tokenizer's 512 pieces make a few problems too long
@pytest.mark.parametrize("task", ["math", "code"])
def test_two_steps_of_a_task_recipe_train_only_its_adapters(task, tmp_path, tiny_checkpoint, capsys):
    write_task(task, tmp_path / "data", n_train=24, n_eval=2, seed=0)  # plain prompts, as the tiny model holds 256
    out = tmp_path / "run"
    code = main(["train", "sft", str(RECIPES / f"task-{task}-lora.yaml"), f"init={tiny_checkpoint}",
                 f"data={tmp_path / 'data' / 'train.jsonl'}", f"output_dir={out}", "max_steps=2", "batch_size=2",
                 "seq_len=256", "truncate=drop", "log_every=1", "tensorboard=false", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 2 and math.isfinite(summary["metrics"]["loss"])

    saved = torch.load(out / "checkpoints" / "step-00000002" / "consolidated.00.pth", weights_only=True)
    _, base = load_state(tiny_checkpoint)
    # the base stayed frozen (kept in bf16, as the recipes compute in bf16)
    assert all(saved[k].dtype == torch.bfloat16 and torch.equal(saved[k], base[k].to(torch.bfloat16)) for k in base)
    moved = {k.split(".")[-2] for k in saved if k.endswith("lora_B") and saved[k].abs().sum() > 0}
    assert moved == {"wq", "wk", "wv", "wo", "w1", "w2", "w3"}  # every adapted layer learned
    _, merged = load_state(out / "model")
    assert set(merged) == set(base)
    assert not torch.equal(merged["layers.0.feed_forward.w2.weight"].float(), base["layers.0.feed_forward.w2.weight"].float())


@pytest.mark.parametrize("task", ["math", "code"])
def test_the_recipes_as_shipped_pass_the_config_check(task, tmp_path, capsys):
    write_task(task, tmp_path / "data", n_train=4, n_eval=2, seed=0)
    argv = ["train", "sft", str(RECIPES / f"task-{task}-lora.yaml"), f"data={tmp_path / 'data' / 'train.jsonl'}", "--dry-run"]
    assert main(argv) == 0
    shown = capsys.readouterr().out
    assert "default-chat" in shown and "1152" not in shown
    recipe = yaml.safe_load((RECIPES / f"task-{task}-lora.yaml").read_text())
    assert recipe["init"] == "default-chat" and recipe["seq_len"] == 512 and recipe["template"] == "text"
