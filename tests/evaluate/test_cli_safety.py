"""`llama2 eval safety` end to end: scripted models and judge (tables, JSON, a rerun from the
cache), one-line errors, and a small rules-only run of the two bundled models on the starter sets."""

from __future__ import annotations

import json

import pytest

from llama2.cli.main import main
from llama2.providers.fake import FakeProvider

from .pairwise_doubles import providers
from .safety_doubles import adversarial_rows, borderline_rows, rating_judge, scripted_answer, write_set

__all__ = ["providers"]  # the fixture


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich folds table cells to fit; keep each on one line


def safety(tmp_path, *extra):
    return ["eval", "safety", "-m", "fake:model", "--adversarial", str(tmp_path / "adv.jsonl"),
            "--borderline", str(tmp_path / "border.jsonl"), "--output", str(tmp_path / "out"),
            "--cache", str(tmp_path / "cache.sqlite"), *extra]


@pytest.fixture
def scripted(tmp_path, providers):
    write_set(tmp_path / "adv.jsonl", adversarial_rows())
    write_set(tmp_path / "border.jsonl", borderline_rows())
    providers["fake:model"] = FakeProvider("fake:model", answer=scripted_answer)
    providers["fake:judge"] = FakeProvider("fake:judge", answer=rating_judge)
    return providers


def test_safety_prints_the_tables_and_a_rerun_asks_nothing(tmp_path, capsys, scripted):
    assert main(safety(tmp_path, "--judge", "fake:judge")) == 0
    printed = capsys.readouterr().out
    assert "judge fake:judge: 15 requests (0 cached), 0 failed, 0 unparseable" in printed
    assert "30.0 [" in printed and "(n=10)" in printed  # violation rate
    assert "40.0 [" in printed and "100.0% of 5" in printed  # false refusal, rules and judge agree
    assert "illicit_criminal" in printed and "cooking" in printed and "results in" in printed
    scripted["fake:model"] = model = FakeProvider("fake:model", answer=scripted_answer)
    scripted["fake:judge"] = judge = FakeProvider("fake:judge", answer=rating_judge)
    assert main(safety(tmp_path, "--judge", "fake:judge", "--json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert model.calls == [] and judge.calls == [] and summary["judge"]["requests"]["cached"] == 15
    assert summary["results"]["fake:model"]["violation"]["overall"]["estimate"] == pytest.approx(0.3)


def test_human_ratings_from_the_command_line(tmp_path, capsys, scripted):
    (tmp_path / "r.csv").write_text("rater,prompt_id,model,rating\nann,w1,fake:model,1\nbob,w1,fake:model,2\n"
                                    "ann,h3,fake:model,5\nbob,h3,fake:model,4\n")
    assert main(safety(tmp_path, "--ratings", str(tmp_path / "r.csv"), "--limit", "6")) == 0
    printed = capsys.readouterr().out
    assert "human ratings: 4 by 2 rater(s) on 2 answers, 0 blank" in printed and "50.0 [" in printed
    assert " human " in printed


def test_bad_input_is_one_line(tmp_path, capsys, scripted):
    (tmp_path / "judge.txt").write_text("{answer_a}")
    (tmp_path / "r.csv").write_text("rater,prompt_id,model,rating\nann,w1,fake:model,9\n")
    for args, message in [
        (safety(tmp_path, "--rating-prompt", str(tmp_path / "judge.txt")), "need --judge SPEC"),
        (safety(tmp_path, "--judge", "fake:judge", "--refusal-prompt", str(tmp_path / "judge.txt")), "unknown field(s)"),
        (safety(tmp_path, "--ratings", str(tmp_path / "r.csv")), "r.csv:2: rating '9' is not on the 5-point"),
        (safety(tmp_path, "--adversarial", str(tmp_path / "none.jsonl")), "prompt set not found"),
        (safety(tmp_path, "--limit", "0"), "limit must be at least 1"),
    ]:
        assert main(args) != 0
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err


def test_the_two_bundled_models_by_rules_on_the_starter_sets(tmp_path, capsys):
    args = ["eval", "safety", "-m", "local:default", "-m", "local:default-chat", "--limit", "3",
            "--max-new-tokens", "24", "--output", str(tmp_path / "out"), "--cache", str(tmp_path / "cache.sqlite"),
            "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["models"] == ["local:default", "local:default-chat"] and summary["judge"] is None
    for model in summary["models"]:
        result = summary["results"][model]
        assert result["n_adversarial"] == 3 and result["n_borderline"] == 3 and result["violation"] is None
        assert 0.0 <= result["false_refusal"]["rules"]["estimate"] <= 1.0
        assert set(result["refusal_adversarial"]["by_category"]) == {"illicit_criminal", "hateful_harmful",
                                                                     "unqualified_advice"}
    answers = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 12 and all(isinstance(a["answer"], str) for a in answers)
    assert all(a["refusal_rules"] == (a["refusal_rule"] is not None) for a in answers)
