"""`llama2 eval pairwise` and `llama2 eval ratings` end to end: scripted models and judge, a rerun
from the cache, the ratings round trip through files, one-line errors, and a small study with the
two bundled models judged by the bundled chat model."""

from __future__ import annotations

import csv
import json

import pytest

from llama2.cli.main import main
from llama2.providers.fake import FakeProvider

from .pairwise_doubles import prefers_longer, providers, write_prompt_set

__all__ = ["providers"]  # the fixture


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich folds table cells to fit; keep each on one line


def pairwise(tmp_path, *extra):
    return ["eval", "pairwise", "-m", "fake:short", "-m", "fake:long", "--prompts", str(tmp_path / "prompts.jsonl"),
            "--output", str(tmp_path / "study"), "--cache", str(tmp_path / "cache.sqlite"), *extra]


def test_pairwise_prints_the_tables_and_a_rerun_asks_nothing(tmp_path, capsys, providers):
    write_prompt_set(tmp_path / "prompts.jsonl", 4)
    providers["fake:judge"] = judge = FakeProvider("fake:judge", answer=prefers_longer)
    assert main(pairwise(tmp_path, "--judge", "fake:judge")) == 0
    printed = capsys.readouterr().out
    assert "fake:short: 5 answers (0 failed)" in printed and "0/5 cached" in printed
    assert "[0.0, 0.0]" in printed and "[100.0, 100.0]" in printed  # short loses every time
    assert "first shown wins" in printed and "longer wins" in printed and "alpha" in printed and "multi-turn" in printed
    assert sorted(p.name for p in (tmp_path / "study").iterdir()) == \
        ["answers.jsonl", "judgments.jsonl", "prompts.jsonl", "summary.json", "votes.csv"]
    assert len(judge.calls) == 10

    providers["fake:judge"] = judge = FakeProvider("fake:judge", answer=prefers_longer)
    assert main(pairwise(tmp_path, "--judge", "fake:judge", "--mode", "likert7", "--json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert judge.calls == [] and summary["judge"]["requests"]["cached"] == 10
    assert summary["pairs"][0]["result"]["loss"]["estimate"] == 1.0


def test_ratings_export_import_summary(tmp_path, capsys, providers):
    write_prompt_set(tmp_path / "prompts.jsonl", 4)
    providers["fake:judge"] = FakeProvider("fake:judge", answer=prefers_longer)
    assert main(pairwise(tmp_path, "--judge", "fake:judge", "-m", "fake:mid")) == 0
    assert main(["eval", "ratings", "export", str(tmp_path / "study"), "-o", str(tmp_path / "tasks"), "--seed", "2"]) == 0
    assert "15 rating tasks" in capsys.readouterr().out
    with open(tmp_path / "tasks" / "tasks.csv", newline="") as handle:
        tasks = list(csv.DictReader(handle))
    for rater in ("ann", "bob"):
        with open(tmp_path / f"{rater}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(tasks[0]))
            writer.writeheader()
            writer.writerows({**t, "rater": rater, "rating": "2" if len(t["answer_a"]) > len(t["answer_b"]) else "6"}
                             for t in tasks)
    assert main(["eval", "ratings", "import", str(tmp_path / "ann.csv"), str(tmp_path / "bob.csv"),
                 "--key", str(tmp_path / "tasks" / "key.csv"), "-o", str(tmp_path / "rated")]) == 0
    printed = capsys.readouterr().out
    assert "30 ratings (likert7) by 2 rater(s) on 15 items" in printed and "[100.0, 100.0]" in printed
    assert main(["eval", "ratings", "summary", str(tmp_path / "rated"), "--judge", str(tmp_path / "study")]) == 0
    printed = capsys.readouterr().out
    assert "judge vs humans' majority on win/tie/loss (15 items" in printed and "exact 100.0%" in printed
    assert "vs ann (15 items)" in printed
    assert main(["eval", "ratings", "summary", str(tmp_path / "rated"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "human"


def test_bad_input_is_one_line(tmp_path, capsys, providers):
    write_prompt_set(tmp_path / "prompts.jsonl", 2)
    (tmp_path / "judge.txt").write_text("{answer_a} only")
    for args, message in [
        (pairwise(tmp_path, "--judge", "fake:judge", "--judge-prompt", str(tmp_path / "judge.txt")), "never shows {answer_b}"),
        (pairwise(tmp_path, "--judge-prompt", str(tmp_path / "judge.txt")), "--judge-prompt needs --judge"),
        (["eval", "pairwise", "-m", "fake:short", "-m", "fake:long", "--prompts", str(tmp_path / "none.jsonl")],
         "prompt set not found"),
        (["eval", "ratings", "summary", str(tmp_path)], "not a ratings folder"),
        (["eval", "ratings", "export", str(tmp_path), "-o", str(tmp_path / "t")], "not a pairwise study folder"),
    ]:
        assert main(args) != 0
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err


def test_two_bundled_models_judged_by_the_bundled_chat_model(tmp_path, capsys):
    out = tmp_path / "study"
    args = ["eval", "pairwise", "-m", "local:default", "-m", "local:default-chat", "--judge", "local:default-chat",
            "--limit", "3", "--max-new-tokens", "12", "--judge-max-new-tokens", "12", "--output", str(out),
            "--cache", str(tmp_path / "cache.sqlite"), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["judge"]["requests"]["unique"] <= 6 and summary["judge"]["failed"] == 0
    assert all(summary["answers"][model]["answered"] == 3 for model in ("local:default", "local:default-chat"))
    (pair,) = summary["pairs"]
    assert pair["verdicts"] == 6 and pair["usable"] + pair["unusable"] == 3
    judgments = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(judgments) == 6 and all(isinstance(j["raw"], str) for j in judgments)
    assert sum(j["label"] is None for j in judgments) == pair["unparsed_verdicts"]
    assert main(args) == 0  # again: everything from the cache
    assert json.loads(capsys.readouterr().out)["judge"]["requests"]["sent"] == 0
