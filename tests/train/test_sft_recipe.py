"""The SFT recipe on the one loop: two-step smoke runs (full and LoRA) that change the weights and
leave a model every command loads; bad data fails before training, naming file and line."""

from __future__ import annotations

import json
import re

import pytest
import torch

from llama2.api import Llama
from llama2.cli.main import main
from llama2.model.checkpoint import load_state

DIALOGS = [
    [{"role": "user", "content": f"What is {a} plus {b}?"}, {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]
    for a in range(3) for b in range(4)
] + [[
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "Green."},
]]


@pytest.fixture
def dialogs_file(tmp_path):
    path = tmp_path / "dialogs.jsonl"
    path.write_text("".join(json.dumps({"messages": d}) + "\n" for d in DIALOGS))
    return path


def run_sft(tmp_path, init, data, *extra):
    out = tmp_path / "run"
    argv = ["train", "sft", f"init={init}", f"data={data}", f"output_dir={out}", "max_steps=2", "batch_size=2",
            "seq_len=128", "lr=1e-3", "log_every=1", "tensorboard=false", *extra, "--json"]
    return main(argv), out


def test_two_steps_of_full_sft_change_the_weights(tmp_path, tiny_checkpoint, dialogs_file, capsys):
    code, out = run_sft(tmp_path, tiny_checkpoint, dialogs_file)
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 2 and torch.isfinite(torch.tensor(summary["metrics"]["loss"]))
    _, before = load_state(tiny_checkpoint)
    _, after = load_state(out / "model")
    assert any(not torch.equal(before[k].float(), after[k].float()) for k in before)
    reply = Llama.from_pretrained(str(out / "model"), device="cpu").chat(DIALOGS[0][:1], max_new_tokens=3)[0]
    assert reply.completion_tokens <= 3


def test_lora_trains_only_adapters_and_merges_into_a_plain_model(tmp_path, tiny_checkpoint, dialogs_file, capsys):
    code, out = run_sft(tmp_path, tiny_checkpoint, dialogs_file, "lora.r=4", "lora.alpha=8", "lora.targets=wq,wv")
    assert code == 0
    checkpoint = out / "checkpoints" / "step-00000002"
    saved = torch.load(checkpoint / "consolidated.00.pth", weights_only=True)
    _, base = load_state(tiny_checkpoint)
    assert all(torch.equal(saved[k], base[k].float()) for k in base)  # the base stayed frozen
    assert any(k.endswith("lora_B") and saved[k].abs().sum() > 0 for k in saved)  # B starts at 0; it moved
    assert json.loads((checkpoint / "adapter" / "adapter_config.json").read_text())["r"] == 4
    _, merged = load_state(out / "model")
    assert set(merged) == set(base)
    assert not torch.equal(merged["layers.0.attention.wq.weight"].float(), base["layers.0.attention.wq.weight"].float())
    assert torch.equal(merged["layers.0.attention.wk.weight"].float(), base["layers.0.attention.wk.weight"].float())


def test_epochs_set_the_number_of_steps(tmp_path, tiny_checkpoint, dialogs_file, capsys):
    code, out = run_sft(tmp_path, tiny_checkpoint, dialogs_file, "max_steps=0", "epochs=2", "batch_size=1")
    assert code == 0
    rows = int(re.search(r"in (\d+) rows", capsys.readouterr().err).group(1))
    assert 1 < rows < len(DIALOGS)  # packed: fewer rows than dialogs
    assert (out / "checkpoints" / f"step-{2 * rows:08d}").is_dir()


def test_bad_data_fails_before_training_with_file_and_line(tmp_path, tiny_checkpoint, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": DIALOGS[0]}) + "\n"
                   + json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "x"}]}) + "\n")
    code, out = run_sft(tmp_path, tiny_checkpoint, bad)
    assert code == 1
    assert f"{bad}:2" in capsys.readouterr().err
    assert not (out / "checkpoints").exists()


def test_config_problems_are_reported_together(tmp_path, tiny_checkpoint, dialogs_file, capsys):
    code, _ = run_sft(tmp_path, tiny_checkpoint, dialogs_file, "max_steps=0", "lora.rank=4", "seq_len=100000")
    assert code == 1
    error = capsys.readouterr().err
    assert "epochs" in error and "rank" in error and "seq_len" in error


def test_convert_merges_a_trained_adapter_into_a_plain_checkpoint(tmp_path, tiny_checkpoint, dialogs_file, capsys):
    code, out = run_sft(tmp_path, tiny_checkpoint, dialogs_file, "lora.r=4", "lora.targets=wq,wv,w2")
    assert code == 0
    adapter = out / "checkpoints" / "step-00000002" / "adapter"
    assert main(["convert", str(tiny_checkpoint), str(tmp_path / "merged"), "--to", "meta", "--merge-lora", str(adapter)]) == 0
    _, merged = load_state(tmp_path / "merged")
    _, trained = load_state(out / "model")
    assert all(torch.allclose(merged[k].float(), trained[k].float(), atol=1e-6) for k in trained)
