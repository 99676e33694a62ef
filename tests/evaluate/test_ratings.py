"""Human ratings: blinded export with a recorded random A/B order, import that unblinds through the
key, the same tables as a judge's, the long file for agreement, and judge-vs-human agreement."""

from __future__ import annotations

import asyncio
import csv
import json

import pytest

from llama2.errors import DataError
from llama2.evaluate.agreement import read_ratings
from llama2.evaluate.judge import load_template
from llama2.evaluate.ladder import read_votes
from llama2.evaluate.pairwise import PairwiseConfig, run_pairwise
from llama2.evaluate.prompts import load_prompts
from llama2.evaluate.ratings import (export_tasks, import_ratings, judge_agreement, read_ratings_folder,
                                     summarize_ratings, write_ratings)
from llama2.providers.fake import FakeProvider

from .pairwise_doubles import ANSWERS, prefers_longer, providers, write_prompt_set

__all__ = ["providers"]  # the fixture


@pytest.fixture
def study(tmp_path, providers):
    """A judged study of fake:short vs fake:long vs fake:mid on five prompts (the judge prefers longer answers)."""
    providers["fake:judge"] = FakeProvider("fake:judge", answer=prefers_longer)
    items = load_prompts(write_prompt_set(tmp_path / "prompts.jsonl", 4))
    config = PairwiseConfig(["fake:short", "fake:long", "fake:mid"], "fake:judge", "likert7",
                            load_template(None, "likert7"))
    asyncio.run(run_pairwise(config, items, output=tmp_path / "study", cache_path=tmp_path / "cache.sqlite"))
    return tmp_path / "study"


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_csv(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def annotate(tasks, rater, rule):
    """A copy of the task rows filled in by `rater`, whose rating is `rule(answer_a, answer_b)`."""
    return [{**task, "rater": rater, "rating": rule(task["answer_a"], task["answer_b"])} for task in tasks]


def longer_much_better(a, b):
    return "1" if len(a) > len(b) else "7" if len(b) > len(a) else "4"


def test_export_blinds_and_randomizes_and_import_unblinds(tmp_path, study):
    out = tmp_path / "tasks"
    assert export_tasks(study, out, seed=3) == 3 * 5
    tasks, key = read_csv(out / "tasks.csv"), read_csv(out / "key.csv")
    assert list(tasks[0]) == ["item", "category", "conversation", "answer_a", "answer_b", "rater", "rating"]
    assert not any(model in (out / "tasks.csv").read_text() for model in ANSWERS)  # blinded
    assert {k["swapped"] for k in key} == {"true", "false"}  # both orders drawn
    for task, entry in zip(tasks, key):  # the key says truly who wrote A and B
        assert task["item"] == entry["item"]
        assert (ANSWERS[entry["model_a"]], ANSWERS[entry["model_b"]]) == (task["answer_a"], task["answer_b"])
    assert "7 = B is much better" in (out / "INSTRUCTIONS.md").read_text()
    with pytest.raises(Exception, match="exists"):
        export_tasks(study, out)  # a handed-out key is never overwritten
    assert read_csv(out / "key.csv") == key

    files = [write_csv(tmp_path / f"{r}.csv", annotate(tasks, r, longer_much_better)) for r in ("ann", "bob")]
    imported = import_ratings(files, scale="likert7", key=out / "key.csv")
    summary = summarize_ratings(imported, "likert7")
    assert summary["models"] == ["fake:short", "fake:long", "fake:mid"] and summary["raters"] == ["ann", "bob"]
    pairs = {(p["model_a"], p["model_b"]): p for p in summary["pairs"]}
    assert pairs[("fake:short", "fake:long")]["result"]["loss"]["estimate"] == 1.0
    assert pairs[("fake:long", "fake:mid")]["result"]["win"]["estimate"] == 1.0
    assert pairs[("fake:short", "fake:mid")]["result"]["n"] == 5
    longer = summary["bias"]["length"]["longer"]
    assert longer["win"]["estimate"] == 1.0 and longer["n"] == 15
    assert summary["bias"]["position"]["disagreement"] == {"n": 15, "disagree": 0, "rate": 0.0}


def test_import_folder_votes_and_agreement_file(tmp_path, study):
    export_tasks(study, tmp_path / "tasks", seed=1, fmt="jsonl")
    tasks = [json.loads(line) for line in (tmp_path / "tasks" / "tasks.jsonl").read_text().splitlines()]
    contrarian = annotate(tasks, "cat", lambda a, b: "a" if len(a) < len(b) else "b")
    files = [write_csv(tmp_path / "dan.csv", annotate(tasks, "dan", lambda a, b: "a" if len(a) > len(b) else "b")),
             write_csv(tmp_path / "cat.csv", contrarian),
             write_csv(tmp_path / "eve.csv", annotate(tasks, "eve", lambda a, b: "a" if len(a) > len(b) else "b"))]
    imported = import_ratings(files, scale="wtl", key=tmp_path / "tasks" / "key.jsonl")
    summary = write_ratings(tmp_path / "rated", imported, "wtl")
    pairs = {(p["model_a"], p["model_b"]): p for p in summary["pairs"]}
    assert pairs[("fake:short", "fake:long")]["result"]["loss"]["estimate"] == 1.0  # majority 2 of 3
    assert summary["bias"]["position"]["disagreement"]["rate"] == 1.0  # cat always disagrees

    votes = read_votes(tmp_path / "rated" / "votes.csv")
    assert len(votes) == 15 and {(v.model_a, v.model_b, v.winner) for v in votes if v.model_a == "fake:short"} == \
        {("fake:short", "fake:long", "b"), ("fake:short", "fake:mid", "b")}
    long = read_ratings(tmp_path / "rated" / "agreement.csv")
    assert len(long) == 45 and {r.rater for r in long} == {"dan", "cat", "eve"}
    # oriented to the study's order: fake:short (first) loses every item for dan -> 3 (b)
    key = {json.loads(line)["item"]: json.loads(line) for line in (tmp_path / "tasks" / "key.jsonl").read_text().splitlines()}
    for row in long:
        k = key[row.item]
        first = k["model_b"] if k["swapped"] else k["model_a"]
        second = k["model_a"] if k["swapped"] else k["model_b"]
        expected = 1 if len(ANSWERS[first]) > len(ANSWERS[second]) else 3
        assert int(row.rating) == (expected if row.rater != "cat" else 4 - expected)

    again_summary, again = read_ratings_folder(tmp_path / "rated")
    assert again == imported and again_summary == json.loads(json.dumps(summary))


def test_unblinded_ratings_blank_cells_and_bad_rows(tmp_path):
    path = write_csv(tmp_path / "r.csv", [
        {"rater": "r1", "prompt_id": "q1", "model_a": "X", "model_b": "Y", "rating": "2", "category": "c"},
        {"rater": "r2", "prompt_id": "q1", "model_a": "Y", "model_b": "X", "rating": "6", "category": "c"},
        {"rater": "r1", "prompt_id": "q2", "model_a": "Y", "model_b": "X", "rating": "", "category": "c"},
        {"rater": "r1", "prompt_id": "q3", "model_a": "Y", "model_b": "X", "rating": "4", "category": "d"}])
    imported = import_ratings([path], scale="likert7")
    assert imported.blank == 1 and len(imported.ratings) == 3
    summary = summarize_ratings(imported, "likert7")
    (pair,) = summary["pairs"]
    assert (pair["model_a"], pair["model_b"]) == ("X", "Y")
    assert pair["by_category"]["c"]["result"]["win"]["estimate"] == 1.0  # both raters: X better
    assert pair["by_category"]["d"]["result"]["tie"]["estimate"] == 1.0
    assert pair["length"] is None  # no answers known without a key

    def bad(row, message):
        with pytest.raises(DataError, match=message):
            import_ratings([write_csv(tmp_path / "bad.csv", [row])], scale="likert7")

    base = {"rater": "r", "prompt_id": "q", "model_a": "X", "model_b": "Y", "rating": "3"}
    bad(base | {"rating": "8"}, r"bad.csv:2: rating '8' is not on the 7-point scale")
    bad(base | {"rating": "b"}, r"bad.csv:2: rating 'b' is not on the 7-point")
    bad(base | {"model_b": "X"}, "both 'X'")
    bad(base | {"rater": ""}, "no rater")
    bad({k: v for k, v in base.items() if k != "model_b"}, "needs prompt_id, model_a and model_b")
    with pytest.raises(DataError, match="already rated"):
        import_ratings([write_csv(tmp_path / "twice.csv", [base, base | {"rating": "5"}])], scale="likert7")
    with pytest.raises(DataError, match=r"bad.csv:2: rating 'x' is not a\|b\|tie"):
        import_ratings([write_csv(tmp_path / "bad.csv", [base | {"rating": "x"}])], scale="wtl")
    filled = import_ratings([write_csv(tmp_path / "anon.csv", [base | {"rater": ""}])], scale="likert7", rater="zed")
    assert filled.ratings[0].rater == "zed"


def test_unknown_items_are_reported(tmp_path, study):
    export_tasks(study, tmp_path / "tasks")
    path = write_csv(tmp_path / "r.csv", [{"item": "item-99999", "rater": "r", "rating": "3"}])
    with pytest.raises(DataError, match="r.csv:2: item 'item-99999' is not in the key"):
        import_ratings([path], scale="likert7", key=tmp_path / "tasks" / "key.csv")


def test_judge_against_humans(tmp_path, study):
    export_tasks(study, tmp_path / "tasks", seed=5)
    tasks = read_csv(tmp_path / "tasks" / "tasks.csv")
    agreeing = [write_csv(tmp_path / f"{r}.csv", annotate(tasks, r, longer_much_better)) for r in ("h1", "h2")]
    imported = import_ratings(agreeing, scale="likert7", key=tmp_path / "tasks" / "key.csv")
    result = judge_agreement(imported, "likert7", study).to_dict()
    assert result["majority"]["n_items"] == 15 and result["majority"]["exact"] == 1.0
    assert result["majority"]["cohen_kappa"]["estimate"] == pytest.approx(1.0)
    assert set(result["per_rater"]) == {"h1", "h2"}

    opposite = annotate(tasks, "h3", lambda a, b: longer_much_better(b, a))
    imported = import_ratings([write_csv(tmp_path / "h3.csv", opposite)], scale="likert7",
                              key=tmp_path / "tasks" / "key.csv")
    result = judge_agreement(imported, "likert7", study).to_dict()
    assert result["majority"]["exact"] == 0.0 and result["majority"]["cohen_kappa"]["estimate"] < 0
