"""`llama2 eval reward`: accuracy by strength (Table 8's layout) and overall, the reliability table
(checked against scikit-learn's `calibration_curve`) and ECE, safety recall, the command's output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from llama2.cli.main import main
from llama2.data.preference import PreferencePair
from llama2.errors import DataError
from llama2.evaluate.reward import reward_report
from llama2.model.checkpoint import read_model_args
from llama2.model.reward import RewardModel, RewardTransformer, initial_reward_state
from llama2.model.tokenizer import Tokenizer

PROMPT = [{"role": "user", "content": "Say yes."}]


def pair(strength: str, category: str | None = None, safe: tuple[bool | None, bool | None] = (None, None)) -> PreferencePair:
    return PreferencePair(PROMPT, "yes", "no", strength, category, *safe)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_accuracy_by_strength_calibration_and_safety_by_hand():
    pairs = [pair("significantly_better", "a", (True, False)), pair("significantly_better", "a"),
             pair("better", "b", (True, True)), pair("better", "b"), pair("slightly_better", "b"),
             pair("slightly_better", "b", (False, False)), pair("negligibly_better", "a")]
    chosen = [3.0, 1.0, 0.5, 0.0, 0.2, -1.0, -2.0]
    rejected = [1.0, 0.0, 0.0, 0.5, 0.2, 0.0, 0.0]  # differences 2, 1, 0.5, -0.5, 0 (a tie), -1, -2
    report = reward_report(pairs, chosen, rejected, bins=5)
    accuracy = {s: a.interval.estimate for s, a in report.by_strength.items()}
    assert accuracy == {"significantly_better": 1.0, "better": 0.5, "slightly_better": 0.25, "negligibly_better": 0.0}
    assert report.average.interval.estimate == pytest.approx(3.5 / 7) and report.average.n == 7
    assert report.average.interval.low <= 3.5 / 7 <= report.average.interval.high
    assert {c: a.n for c, a in report.by_category.items()} == {"a": 3, "b": 4}

    bins = [(b.n, b.confidence, b.accuracy) for b in report.calibration]  # confidence σ(|d|) in 5 bins over [0.5, 1]
    assert bins[0] == (1, 0.5, 0.5)  # the tie
    assert bins[1] == (2, pytest.approx(sigmoid(0.5)), 0.5)
    assert bins[2] == (2, pytest.approx(sigmoid(1.0)), 0.5)
    assert bins[3] == (2, pytest.approx(sigmoid(2.0)), 0.5)
    assert bins[4] == (0, None, None)
    expected_ece = 2 * (abs(0.5 - sigmoid(0.5)) + abs(0.5 - sigmoid(1.0)) + abs(0.5 - sigmoid(2.0))) / 7
    assert report.ece == pytest.approx(expected_ece)

    # Unsafe replies: pair 0's rejected (r=1.0, missed) and both of pair 5 (r=-1.0 caught, r=0.0 missed: σ(0) = 0.5).
    assert (report.unsafe_recall.n, report.unsafe_recall.interval.estimate) == (3, pytest.approx(1 / 3))
    assert (report.safe_pass.n, report.safe_pass.interval.estimate) == (3, 1.0)  # r = 3.0, 0.5 and 0.0
    assert json.loads(json.dumps(report.to_dict()))["accuracy"]["better"]["estimate"] == 0.5


def test_the_reliability_table_matches_scikit_learn():
    calibration = pytest.importorskip("sklearn.calibration", reason="scikit-learn is in the [test] extra")
    rng = np.random.default_rng(0)
    diff = rng.normal(0.8, 1.5, size=500)  # a reward model that is right more often than not
    correct = (diff > 0).astype(float)
    pairs = [pair("better") for _ in diff]
    report = reward_report(pairs, diff, np.zeros_like(diff), bins=10)
    confidence = 1 / (1 + np.exp(-np.abs(diff)))
    # Over [0, 1] in 20 bins, the upper 10 are ours over [0.5, 1]; sklearn lists only the non-empty ones.
    accuracy, mean_confidence = calibration.calibration_curve(correct, confidence, n_bins=20, strategy="uniform")
    ours = [b for b in report.calibration if b.n]
    assert [b.accuracy for b in ours] == pytest.approx(list(accuracy))
    assert [b.confidence for b in ours] == pytest.approx(list(mean_confidence))
    assert sum(b.n for b in ours) == 500


def test_mismatched_lengths_are_refused():
    with pytest.raises(DataError, match="1 pairs, 2 chosen and 1 rejected rewards"):
        reward_report([pair("better")], [1.0, 2.0], [0.0])


@pytest.fixture
def reward_folder(tmp_path, tiny_checkpoint) -> Path:
    args = read_model_args(tiny_checkpoint)
    model = RewardTransformer(args)
    model.load_state_dict(initial_reward_state(tiny_checkpoint, args, generator=torch.Generator().manual_seed(1)))
    return RewardModel(model, Tokenizer(tiny_checkpoint / "tokenizer.model")).save(tmp_path / "rm")


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    strengths = ["significantly_better", "better", "slightly_better", "negligibly_better"]
    records = [{"prompt": f"Say {w} {i}.", "chosen": w, "rejected": "maybe", "strength": strengths[i % 4],
                "chosen_safe": True, "rejected_safe": False} for i in range(8) for w in ("yes", "no")]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_eval_reward_json_matches_the_scores(reward_folder, pairs_file, capsys):
    assert main(["eval", "reward", "--model", str(reward_folder), "--data", str(pairs_file), "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rm = RewardModel.from_pretrained(reward_folder, device="cpu")
    records = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    right = [rm.score(r["prompt"], r["chosen"]) > rm.score(r["prompt"], r["rejected"]) for r in records]
    assert result["n"] == 16 and result["accuracy"]["average"]["estimate"] == pytest.approx(sum(right) / 16)
    assert set(result["accuracy"]) == {"significantly_better", "better", "slightly_better", "negligibly_better", "average"}
    assert len(result["calibration"]["bins"]) == 10 and 0 <= result["calibration"]["ece"] <= 0.5
    assert result["safety"]["unsafe_recall"]["n"] == 16


def test_eval_reward_prints_table_8s_layout(reward_folder, pairs_file, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "140")  # rich folds headers to fit narrower terminals
    assert main(["eval", "reward", "-m", str(reward_folder), "--data", str(pairs_file), "--device", "cpu", "--bins", "4"]) == 0
    out = capsys.readouterr().out
    for text in ("Significantly Better", "Negligibly Better / Unsure", "Avg", "ECE", "recall"):
        assert text in out


def test_eval_reward_names_bad_records(reward_folder, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "chosen": "a"}) + "\n")
    assert main(["eval", "reward", "--model", str(reward_folder), "--data", str(bad)]) == 1
    assert f"{bad}:1: field 'rejected' is missing" in capsys.readouterr().err
