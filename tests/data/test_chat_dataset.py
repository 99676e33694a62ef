"""The generated chat dataset of default-chat: reproducible, readable as SFT data, arithmetic that is
right in every step, safety data in every risk category, and a held-out split that shares no prompt
with training."""

from __future__ import annotations

import json
import re

import pytest

from llama2.cli.main import main
from llama2.data.chat_dataset import (
    SPLITS,
    TASKS,
    build_chat_dataset,
    is_refusal,
    passes,
    prompt_of,
    score_replies,
    write_chat_dataset,
)
from llama2.data.chat_safety import BORDERLINE, HARMS, HELDOUT_BORDERLINE, HELDOUT_HARMS, RISK_CATEGORIES
from llama2.data.chat_tasks import add_steps, mul_steps, sub_steps
from llama2.data.sft import read_sft
from llama2.data.sft_examples import build_examples
from llama2.errors import ConfigError, DataError
from llama2.model.checkpoint import bundled_model_path
from llama2.model.tokenizer import Tokenizer

EQUATION = re.compile(r"(\d+(?: [-+×] \d+)+) = (\d+)")


@pytest.fixture(scope="module")
def train():
    return build_chat_dataset(seed=0, split="train")


@pytest.fixture(scope="module")
def heldout():
    return build_chat_dataset(seed=0, split="heldout")


def user_turns(record):
    return [m["content"] for m in record["messages"] if m["role"] == "user"]


def test_same_seed_same_records_other_seed_other_records():
    assert build_chat_dataset(seed=3, count=300) == build_chat_dataset(seed=3, count=300)
    assert build_chat_dataset(seed=3, count=300) != build_chat_dataset(seed=4, count=300)
    assert build_chat_dataset(seed=3, count=60, split="heldout") == build_chat_dataset(seed=3, count=60, split="heldout")


def test_counts_follow_the_task_weights(train, heldout):
    assert len(train) == 8000 and len(heldout) == 400
    for split, records in (("train", train), ("heldout", heldout)):
        tasks = {r["task"] for r in records}
        assert tasks == {t.name for t in TASKS if t.weight(split) > 0}
    assert sum(r["task"] == "harmful" for r in train) == round(0.11 * 8000)
    assert any(r["messages"][0]["role"] == "system" for r in train)
    assert sum(len(user_turns(r)) > 1 for r in train) >= 0.04 * len(train)


def test_every_record_reads_as_sft_data_and_fits_the_bundled_context(tmp_path, train):
    path = tmp_path / "train.jsonl"
    counts = write_chat_dataset(path, seed=0, split="train")
    dialogs = read_sft(path)
    assert len(dialogs) == sum(counts.values()) == len(train)
    tokenizer = Tokenizer(bundled_model_path("default") / "tokenizer.model")
    examples = build_examples(tokenizer, dialogs, seq_len=512, truncate="error")
    assert max(len(e) for e in examples) <= 400  # short answers: the bundled model has 512 positions
    write_chat_dataset(tmp_path / "heldout.jsonl", split="heldout")
    assert len(read_sft(tmp_path / "heldout.jsonl")) == 400


def test_every_equation_in_every_arithmetic_answer_is_true(train, heldout):
    checked = 0
    for record in train + heldout:
        if record["kind"] not in ("arithmetic", "multi_turn"):
            continue
        for message in record["messages"]:
            if message["role"] != "assistant":
                continue
            for left, right in EQUATION.findall(message["content"]):
                assert eval(left.replace("×", "*")) == int(right), (left, right, message["content"])
                checked += 1
        if record["task"] in ("addition", "subtraction", "multiplication"):
            *_, (left, right) = EQUATION.findall(record["messages"][-1]["content"])  # "So a + b = c."
            asked = re.findall(r"\d+", record["messages"][-2]["content"])
            assert sorted(re.findall(r"\d+", left)) == sorted(asked) and right == record["answer"]
    assert checked > 5000


@pytest.mark.parametrize("a", range(0, 1000, 37))
def test_worked_steps_end_in_the_right_result(a):
    for b in range(1, 1000, 53):
        assert add_steps(a, b).endswith(f"= {a + b}.")
        big, small = max(a, b), min(a, b)
        assert sub_steps(big, small).endswith(f"= {big - small}.")
    for k in range(2, 10):
        assert mul_steps(k, a % 100).endswith(f"= {k * (a % 100)}.")


def test_reference_replies_pass_their_own_checks(train, heldout):
    for record in heldout + [r for r in train if "check" in r or r["kind"] in ("harmful", "borderline")]:
        assert passes(record, record["messages"][-1]["content"]), record
    scores = score_replies(heldout, [r["messages"][-1]["content"] for r in heldout])
    assert scores.task_accuracy == scores.refusal_rate == scores.borderline_answer_rate == 1.0
    empty = score_replies(heldout, [""] * len(heldout))
    assert empty.task_accuracy == empty.refusal_rate == empty.borderline_answer_rate == 0.0
    with pytest.raises(DataError, match="one reply per record"):
        score_replies(heldout, [""])


def test_checks_reject_wrong_answers(heldout):
    by_task = {r["task"]: r for r in heldout if "check" in r}
    assert not passes(by_task["addition"], f"The answer is {int(by_task['addition']['answer']) + 1}.")
    item = by_task["list_item"]
    assert not passes(item, "The item is " + ", ".join([item["answer"], *item["reject"]]))
    assert not passes(by_task["reverse_word"], "I don't know.")
    assert passes(by_task["compare_numbers"], by_task["compare_numbers"]["messages"][-1]["content"])


def test_safety_data_covers_every_risk_category_in_both_splits(train, heldout):
    for records in (train, heldout):
        assert {r["category"] for r in records if r["kind"] == "harmful"} == set(RISK_CATEGORIES)
    for harms in (HARMS, HELDOUT_HARMS):
        assert {h.category for h in harms} == set(RISK_CATEGORIES)


def test_refusals_are_detected_and_borderline_answers_are_not():
    assert is_refusal("I'm sorry, but I can’t help with that.") and is_refusal("I cannot do that.")
    assert not is_refusal("Press Ctrl+C, or run kill PID.")
    for _, answer in BORDERLINE + HELDOUT_BORDERLINE:
        assert not is_refusal(answer), answer


def test_heldout_prompts_never_appear_in_training(train, heldout):
    seen = {turn for record in train for turn in user_turns(record)}
    assert not seen & {turn for record in heldout for turn in user_turns(record)}
    training_text = "\n".join(seen)
    for harm in HELDOUT_HARMS:
        assert harm.request not in training_text
    for request, _ in HELDOUT_BORDERLINE:
        assert request not in training_text
    assert len({turn for r in heldout for turn in user_turns(r)}) == len(heldout)  # distinct


def test_prompt_of_drops_the_reference_answer(heldout):
    record = heldout[0]
    assert prompt_of(record) == record["messages"][:-1] and prompt_of(record)[-1]["role"] == "user"


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="unknown split"):
        build_chat_dataset(split="test")
    with pytest.raises(ConfigError, match="at least 1"):
        build_chat_dataset(count=0)
    with pytest.raises(DataError, match="distinct prompts"):
        build_chat_dataset(count=2000, split="heldout")
    assert SPLITS == ("train", "heldout")


def test_cli_build_chat_writes_jsonl_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "chat.jsonl"
    assert main(["data", "build-chat", str(out), "--count", "50", "--seed", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["records"] == 50 == sum(report["tasks"].values())
    lines = out.read_text().splitlines()
    assert [json.loads(line) for line in lines] == build_chat_dataset(seed=2, count=50)
    assert main(["data", "build-chat", str(out), "--count", "50"]) == 1
    assert "exists" in capsys.readouterr().err
    assert main(["data", "build-chat", str(out), "--split", "heldout", "--count", "30", "--overwrite"]) == 0
    assert len(out.read_text().splitlines()) == 30
