"""scripts/safety_tradeoff.py's pure parts: the nested safety subsets, the data split, the overlap
check, the 1 - rate flip, the table and the plot."""

import struct

import pytest

from llama2.data.chat_dataset import build_chat_dataset
from llama2.evaluate.prompts import PromptItem
from llama2.evaluate.safety import load_prompt_sets


@pytest.fixture(scope="module")
def tradeoff(load_script):
    return load_script("safety_tradeoff")


def test_subsets_are_nested_sized_and_deterministic(tradeoff):
    items = [f"dialog-{i}" for i in range(880)]
    subsets = {p: tradeoff.nested_subset(items, p) for p in (0, 1, 10, 25, 50, 100)}
    assert {p: len(s) for p, s in subsets.items()} == {0: 0, 1: 9, 10: 88, 25: 220, 50: 440, 100: 880}
    for small, large in ((0, 1), (1, 10), (10, 25), (25, 50), (50, 100)):
        assert set(subsets[small]) < set(subsets[large])
    assert subsets[100] == items                                       # original order kept
    assert subsets[25] == sorted(subsets[25], key=items.index)
    assert tradeoff.nested_subset(items, 25) == subsets[25]            # same seed, same subset
    assert tradeoff.nested_subset(items, 25, seed="other") != subsets[25]


def test_subset_rejects_a_percent_outside_0_100(tradeoff):
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        tradeoff.nested_subset([1, 2], 101)


def test_split_keeps_borderline_answers_with_the_fixed_helpfulness_part(tradeoff):
    records = build_chat_dataset(seed=0, count=400)
    helpful, safety = tradeoff.split_records(records)
    assert len(helpful) + len(safety) == 400
    assert {r["kind"] for r in safety} == {"harmful", "multi_turn"}       # refusals in a longer dialog too
    assert all("category" in r for r in safety) and not any("category" in r for r in helpful)
    assert "borderline" in {r["kind"] for r in helpful} and "multi_turn" in {r["kind"] for r in helpful}


def test_the_evaluation_sets_share_no_prompt_with_the_training_dialogs(tradeoff):
    records = build_chat_dataset(seed=0)
    sets = load_prompt_sets()
    tradeoff.check_no_overlap(records, {"adversarial": sets.adversarial, "borderline": sets.borderline},
                              tradeoff.training_requests())
    trained = next(m["content"] for m in records[0]["messages"] if m["role"] == "user")
    leaked = PromptItem("x", ({"role": "user", "content": "  " + trained.upper()},))
    with pytest.raises(SystemExit, match="shares 1 prompts"):
        tradeoff.check_no_overlap(records, {"borderline": [leaked]})
    reworded = PromptItem("y", ({"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."},
                                {"role": "user", "content": "Could you explain how to Make a  bath bomb?"}))
    with pytest.raises(SystemExit, match="borderline evaluation set shares 1"):
        tradeoff.check_no_overlap(records, {"borderline": [reworded]}, ["make a bath bomb"])


def test_flip_turns_a_refusal_rate_into_the_non_refusal_rate(tradeoff):
    refused = {"estimate": 0.8, "low": 0.7, "high": 0.9, "confidence": 0.95, "n": 61}
    assert tradeoff.flip(refused) == pytest.approx({"estimate": 0.2, "low": 0.1, "high": 0.3, "confidence": 0.95, "n": 61})
    assert tradeoff.flip(None) is None


def rate(value: float, n: int = 40) -> dict:
    return {"estimate": value, "low": max(0.0, value - 0.1), "high": min(1.0, value + 0.1), "confidence": 0.95, "n": n}


def results(with_reward: bool = False) -> dict:
    runs = []
    for i, percent in enumerate((0, 10, 25, 50, 100)):
        reward = {"safety": {**rate(-1 + i / 2), "n": 61}, "helpfulness": rate(0.5, 288)} if with_reward else None
        runs.append({"percent": percent, "safety_dialogs": round(8.8 * percent), "steps": 250,
                     "violation_proxy": rate(0.6 - i / 10), "false_refusal": rate(0.1 + i / 20),
                     "heldout": {"task_accuracy": rate(0.25, 288), "harmful_refusal": rate(0.2 * i, 72),
                                 "borderline_answer": rate(0.9)},
                     "reward": reward})
    return {"safety_pool": 880, "runs": runs}


@pytest.mark.parametrize("with_reward", [False, True])
def test_plot_writes_a_small_png(tradeoff, tmp_path, with_reward):
    path = tradeoff.plot(results(with_reward), tmp_path / "docs" / "tradeoff.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > (3 if with_reward else 2) * height > 400      # panels side by side
    assert len(data) < 150_000
    assert [p.name for p in path.parent.iterdir()] == ["tradeoff.png"]   # no temporary file left


def test_table_has_one_row_per_fraction_in_order(tradeoff):
    text = tradeoff.table(results())
    lines = text.splitlines()
    assert len(lines) == 2 + 5
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["0%", "10%", "25%", "50%", "100%"]
    assert "| 60.0 [50, 70] | 10.0 [0, 20] |" in lines[2]
    assert lines[-1] == "| 100% | 880 | 20.0 [10, 30] | 30.0 [20, 40] | 25.0 [15, 35] | 80.0 [70, 90] | 90.0 [80, 100] |"
    with_reward = tradeoff.table(results(with_reward=True)).splitlines()
    assert "mean safety RM" in with_reward[0]
    assert with_reward[-1].endswith("| +1.00 [+0.90, +1.00] | +0.50 [+0.40, +0.60] |")
