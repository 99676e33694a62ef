"""Pairwise judging through the runner: both orders asked, the swap rule, the Likert mapping, the
bias tables on hand-counted cases, unparseable verdicts counted apart, resume from the cache, and
the study folder's files."""

from __future__ import annotations

import asyncio
import csv
import json

import pytest

from llama2.errors import ConfigError, ProviderError
from llama2.evaluate.comparisons import Comparison, ShownVerdict, combine_majority, combine_swapped, summarize
from llama2.evaluate.judge import load_template
from llama2.evaluate.ladder import read_votes
from llama2.evaluate.pairwise import PairwiseConfig, run_pairwise
from llama2.evaluate.prompts import load_prompts
from llama2.evaluate.stats import win_tie_loss
from llama2.evaluate.verdicts import likert_outcome, parse_verdict
from llama2.providers.fake import FakeProvider

from .pairwise_doubles import (ANSWERS, InterruptingJudge, Killed, always_first, likert_for, muddled_on,
                               prefers_longer, providers, replies, write_prompt_set, wtl_longer)

__all__ = ["providers"]  # the fixture


def study(tmp_path, models, judge="fake:judge", scale="likert7", n=4, **kwargs):
    """Run a study on the written prompt set; returns (summary, output folder)."""
    items = load_prompts(write_prompt_set(tmp_path / "prompts.jsonl", n))
    config = PairwiseConfig(models, judge, scale, load_template(None, scale) if judge else None, **kwargs)
    out = tmp_path / "study"
    summary = asyncio.run(run_pairwise(config, items, output=out, cache_path=tmp_path / "cache.sqlite"))
    return summary, out


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_pair_is_judged_in_both_orders(tmp_path, providers):
    providers["fake:judge"] = judge = FakeProvider("fake:judge", answer=prefers_longer)
    summary, out = study(tmp_path, ["fake:short", "fake:long", "fake:mid"])
    shown = [replies(request) for request in judge.calls]
    assert len(shown) == 3 * 5 * 2  # three pairs, five prompts, two orders
    for x, y in [("fake:short", "fake:long"), ("fake:short", "fake:mid"), ("fake:long", "fake:mid")]:
        assert shown.count((ANSWERS[x], ANSWERS[y])) == 5 and shown.count((ANSWERS[y], ANSWERS[x])) == 5
    assert [(p["model_a"], p["model_b"]) for p in summary["pairs"]] == \
        [("fake:short", "fake:long"), ("fake:short", "fake:mid"), ("fake:long", "fake:mid")]
    long_vs_mid = summary["pairs"][2]
    assert long_vs_mid["result"]["win"]["estimate"] == 1.0 and long_vs_mid["usable"] == 5
    judgments = rows(out / "judgments.jsonl")
    assert len(judgments) == 30 and {j["order"] for j in judgments} == {"ab", "ba"}
    # the multi-turn prompt's earlier assistant turn is shown to the judge and to the models
    multi = [r for r in judge.calls if "second turn" in r.prompt[-1]["content"]]
    assert multi and all("[Assistant]\nan earlier reply" in r.prompt[-1]["content"] for r in multi)
    assert providers["fake:short"].calls[-1].prompt[-2] == {"role": "assistant", "content": "an earlier reply"}


def test_a_judge_that_always_prefers_the_first_answer_gives_ties_and_shows_its_position_bias(tmp_path, providers):
    providers["fake:judge"] = FakeProvider("fake:judge", answer=always_first)
    summary, _ = study(tmp_path, ["fake:short", "fake:long"])
    (pair,) = summary["pairs"]
    assert pair["result"]["tie"]["estimate"] == 1.0 and pair["result"]["n"] == 5
    assert pair["win_rate_excluding_ties"] is None
    assert pair["position"]["first_shown"]["win"]["estimate"] == 1.0 and pair["position"]["first_shown"]["n"] == 10
    assert pair["position"]["disagreement"] == {"n": 5, "disagree": 5, "rate": 1.0}
    assert pair["length"]["longer"]["tie"]["estimate"] == 1.0


@pytest.mark.parametrize("score, outcome", [(1, "win"), (2, "win"), (3, "win"), (4, "tie"), (5, "loss"), (6, "loss"),
                                            (7, "loss")])
def test_likert_scores_map_to_win_tie_loss_of_the_favourite(tmp_path, providers, score, outcome):
    assert likert_outcome(score) == outcome
    providers["fake:judge"] = FakeProvider("fake:judge", answer=likert_for("fake:long", score))
    summary, out = study(tmp_path, ["fake:long", "fake:short"], n=2)
    (pair,) = summary["pairs"]
    assert pair["result"][outcome]["estimate"] == 1.0
    assert {j["label"] for j in rows(out / "judgments.jsonl")} == {str(score), str(8 - score)}
    # position: a consistent judge's first-shown answer wins exactly as often as it loses
    first = pair["position"]["first_shown"]
    assert first["win"]["estimate"] == first["loss"]["estimate"] and pair["position"]["disagreement"]["disagree"] == 0


def test_wtl_mode_and_the_votes_file_the_ladder_reads(tmp_path, providers):
    providers["fake:judge"] = FakeProvider("fake:judge", answer=wtl_longer)
    summary, out = study(tmp_path, ["fake:short", "fake:long"], scale="wtl")
    assert summary["pairs"][0]["result"]["loss"]["estimate"] == 1.0
    assert {j["label"] for j in rows(out / "judgments.jsonl")} == {"A", "B"}
    votes = read_votes(out / "votes.csv")
    assert [(v.model_a, v.model_b, v.winner) for v in votes] == [("fake:short", "fake:long", "b")] * 5
    assert (out / "votes.csv").read_text().splitlines()[0] == "model_a,model_b,winner"


def test_unparseable_verdicts_are_counted_and_left_out_not_made_ties(tmp_path, providers):
    providers["fake:judge"] = FakeProvider("fake:judge", answer=muddled_on("question number 1?", prefers_longer))
    summary, out = study(tmp_path, ["fake:short", "fake:long"])
    (pair,) = summary["pairs"]
    assert (pair["comparisons"], pair["usable"], pair["unusable"], pair["unparsed_verdicts"]) == (5, 4, 1, 2)
    assert pair["result"]["loss"]["estimate"] == 1.0 and pair["result"]["n"] == 4  # no tie slipped in
    muddled = [j for j in rows(out / "judgments.jsonl") if j["prompt_id"] == "p1"]
    assert [(j["label"], j["outcome"], j["error"], j["raw"]) for j in muddled] == \
        [(None, None, "no verdict found", "I cannot decide.")] * 2
    assert len(list(csv.reader((out / "votes.csv").open()))) == 1 + 4
    assert pair["by_category"]["alpha"]["unusable"] == 1


def test_a_killed_study_resumes_from_the_cache_without_asking_the_judge_again(tmp_path, providers):
    providers["fake:judge"] = InterruptingJudge("fake:judge", prefers_longer, after=4)
    with pytest.raises(Killed):
        study(tmp_path, ["fake:short", "fake:long"], batch_size=1, concurrency=1)
    assert not (tmp_path / "study").exists()  # nothing half-written
    asked_before = len(providers["fake:short"].calls)
    providers["fake:judge"] = judge = FakeProvider("fake:judge", answer=prefers_longer)
    summary, _ = study(tmp_path, ["fake:short", "fake:long"], batch_size=1, concurrency=1)
    assert len(judge.calls) == 10 - 4 and len(providers["fake:short"].calls) == asked_before
    assert summary["judge"]["requests"]["cached"] == 4 and summary["pairs"][0]["usable"] == 5

    providers["fake:judge"] = judge = FakeProvider("fake:judge", answer=prefers_longer)
    again, _ = study(tmp_path, ["fake:short", "fake:long"])
    assert judge.calls == [] and again["pairs"] == summary["pairs"]


def test_judge_calls_run_concurrently(tmp_path, providers):
    class SlowJudge(FakeProvider):
        in_flight = most = 0

        async def generate(self, requests):
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            await asyncio.sleep(0.01)
            self.in_flight -= 1
            return await super().generate(requests)

    providers["fake:judge"] = judge = SlowJudge("fake:judge", answer=prefers_longer)
    study(tmp_path, ["fake:short", "fake:long"], batch_size=1, concurrency=4)
    assert judge.most == 4 and len(judge.calls) == 10


def test_failed_answers_and_judge_requests_are_reported(tmp_path, providers):
    class Flaky(FakeProvider):
        def __init__(self, spec, answer, marker):
            super().__init__(spec, answer=answer)
            self.marker = marker

        async def generate(self, requests):
            if any(self.marker in str(r.prompt) for r in requests):
                raise ProviderError("upstream 503")
            return await super().generate(requests)

    providers["fake:short"] = Flaky("fake:short", lambda r: "ok", "question number 2")
    providers["fake:judge"] = Flaky("fake:judge", prefers_longer, "question number 3")
    summary, out = study(tmp_path, ["fake:short", "fake:long"], batch_size=1)
    assert summary["answers"]["fake:short"]["failed"] == 1 and summary["answers"]["fake:long"]["failed"] == 0
    assert summary["judge"]["skipped_missing_answer"] == 1 and summary["judge"]["failed"] == 1
    failed_answer = [r for r in rows(out / "answers.jsonl") if r["error"]]
    assert [(r["model"], r["prompt_id"], r["answer"]) for r in failed_answer] == [("fake:short", "p2", None)]
    failed_judgments = [j for j in rows(out / "judgments.jsonl") if j["raw"] is None]
    assert [(j["prompt_id"], j["order"]) for j in failed_judgments] == [("p3", "ab"), ("p3", "ba")]
    assert all(j["error"] == "judge request failed: upstream 503" for j in failed_judgments)
    (pair,) = summary["pairs"]
    assert (pair["comparisons"], pair["usable"], pair["unusable"], pair["unparsed_verdicts"]) == (4, 3, 1, 0)


def test_answers_only_without_a_judge(tmp_path, providers):
    summary, out = study(tmp_path, ["fake:short", "fake:long"], judge=None)
    assert summary["judge"] is None and summary["pairs"] == []
    assert len(rows(out / "answers.jsonl")) == 10 and rows(out / "judgments.jsonl") == []
    assert summary["answers"]["fake:long"]["mean_words"] == len(ANSWERS["fake:long"].split())


def test_a_model_named_twice_is_an_error(tmp_path, providers):
    with pytest.raises(ConfigError, match="twice"):
        study(tmp_path, ["fake:short", "fake:short"])
    with pytest.raises(ConfigError, match="at least two"):
        study(tmp_path, ["fake:short"])


def test_bias_tables_on_a_hand_built_case():
    """Four comparisons of X vs Y, counted by hand:
    c1: X first -> X wins; Y first -> X wins  (consistent: X wins; X longer)
    c2: X first -> X wins; Y first -> Y wins  (first shown wins both times: tie; X longer)
    c3: X first -> tie;    Y first -> tie     (tie; equal length)
    c4: X first -> Y wins; Y first -> Y wins  (Y wins; X longer)"""
    def c(v1, v2, outcome, wx, wy):
        return Comparison("p", "cat", 1, "X", "Y", (ShownVerdict("X", v1), ShownVerdict("Y", v2)), outcome, wx, wy)

    comparisons = [c("win", "loss", "win", 9, 3), c("win", "win", "tie", 9, 3), c("tie", "tie", "tie", 5, 5),
                   c("loss", "win", "loss", 9, 3)]
    assert [combine_swapped([x.verdicts[0].outcome, {"win": "loss", "loss": "win", "tie": "tie"}[x.verdicts[1].outcome]])
            for x in comparisons] == ["win", "tie", "tie", "loss"]
    tables = summarize(comparisons, ["X", "Y"])
    (pair,) = tables["pairs"]
    assert pair["result"] == win_tie_loss(["win", "tie", "tie", "loss"]).to_dict()
    assert pair["win_rate_excluding_ties"] == 0.5
    # first shown: c1 win,loss; c2 win,win; c3 tie,tie; c4 loss,win -> 4 wins, 2 ties, 2 losses of 8
    assert pair["position"]["first_shown"] == win_tie_loss(["win", "loss", "win", "win", "tie", "tie", "loss", "win"]).to_dict()
    assert pair["position"]["first_shown"]["win"]["estimate"] == 0.5
    assert pair["position"]["disagreement"] == {"n": 4, "disagree": 1, "rate": 0.25}
    # longer (X in c1, c2, c4): win, tie, loss; c3 has equal lengths
    assert pair["length"] == {"longer": win_tie_loss(["win", "tie", "loss"]).to_dict(), "n_equal_length": 1}
    assert tables["bias"]["position"] == pair["position"]


def test_majority_of_raters():
    assert combine_majority(["win", "win", "tie"]) == "win"
    assert combine_majority(["win", "tie", "loss"]) == "tie"
    assert combine_majority(["win", "loss"]) == "tie"
    assert combine_majority([None, "loss"]) == "loss" and combine_majority([None]) is None


@pytest.mark.parametrize("text, label", [
    ("Reasoning.\nVerdict: [[3]]", "3"), ("**Verdict:** 6", "6"), ("7", "7"), ("Rating: 5/7", "5"),
    ("Verdict: [[2]]\nVerdict: [[2]]", "2"), ("Score: 10", None), ("Rating: 4.5", None),
    ("first [[2]] then [[6]]", None), ("", None)])
def test_likert_verdict_parsing(text, label):
    assert parse_verdict(text, "likert7").label == label


@pytest.mark.parametrize("text, label", [
    ("Verdict: [[A]]", "A"), ("verdict: [[b]]", "B"), ("Verdict: [[tie]]", "tie"), ("[[C]]", "tie"),
    ("Winner: Assistant B", "B"), ("tie", "tie"), ("A is better", None), ("[[A]] or maybe [[B]]", None)])
def test_wtl_verdict_parsing(text, label):
    verdict = parse_verdict(text, "wtl")
    assert verdict.label == label and (verdict.error is None) == (label is not None)


def test_judge_templates_are_checked_before_anything_runs(tmp_path):
    bad = tmp_path / "judge.txt"
    bad.write_text("Compare {answer_a} with {answer_b} about {topic}")
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \{topic\}"):
        load_template(bad, "likert7")
    bad.write_text("Only {answer_a}")
    with pytest.raises(ConfigError, match=r"never shows \{answer_b\}"):
        load_template(bad, "likert7")
    bad.write_text("JSON {\"a\": 1} {answer_a} {answer_b}")
    with pytest.raises(ConfigError, match="literal brace as"):
        load_template(bad, "likert7")
    bad.write_text("a } b {answer_a} {answer_b}")
    with pytest.raises(ConfigError, match="not a valid template.*literal brace as"):
        load_template(bad, "likert7")
    good = tmp_path / "good.txt"
    good.write_text("Q: {question}\nA: {answer_a}\nB: {answer_b}\n{{literal}} Verdict: [[N]]")
    template = load_template(good, "wtl")
    item = load_prompts(write_prompt_set(tmp_path / "p.jsonl", 1, multi_turn=False))[0]
    assert template.render(item, " one ", "two") == "Q: question number 0?\nA: one\nB: two\n{literal} Verdict: [[N]]"
