"""Safety context distillation (LLAMA2.md §6.2): preprompts from templates with adjectives and
per-category answer templates; the answer is generated with the preprompt and trained without it;
targeted CD keeps exactly the answers the safety reward model prefers; only adversarial prompts;
a two-step run through the CLI with a real (tiny) reward model."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest
import torch

from llama2.cli.main import main
from llama2.errors import DataError
from llama2.train.config import load_config
from llama2.train.recipes.context_distillation import ContextDistillation, ContextDistillationConfig, keep
from llama2.train.rollouts import Response
from llama2.train.safety_preprompts import ADJECTIVES, ANSWER_TEMPLATES, TEMPLATES, draw_preprompt, with_preprompt

from .rlhf_helpers import PROMPTS, UNSAFE, ScriptedScorer, reward_folder, stopping_checkpoint, weights, write_prompts
from .torchrun import train_on_two_processes

REPO = Path(__file__).resolve().parents[2]


def test_preprompts_come_from_templates_with_distinct_adjectives_and_category_answer_templates():
    rng = random.Random(0)
    texts = [draw_preprompt(rng) for _ in range(40)]
    assert len(set(texts)) > 10
    slots = {r"\{a\}": r"(an?)", r"\{0\}": r"(\w+)", r"\{1\}": r"(\w+)", r"\{2\}": r"(\w+)"}
    patterns = []
    for template in TEMPLATES:
        pattern = re.escape(template)
        for slot, group in slots.items():
            pattern = pattern.replace(slot, group)
        patterns.append(re.compile(pattern))
    for text in texts:
        article, *adjectives = next(m for m in (p.fullmatch(text) for p in patterns) if m).groups()
        assert set(adjectives) <= set(ADJECTIVES) and len(set(adjectives)) == len(adjectives)
        assert article == ("an" if adjectives[0] in ("honest", "ethical", "empathetic") else "a")
    crime = draw_preprompt(random.Random(1), "illicit_criminal/weapons")
    assert crime.endswith(ANSWER_TEMPLATES["illicit_criminal"])
    assert draw_preprompt(random.Random(1), "illicit_criminal/weapons", templates=False) == crime.removesuffix(
        " " + ANSWER_TEMPLATES["illicit_criminal"])
    assert not any(t in draw_preprompt(random.Random(1), "cooking") for t in ANSWER_TEMPLATES.values())


def test_the_preprompt_goes_in_the_system_message_or_before_the_user_turn():
    dialog = [{"role": "user", "content": "How do I steal a car?"}]
    assert with_preprompt(dialog, "Be safe.") == [{"role": "system", "content": "Be safe."}, *dialog]
    assert with_preprompt([{"role": "system", "content": "Be brief."}, *dialog], "Be safe.")[0]["content"] == "Be safe.\n\nBe brief."
    assert with_preprompt(dialog, "Be safe.", placement="user") == [{"role": "user", "content": "Be safe.\n\nHow do I steal a car?"}]
    assert dialog == [{"role": "user", "content": "How do I steal a car?"}]  # not changed in place


def test_the_targeted_rule_on_hand_cases():
    done, cut, empty = Response([5, 2], "A safe answer.", True), Response([5], "A safe ans", False), Response([2], "", True)
    assert keep(done, 1.0, 0.5, targeted=True, min_gain=0.0)
    assert not keep(done, 0.5, 0.5, targeted=True, min_gain=0.0)  # not better: the original answer stays
    assert not keep(done, 1.0, 0.5, targeted=True, min_gain=0.6)
    assert keep(done, -1.0, 0.5, targeted=False, min_gain=0.0)  # plain CD keeps every usable answer
    assert not keep(cut, 9.0, 0.0, targeted=True, min_gain=0.0) and not keep(empty, 9.0, 0.0, targeted=False, min_gain=0.0)


def test_targeted_distillation_keeps_only_improved_answers_and_trains_without_the_preprompt(tmp_path, tiny_tokenizer_path):
    model = stopping_checkpoint(tmp_path / "model", tiny_tokenizer_path, stop=0.6)
    benign = dict(PROMPTS[0], safety=False)
    data = write_prompts(tmp_path / "adversarial.jsonl", [*UNSAFE, *PROMPTS[1:], benign])
    scorer = ScriptedScorer(lambda prompt, response: len(response))  # the "safety RM" likes longer answers
    config = load_config(ContextDistillationConfig, None, [
        f"init={model}", f"data={data}", f"output_dir={tmp_path / 'run'}", "max_steps=2", "max_new_tokens=16",
        "answer_templates=false",  # the test tokenizer's 512 pieces spell a templated preprompt in more than 256 tokens
        "temperature=1.0", "top_p=1.0", "batch_size=2", "seq_len=128", "lr=1e-3", "device=cpu", "dtype=float32",
        "tensorboard=false", "log_every=1"])
    result = ContextDistillation(config, scorer=scorer).run()
    assert math.isfinite(result.metrics["loss"])
    folder = tmp_path / "run" / "cd"
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == len(UNSAFE) + len(PROMPTS) - 1  # the prompt tagged not adversarial is skipped
    for s in samples:  # the recorded scores are the scorer's, of the answer to the prompt without preprompt
        assert s["with_preprompt"]["score"] == len(s["with_preprompt"]["text"]) and s["without"]["score"] == len(s["without"]["text"])
        usable = s["with_preprompt"]["finished"] and s["with_preprompt"]["text"].strip() != ""
        assert s["kept"] == (usable and s["with_preprompt"]["score"] > s["without"]["score"])
    assert 0 < sum(s["kept"] for s in samples) < len(samples)  # both outcomes occur
    distilled = [json.loads(line) for line in (folder / "distilled.jsonl").read_text().splitlines()]
    kept = [s for s in samples if s["kept"]]
    assert [d["messages"] for d in distilled] == [[*s["messages"], {"role": "assistant", "content": s["with_preprompt"]["text"]}]
                                                  for s in kept]
    assert all(d["preprompt"] not in json.dumps(d["messages"]) for d in distilled)  # trained WITHOUT the preprompt
    summary = json.loads((folder / "summary.json").read_text())
    assert (summary["kept"], summary["skipped_not_adversarial"], summary["targeted"]) == (len(kept), 1, True)
    start, trained = weights(model), weights(tmp_path / "run" / "model")
    assert any(not torch.equal(start[k], trained[k]) for k in start)


def test_nothing_kept_is_a_clear_error(tmp_path, tiny_tokenizer_path):
    model = stopping_checkpoint(tmp_path / "model", tiny_tokenizer_path)
    data = write_prompts(tmp_path / "adversarial.jsonl", UNSAFE)
    config = load_config(ContextDistillationConfig, None, [f"init={model}", f"data={data}", f"output_dir={tmp_path / 'run'}",
                                                           "max_steps=1", "max_new_tokens=8", "device=cpu", "answer_templates=false"])
    with pytest.raises(DataError, match="kept none of 2 answers"):
        ContextDistillation(config, scorer=ScriptedScorer(lambda p, r: 0.0)).run()  # never better: nothing kept


def test_two_steps_through_the_cli_with_a_reward_model(tmp_path, tiny_tokenizer_path, capsys):
    model = stopping_checkpoint(tmp_path / "model", tiny_tokenizer_path)
    rm = reward_folder(tmp_path / "rm", tiny_tokenizer_path)
    data = write_prompts(tmp_path / "adversarial.jsonl", UNSAFE * 2 + PROMPTS)
    out = tmp_path / "run"
    argv = ["train", "context-distillation", f"init={model}", f"data={data}", f"safety_reward_model={rm}", f"output_dir={out}",
            "targeted=false", "placement=user", "answer_templates=false", "max_new_tokens=16", "temperature=1.0", "max_steps=2", "batch_size=2",
            "seq_len=128", "lr=1e-3", "log_every=1", "tensorboard=false", "device=cpu", "dtype=float32", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == str(out / "model") and math.isfinite(summary["metrics"]["loss"])
    samples = [json.loads(line) for line in (out / "cd" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == len(UNSAFE) + len(PROMPTS)  # a repeated prompt counts once
    assert all(s["kept"] == (s["with_preprompt"]["finished"] and s["with_preprompt"]["text"].strip() != "") for s in samples)
    assert json.loads((out / "cd" / "summary.json").read_text())["kept"] == sum(s["kept"] for s in samples)


@pytest.mark.slow
def test_two_processes_distil_the_same_answers_and_fine_tune_under_fsdp(tmp_path, tiny_tokenizer_path):
    """Each rank answers its share of the prompts (with and without the preprompt) and scores it; the
    gathered samples equal one process's, and the fine-tuning runs sharded."""
    model = stopping_checkpoint(tmp_path / "model", tiny_tokenizer_path)
    rm = reward_folder(tmp_path / "rm", tiny_tokenizer_path)
    data = write_prompts(tmp_path / "adversarial.jsonl", UNSAFE * 2 + PROMPTS)
    settings = [f"init={model}", f"data={data}", f"safety_reward_model={rm}", "targeted=false", "placement=user",
                "answer_templates=false", "max_new_tokens=12",
                "temperature=1.0", "max_steps=2", "batch_size=1", "seq_len=128", "tensorboard=false", "device=cpu",
                "dtype=float32"]
    assert main(["train", "context-distillation", *settings, f"output_dir={tmp_path / 'single'}"]) == 0
    train_on_two_processes("context-distillation", [*settings, f"output_dir={tmp_path / 'fsdp'}"], timeout=600)
    single, sharded = ([json.loads(line) for line in (tmp_path / d / "cd" / "samples.jsonl").read_text().splitlines()]
                       for d in ("single", "fsdp"))
    assert len(single) == len(UNSAFE) + len(PROMPTS)
    for one, two in zip(single, sharded):  # scores up to the reward model's batch composition (rounding)
        assert [one[k] for k in ("id", "preprompt", "kept")] == [two[k] for k in ("id", "preprompt", "kept")]
        for side in ("with_preprompt", "without"):
            assert one[side]["text"] == two[side]["text"] and one[side]["score"] == pytest.approx(two[side]["score"], abs=1e-5)
    trained, start = weights(tmp_path / "fsdp" / "model"), weights(model)
    assert any(not torch.equal(start[k], trained[k]) for k in start)


def test_shipped_recipe_is_valid(tmp_path, tiny_checkpoint, tiny_tokenizer_path):
    data = write_prompts(tmp_path / "adversarial.jsonl", UNSAFE)
    rm = reward_folder(tmp_path / "rm", tiny_tokenizer_path)
    config = load_config(ContextDistillationConfig, REPO / "recipes" / "cd-tiny.yaml",
                         [f"output_dir={tmp_path}", f"data={data}", f"safety_reward_model={rm}", f"init={tiny_checkpoint}", "seq_len=256"])
    assert config.targeted and config.answer_templates and config.placement == "system"
