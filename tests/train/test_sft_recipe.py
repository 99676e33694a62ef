"""The SFT recipe on the one loop: two-step smoke runs (full and LoRA) that change the weights and
leave a model every command loads; bad data fails before training, naming file and line. The
`template: text` option: the loss covers exactly the completion's tokens, multi-turn records are
refused by file and line, and the chat template stays the default."""

from __future__ import annotations

import json
import re

import pytest
import torch

from llama2.api import Llama
from llama2.cli.main import main
from llama2.data.sft_examples import build_examples
from llama2.model.chat_format import encode_dialog_for_training
from llama2.model.checkpoint import load_state
from llama2.model.tokenizer import Tokenizer

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


# ---- template: text -------------------------------------------------------------------------

PAIRS = [("Q: What is 2 plus 3?\nA:", " 2 plus 3 is 5. The answer is 5."),
         ('def add(a, b):\n    """Return a plus b."""\n', "    return a + b\n"),
         ("Once upon a ti", "me there was a robot.")]  # the boundary inside a word


@pytest.mark.parametrize(("prompt", "completion"), PAIRS)
def test_text_template_masks_exactly_the_completion_tokens(prompt, completion, tiny_tokenizer_path):
    tok = Tokenizer(tiny_tokenizer_path)
    dialog = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    (example,) = build_examples(tok, [dialog], seq_len=256, template="text")
    whole = tok.encode(prompt + completion, bos=True, eos=True)
    alone = tok.encode(prompt, bos=True, eos=False)
    assert example.ids == whole  # the concatenation, tokenized whole: no [INST], one BOS, one EOS
    untrained = example.loss_mask.index(True)
    assert not any(example.loss_mask[:untrained]) and all(example.loss_mask[untrained:])
    # the untrained part is the prompt's own tokens as far as they are a prefix of the whole text's
    assert whole[:untrained] == alone[:untrained]
    assert untrained == len(alone) or whole[untrained] != alone[untrained]
    if tok.decode(alone[1:]) == prompt and whole[:len(alone)] == alone:  # no token straddles the boundary
        assert untrained == len(alone)
        assert b"".join(tok.token_bytes(i) for i in whole[untrained:-1]).decode() == completion


def test_text_template_rejects_a_multi_turn_record_naming_file_and_line(tmp_path, tiny_checkpoint, dialogs_file, capsys):
    code, out = run_sft(tmp_path, tiny_checkpoint, dialogs_file, "template=text")
    assert code == 1
    error = capsys.readouterr().err
    assert f"{dialogs_file}:{len(DIALOGS)}" in error and "template 'text'" in error and "5 messages" in error
    assert not (out / "checkpoints").exists()


def test_text_template_rejects_a_system_prompt(tmp_path, tiny_checkpoint, dialogs_file, capsys):
    code, _ = run_sft(tmp_path, tiny_checkpoint, dialogs_file, "template=text", "system_prompt=Be brief.")
    assert code == 1
    assert "system_prompt belongs to the chat template" in capsys.readouterr().err


def test_two_steps_with_the_text_template(tmp_path, tiny_checkpoint, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q: What is {a} plus {b}?\nA:", "completion": f" {a + b}."}) + "\n"
                            for a in range(4) for b in range(4)))
    code, out = run_sft(tmp_path, tiny_checkpoint, data, "template=text")
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 2 and torch.isfinite(torch.tensor(summary["metrics"]["loss"]))
    _, before = load_state(tiny_checkpoint)
    _, after = load_state(out / "model")
    assert any(not torch.equal(before[k].float(), after[k].float()) for k in before)


def test_the_chat_template_stays_the_default(tiny_tokenizer_path):
    tok = Tokenizer(tiny_tokenizer_path)
    dialog = [{"role": "user", "content": "Q: What is 2 plus 3?\nA:"}, {"role": "assistant", "content": " 5."}]
    (default,) = build_examples(tok, [dialog], seq_len=256)
    assert default == build_examples(tok, [dialog], seq_len=256, template="chat")[0]
    assert default.ids == encode_dialog_for_training(tok, dialog)[0]
    assert default.ids != build_examples(tok, [dialog], seq_len=256, template="text")[0].ids
