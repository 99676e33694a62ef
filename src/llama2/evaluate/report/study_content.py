"""The pairwise sections: win/tie/loss per pair of models with CIs, per category and turn count, the
judge's (or raters') position and length bias, a Bradley-Terry ladder from each study's votes, and
agreement figures from human ratings (among raters, and of a judge against them).

Pairwise studies (an LLM judge) and human-ratings imports share one table layout
(`comparisons.summarize`), so both read the same way here; the ladder is refitted from each folder's
`votes.csv` (`ladder.bradley_terry`, 1,000 bootstrap resamples, seed 0, as `llama2 eval ladder`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama2.errors import DataError
from llama2.evaluate.agreement import agreement_report, read_ratings
from llama2.evaluate.ladder import bradley_terry, read_votes
from llama2.evaluate.pairwise import VOTES_FILE
from llama2.evaluate.ratings import AGREEMENT_FILE, judge_agreement, read_ratings_folder
from llama2.evaluate.report.loading import Study
from llama2.evaluate.report.published import agreement_figures, pairwise_figures
from llama2.evaluate.verdicts import check_scale

LADDER_RESAMPLES = 1000
SCALE_CATEGORIES = {"likert7": [1, 2, 3, 4, 5, 6, 7], "wtl": [1, 2, 3]}  # as ratings.py writes agreement.csv


def pairwise_section(studies: Sequence[Study]) -> dict[str, Any] | None:
    """Every judged study and human import with at least one compared pair, and the paper's figures."""
    shown = [_study(study) for study in studies if study.summary.get("pairs")]
    if not shown:
        return None
    return {"studies": shown, "published": pairwise_figures()}


def ladder_section(studies: Sequence[Study], notes: list[str]) -> dict[str, Any] | None:
    """One Bradley-Terry ladder per study whose votes.csv holds votes."""
    ladders = []
    for study in studies:
        path = study.folder / VOTES_FILE
        if not study.summary.get("pairs") or not path.is_file():
            continue
        try:
            ladder = bradley_terry(read_votes(path), n_bootstrap=LADDER_RESAMPLES, seed=0)
        except DataError as error:
            notes.append(f"{study.folder}: no ladder ({error})")
            continue
        ladders.append({"source": str(study.folder), "rater": _rater(study), "n_votes": ladder.n_votes,
                        "confidence": ladder.confidence, "n_bootstrap": ladder.n_bootstrap, "base": 1000.0,
                        "ratings": [vars(rating).copy() for rating in ladder.ratings]})
    return {"ladders": ladders} if ladders else None


def agreement_section(human: Sequence[Study], judged: Sequence[Study], notes: list[str]) -> dict[str, Any] | None:
    """Per human-ratings folder: the coefficients among raters (AC1/AC2, alpha, kappas) and, for each
    judged study that rated the same prompts and pairs, the judge against the humans."""
    entries = []
    for study in human:
        scale = check_scale(study.summary.get("scale", "likert7"))
        entry: dict[str, Any] = {"source": str(study.folder), "scale": scale,
                                 "raters": study.summary.get("raters", []), "among_raters": None, "judges": []}
        try:
            report = agreement_report(read_ratings(study.folder / AGREEMENT_FILE), categories=SCALE_CATEGORIES[scale])
            entry["among_raters"] = report.to_dict()
        except DataError as error:
            notes.append(f"{study.folder}: no agreement among raters ({error})")
        _, imported = read_ratings_folder(study.folder)
        for other in judged:
            if not (other.summary.get("judge") and other.summary.get("pairs")):
                continue
            try:
                versus = judge_agreement(imported, scale, other.folder)
            except DataError as error:
                notes.append(f"judge of {other.folder} vs the ratings in {study.folder}: not compared ({error})")
                continue
            entry["judges"].append({"judge": other.summary["judge"]["spec"], "source": str(other.folder),
                                    **versus.to_dict()})
        if entry["among_raters"] is not None or entry["judges"]:
            entries.append(entry)
    return {"entries": entries, "published": agreement_figures()} if entries else None


def _study(study: Study) -> dict[str, Any]:
    s = study.summary
    return {"source": str(study.folder), "kind": study.kind, "rater": _rater(study), "scale": _scale(study),
            "models": s.get("models", []), "pairs": [_pair(pair) for pair in s["pairs"]],
            "bias": _bias(s.get("bias") or {})}


def _rater(study: Study) -> str:
    if study.kind == "human":
        raters = study.summary.get("raters", [])
        return f"{len(raters)} human rater{'s' if len(raters) != 1 else ''}"
    return f"judge {study.summary['judge']['spec']}" if study.summary.get("judge") else "no judge"


def _scale(study: Study) -> str | None:
    if study.kind == "human":
        return study.summary.get("scale")
    return (study.summary.get("judge") or {}).get("scale")


def _pair(pair: dict[str, Any]) -> dict[str, Any]:
    return {"model_a": pair["model_a"], "model_b": pair["model_b"], **_result(pair), **_bias(pair),
            "by_category": [{"name": name, **_result(group)} for name, group in pair.get("by_category", {}).items()],
            "by_turns": [{"name": name, **_result(group)} for name, group in pair.get("by_turns", {}).items()]}


def _result(table: dict[str, Any]) -> dict[str, Any]:
    """Counts and the win/tie/loss rates of model_a (None each when no comparison was usable)."""
    rates = table.get("result")
    return {"comparisons": table.get("comparisons"), "usable": table.get("usable"), "unusable": table.get("unusable"),
            "win_rate_excluding_ties": table.get("win_rate_excluding_ties"), **_rates(rates)}


def _bias(table: dict[str, Any]) -> dict[str, Any]:
    position = table.get("position") or {}
    length = table.get("length") or {}
    return {"verdicts": table.get("verdicts"), "unparsed_verdicts": table.get("unparsed_verdicts"),
            "first_shown": _rates(position.get("first_shown")) if position.get("first_shown") else None,
            "disagreement": position.get("disagreement"),
            "longer": _rates(length.get("longer")) if length.get("longer") else None,
            "n_equal_length": length.get("n_equal_length")}


def _rates(rates: dict[str, Any] | None) -> dict[str, Any]:
    if not rates:
        return {"win": None, "tie": None, "loss": None, "n": 0}
    return {outcome: {k: rates[outcome][k] for k in ("estimate", "low", "high")} for outcome in ("win", "tie", "loss")} \
        | {"n": rates["n"]}
