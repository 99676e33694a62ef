"""Verdicts on two answers shown side by side, as A (first) and B (second): the two scales, how a
judge's free text is read, and how a human's rating cell is read.

Scales (`Scale`):
- `likert7`, the paper's human study (LLAMA2.md §7.1): 1 = A much better, 2 = A better, 3 = A slightly
  better, 4 = about the same, 5 = B slightly better, 6 = B better, 7 = B much better. Mapped to
  win/tie/loss from A's side as 1-3 -> win, 4 -> tie, 5-7 -> loss: every "better", however slight,
  counts, and only "about the same" is a tie. The score itself is kept, so a stricter mapping (say,
  "slightly" as a tie) can be recomputed from the stored judgments.
- `wtl`: A, B or tie directly.

A judge's answer is read by `parse_verdict`. The default templates ask for the verdict in double
brackets on its own line (`Verdict: [[3]]`, `Verdict: [[A]]`), which is what is looked for first;
failing that, a `Verdict:`/`Rating:`/`Score:` label followed by a value, or an answer that is nothing
but the value. Several bracketed verdicts that disagree, or none at all, make the verdict
unparseable: it is recorded with its reason and counted, never turned into a tie.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from llama2.errors import DataError

Scale = Literal["likert7", "wtl"]
SCALES: tuple[Scale, ...] = ("likert7", "wtl")
Outcome = Literal["win", "tie", "loss"]

_LIKERT_VALUE = r"([1-7])(?!\d|\.\d)"  # not 10, not 4.5
_WTL_VALUE = r"(a|b|tie|c)\b"  # "C" is a tie in MT-Bench's [[A]]/[[B]]/[[C]] convention
_PATTERNS = {
    "likert7": (re.compile(r"\[\[\s*" + _LIKERT_VALUE + r"\s*\]\]"),
                re.compile(r"(?:verdict|rating|score)\s*\**\s*[:=]\s*\**\s*\[?\s*" + _LIKERT_VALUE, re.IGNORECASE),
                re.compile(r"\W*" + _LIKERT_VALUE + r"\W*")),
    "wtl": (re.compile(r"\[\[\s*" + _WTL_VALUE + r"\s*\]\]", re.IGNORECASE),
            re.compile(r"(?:verdict|winner)\s*\**\s*[:=]\s*\**\s*\[?\s*(?:(?:assistant|answer|response)\s+)?"
                       + _WTL_VALUE, re.IGNORECASE),
            re.compile(r"\W*" + _WTL_VALUE + r"\W*", re.IGNORECASE)),
}


@dataclass(frozen=True)
class Verdict:
    """One verdict on one shown order. `label` is what was read ("1".."7", or "A"/"B"/"tie"),
    `outcome` the result from the first-shown answer's side, `error` why nothing was read (then
    label and outcome are None)."""

    label: str | None
    outcome: Outcome | None
    error: str | None = None


def check_scale(scale: str) -> Scale:
    if scale not in SCALES:
        raise DataError(f"unknown scale {scale!r}; use one of {', '.join(SCALES)}")
    return scale  # type: ignore[return-value]


def likert_outcome(score: int) -> Outcome:
    """The 7-point score -> win/tie/loss from A's side (see the module docstring)."""
    if not 1 <= score <= 7:
        raise DataError(f"a 7-point rating is 1..7; got {score}")
    return "win" if score < 4 else "tie" if score == 4 else "loss"


def flip(outcome: Outcome) -> Outcome:
    """The same result seen from the other answer's side."""
    return {"win": "loss", "tie": "tie", "loss": "win"}[outcome]  # type: ignore[return-value]


def flip_label(label: str, scale: Scale) -> str:
    """The label a rater would have given with A and B swapped: 8 - score, or A <-> B."""
    if scale == "likert7":
        return str(8 - int(label))
    return {"A": "B", "B": "A", "tie": "tie"}[label]


def verdict_from_label(label: str, scale: Scale) -> Verdict:
    """A verdict from a normalized label ("1".."7", or "A"/"B"/"tie")."""
    if scale == "likert7":
        return Verdict(label, likert_outcome(int(label)))
    return Verdict(label, {"A": "win", "tie": "tie", "B": "loss"}[label])  # type: ignore[arg-type]


def parse_verdict(text: str, scale: Scale) -> Verdict:
    """Read a judge's verdict from its free text (see the module docstring)."""
    bracketed, labelled, bare = _PATTERNS[scale]
    for pattern in (bracketed, labelled):
        labels = {_normalize(match, scale) for match in pattern.findall(text)}
        if len(labels) > 1:
            return Verdict(None, None, f"conflicting verdicts {', '.join(sorted(labels))}")
        if labels:
            return verdict_from_label(labels.pop(), scale)
    whole = bare.fullmatch(text.strip())
    if whole:
        return verdict_from_label(_normalize(whole.group(1), scale), scale)
    return Verdict(None, None, "no verdict found" if text.strip() else "empty answer")


def read_rating(value: object, scale: Scale) -> str:
    """A human's rating cell -> its normalized label; DataError (for the caller to place) when it is
    not a value of `scale`."""
    text = str(value).strip()
    if scale == "likert7":
        try:
            number = float(text)
        except ValueError:
            number = 0.0
        if number.is_integer() and 1 <= number <= 7:
            return str(int(number))
        raise DataError(f"rating {text!r} is not on the 7-point scale; write 1 (A much better) .. 4 (same) .. 7 (B much better)")
    label = _WTL_LABELS.get(text.lower())
    if label is None:
        raise DataError(f"rating {text!r} is not a|b|tie; write a (A better), b (B better) or tie")
    return label


_WTL_LABELS = {"a": "A", "b": "B", "tie": "tie", "c": "tie"}


def _normalize(value: str, scale: Scale) -> str:
    return value if scale == "likert7" else _WTL_LABELS[value.lower()]
