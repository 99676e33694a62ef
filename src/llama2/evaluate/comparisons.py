"""The tables of a pairwise study, the same for an LLM judge and for human raters.

Input: `Comparison`s — one prompt, one pair of models (model_a, model_b in the study's order), the
verdicts given on it (a judge's two orders, or each rater's one) and their combined `outcome` from
model_a's side. Output, per pair of models (and over all pairs for the biases):

- `result`: win/tie/loss rates of model_a with percentile-bootstrap CIs over prompts
  (`stats.win_tie_loss`), and `win_rate_excluding_ties` = win / (win + loss), the form of the paper's
  GPT-4 figure (LLAMA2.md §7.2); comparisons without a usable outcome are counted, not included;
- `position`: `first_shown`, the win/tie/loss rates of whichever answer was shown first, over every
  parsed verdict (0.5 wins vs 0.5 losses among decisive verdicts is an unbiased judge), and
  `disagreement`, how often the verdicts on one comparison disagree (for a judge: the two orders);
- `length`: `longer`, the win/tie/loss rates of the longer answer (in words) over comparisons with a
  usable outcome and answers of different lengths (`n_equal_length` left out); absent when the
  answers' lengths are unknown;
- the same per category and per single-/multi-turn prompt (`by_category`, `by_turns`).

`combine_swapped` (judge: both orders must agree, else tie) and `combine_majority` (raters: strict
majority, else tie) turn verdicts into one outcome.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llama2.evaluate.ladder import Vote
from llama2.evaluate.stats import win_tie_loss
from llama2.evaluate.verdicts import Outcome, flip

NO_CATEGORY = "(none)"
VOTES_HEADER = ("model_a", "model_b", "winner")


@dataclass(frozen=True)
class ShownVerdict:
    """One verdict: which model was shown first, and the outcome from the first-shown side (None:
    unparseable or failed)."""

    first: str
    outcome: Outcome | None


@dataclass(frozen=True)
class Comparison:
    """One prompt judged for one pair of models; `outcome` from model_a's side, None when no verdict
    was usable; `words_a`/`words_b` the answers' lengths where known."""

    prompt_id: str
    category: str | None
    turns: int
    model_a: str
    model_b: str
    verdicts: tuple[ShownVerdict, ...]
    outcome: Outcome | None
    words_a: int | None = None
    words_b: int | None = None

    def oriented(self) -> list[Outcome]:
        """Each parsed verdict's outcome from model_a's side."""
        return [v.outcome if v.first == self.model_a else flip(v.outcome) for v in self.verdicts if v.outcome is not None]


def combine_swapped(outcomes: Sequence[Outcome | None]) -> Outcome | None:
    """A judge's verdicts in both orders (from model_a's side) -> one outcome: the common verdict if
    they agree, a tie if they disagree (MT-Bench's rule), None if any is missing or unparseable."""
    if not outcomes or any(outcome is None for outcome in outcomes):
        return None
    return outcomes[0] if len(set(outcomes)) == 1 else "tie"


def combine_majority(outcomes: Sequence[Outcome | None]) -> Outcome | None:
    """Raters' outcomes (from model_a's side) -> the one more than half of them gave, else a tie;
    None when no rater gave a usable one."""
    usable = [outcome for outcome in outcomes if outcome is not None]
    if not usable:
        return None
    for outcome in set(usable):
        if usable.count(outcome) * 2 > len(usable):
            return outcome
    return "tie"


def summarize(comparisons: Sequence[Comparison], models: Sequence[str], *, seed: int = 0) -> dict[str, Any]:
    """`{"pairs": [...], "bias": {...}}`: per pair of `models` (in that order) its tables, and the
    position and length biases over all pairs."""
    pairs = []
    for i, first in enumerate(models):
        for second in models[i + 1:]:
            members = [c for c in comparisons if (c.model_a, c.model_b) == (first, second)]
            if members:
                pairs.append({"model_a": first, "model_b": second, **_pair_tables(members, seed)})
    return {"pairs": pairs, "bias": _biases(comparisons, seed)}


def votes_csv(comparisons: Sequence[Comparison]) -> str:
    """`model_a,model_b,winner` (a|b|tie) for each comparison with a usable outcome: what the
    Bradley-Terry ladder (`llama2 eval ladder`) reads."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(VOTES_HEADER)
    for vote in votes(comparisons):
        writer.writerow([vote.model_a, vote.model_b, vote.winner])
    return buffer.getvalue()


def votes(comparisons: Sequence[Comparison]) -> list[Vote]:
    """One ladder vote per comparison with a usable outcome."""
    return [Vote(c.model_a, c.model_b, {"win": "a", "tie": "tie", "loss": "b"}[c.outcome])
            for c in comparisons if c.outcome is not None]


def _pair_tables(members: Sequence[Comparison], seed: int) -> dict[str, Any]:
    return {
        **_result(members, seed),
        **_biases(members, seed),
        "by_category": _split(members, lambda c: c.category or NO_CATEGORY, seed),
        "by_turns": _split(members, lambda c: "single-turn" if c.turns == 1 else "multi-turn", seed),
    }


def _split(members: Sequence[Comparison], key: Callable[[Comparison], str], seed: int) -> dict[str, Any]:
    groups: dict[str, list[Comparison]] = {}
    for c in members:
        groups.setdefault(key(c), []).append(c)
    return {name: {**_result(group, seed), **_biases(group, seed)} for name, group in sorted(groups.items())}


def _result(members: Sequence[Comparison], seed: int) -> dict[str, Any]:
    outcomes = [c.outcome for c in members if c.outcome is not None]
    wins, losses = outcomes.count("win"), outcomes.count("loss")
    return {
        "comparisons": len(members),
        "usable": len(outcomes),
        "unusable": len(members) - len(outcomes),
        "result": _rates(outcomes, seed),
        "win_rate_excluding_ties": wins / (wins + losses) if wins + losses else None,
    }


def _biases(members: Sequence[Comparison], seed: int) -> dict[str, Any]:
    verdicts = [v for c in members for v in c.verdicts]
    first_shown = [v.outcome for v in verdicts if v.outcome is not None]
    several = [c.oriented() for c in members if len(c.oriented()) >= 2]
    disagree = sum(len(set(outcomes)) > 1 for outcomes in several)
    return {
        "verdicts": len(verdicts),
        "unparsed_verdicts": len(verdicts) - len(first_shown),
        "position": {"first_shown": _rates(first_shown, seed),
                     "disagreement": {"n": len(several), "disagree": disagree,
                                      "rate": disagree / len(several) if several else None}},
        "length": _length(members, seed),
    }


def _length(members: Sequence[Comparison], seed: int) -> dict[str, Any] | None:
    known = [c for c in members if c.words_a is not None and c.words_b is not None and c.outcome is not None]
    if not known:
        return None
    longer = [c.outcome if c.words_a > c.words_b else flip(c.outcome)  # type: ignore[operator,arg-type]
              for c in known if c.words_a != c.words_b]
    return {"longer": _rates(longer, seed), "n_equal_length": len(known) - len(longer)}


def _rates(outcomes: Sequence[Outcome], seed: int) -> dict[str, Any] | None:
    return win_tie_loss(outcomes, seed=seed).to_dict() if outcomes else None
