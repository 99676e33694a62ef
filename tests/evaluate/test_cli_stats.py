"""`llama2 eval agreement` and `llama2 eval ladder` through the `llama2` entry point: the printed
table, --json equal to the library's figures, and one-line errors for bad files."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from llama2.cli.main import main
from llama2.evaluate.agreement import agreement_report, read_ratings
from llama2.evaluate.ladder import bradley_terry, read_votes


@pytest.fixture
def ratings_csv(tmp_path):
    """40 items on a 7-point scale, three raters who each skip some items."""
    rng = np.random.default_rng(0)
    lines = ["item,rater,rating"]
    for item in range(40):
        truth = rng.integers(1, 8)
        for rater in ("ann", "bob", "cyd"):
            rating = "" if rng.random() < 0.15 else str(int(np.clip(truth + rng.integers(-1, 2), 1, 7)))
            lines.append(f"prompt-{item},{rater},{rating}")
    path = tmp_path / "ratings.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def votes_csv(tmp_path):
    rng = np.random.default_rng(1)
    strength = {"llama-2-70b-chat": 0.5, "gpt-3.5-turbo": 0.4, "falcon-40b-instruct": -0.8, "mpt-7b-chat": -1.0}
    models = list(strength)
    lines = ["model_a,model_b,winner"]
    for _ in range(300):
        a, b = rng.choice(4, size=2, replace=False)
        p, u = 1 / (1 + np.exp(strength[models[b]] - strength[models[a]])), rng.random()
        lines.append(f"{models[a]},{models[b]},{'tie' if abs(u - p) < 0.15 else 'a' if u < p else 'b'}")
    path = tmp_path / "votes.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_agreement_table(ratings_csv, capsys):
    assert main(["eval", "agreement", str(ratings_csv), "--categories", "1,2,3,4,5,6,7"]) == 0
    printed = capsys.readouterr().out
    report = agreement_report(read_ratings(ratings_csv), categories=[str(c) for c in range(1, 8)])
    assert f"40 items, 3 raters, {report.n_ratings} ratings; categories: 1, 2, 3, 4, 5, 6, 7" in printed
    for stat in report.statistics:
        assert f"{stat.estimate:.3f} │ [{stat.interval.low:.3f}, {stat.interval.high:.3f}]" in printed
    for name in ("Gwet's AC1", "Gwet's AC2", "Krippendorff's alpha", "Fleiss' kappa", "ordinal", "quadratic",
                 "interval", "nominal", "bootstrap", "analytic"):
        assert name in printed


def test_agreement_json_equals_the_library(ratings_csv, capsys):
    assert main(["eval", "agreement", str(ratings_csv), "--json", "--seed", "3", "--confidence", "0.9"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = agreement_report(read_ratings(ratings_csv), confidence=0.9, seed=3).to_dict()
    assert printed == expected
    assert {s["confidence"] for s in printed["statistics"]} == {0.9} and printed["raters"] == ["ann", "bob", "cyd"]


def test_ladder_table_and_json(votes_csv, capsys):
    assert main(["eval", "ladder", str(votes_csv), "--bootstrap", "200", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    ladder = bradley_terry(read_votes(votes_csv), n_bootstrap=200, seed=2)
    assert "Bradley-Terry ladder" in printed and "300 votes; mean model = 1000" in printed
    for rank, rating in enumerate(ladder.ratings, start=1):
        assert f"#{rank} {rating.model}" in printed
        row = (rf"{rating.rating:.0f} │ +\[{rating.low:.0f}, {rating.high:.0f}\] │ +{rating.games} │ "
               rf"+{rating.wins}-{rating.ties}-{rating.losses} │")
        assert re.search(row, printed)

    assert main(["eval", "ladder", str(votes_csv), "--json", "--bootstrap", "0", "--anchor", "mpt-7b-chat"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["anchor"] == "mpt-7b-chat" and data["ratings"][-1]["model"] == "mpt-7b-chat"
    assert data["ratings"][-1]["rating"] == pytest.approx(1000) and data["ratings"][0]["low"] is None


@pytest.mark.parametrize(("command", "content", "message"), [
    (["ladder"], "model_a,model_b,winner\nx,y,a\nx,y,maybe\n", r"votes\.csv:3: winner 'maybe' is not one of a, b, tie"),
    (["ladder", "--anchor", "z"], "model_a,model_b,winner\nx,y,a\ny,x,a\n", "anchor 'z' is not among the voted models"),
    (["agreement"], "item,rater,rating\nq1,ann,1\nq2,ann,2\n", r"at least 2 raters; the ratings have one \(ann\)"),
    (["agreement", "--categories", "1,2"], "item,rater,rating\nq1,a,1\nq1,b,3\nq2,a,1\nq2,b,2\n",
     "rating '3' is not one"),
    (["agreement", "--categories", "7"], "item,rater,rating\nq1,a,1\n", "--categories: list at least two ratings"),
])
def test_bad_input_is_one_line_on_stderr(tmp_path, capsys, command, content, message):
    path = tmp_path / ("votes.csv" if command[0] == "ladder" else "ratings.csv")
    path.write_text(content)
    assert main(["eval", command[0], str(path), *command[1:]]) == 1
    error = capsys.readouterr().err
    assert error.startswith("llama2: error: ") and error.count("\n") == 1
    assert re.search(message, error)


def test_labels_without_order_get_nominal_coefficients_and_a_note(tmp_path, capsys):
    path = tmp_path / "labels.jsonl"
    rows = [{"item": i, "rater": r, "rating": label} for i, pair in enumerate(
        [("safe", "safe"), ("unsafe", "safe"), ("unsafe", "unsafe"), ("safe", "safe"), ("refusal", "refusal")])
        for r, label in zip(("x", "y"), pair)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert main(["eval", "agreement", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "Gwet's AC1" in printed and "Cohen's kappa" in printed and "Gwet's AC2" not in printed
    assert "note: ratings are labels without an order" in printed
