"""Human ratings of pairwise comparisons: rating tasks out to annotators, their ratings back in,
and from them the same tables as from an LLM judge (`comparisons.summarize`).

Export (`export_tasks`): from a pairwise study folder (`pairwise.py`), one task per prompt and pair
of models with both answers, in a seeded random order, each with its A/B order drawn at random (the
paper's protocol, LLAMA2.md §7.1) and no model names:
```
OUT/tasks.csv|jsonl    item, category, conversation, answer_a, answer_b, rater (blank), rating (blank)
OUT/key.csv|jsonl      item, prompt_id, category, turns, model_a, model_b (as shown: A and B), swapped
                       (true when A is the later model in the study's order), words_a, words_b
OUT/INSTRUCTIONS.md    the scale, for annotators
```
Annotators fill `rater` and `rating` (the 7-point scale, 1 = A much better ... 4 = about the same ...
7 = B much better, or a|b|tie) and send their copies back. Keep the key away from them.

Import (`import_ratings`), CSV/TSV or JSONL, one rating per row:
- blinded, with the key: `item`, `rater`, `rating` (other columns, such as the task's texts, ignored);
- unblinded, without a key: `rater`, `prompt_id` (or `prompt`), `model_a`, `model_b` (A and B as the
  rater saw them), `rating`, optional `category` and `turns`; pairs are oriented by the order in
  which model names first appear.
`score` is accepted for `rating`. A blank rating is a skipped task (counted, not an error); a rating
off the scale, an unknown item or a second rating of one item by one rater is a DataError naming the
file and line.

Tables: each rating is a verdict (A's outcome, for position bias); the raters of one item are
combined by strict majority, else a tie (`comparisons.combine_majority`). The import folder:
```
OUT/ratings.jsonl      every rating: rater, item, prompt_id, category, turns, model_a, model_b (as shown),
                       rating (the label), outcome (win/tie/loss of A), swapped, words_a, words_b, source
OUT/summary.json       {"kind": "human", "scale", "models", "raters", "ratings", "blank", "items",
                       "pairs", "bias"} (pairs and bias as in a pairwise study's summary)
OUT/votes.csv          model_a,model_b,winner per item with a usable consensus (for `llama2 eval ladder`)
OUT/agreement.csv      item,rater,rating for `llama2 eval agreement`, every rating turned to the study's
                       order of the pair: 1..7 on the 7-point scale; 1 = a, 2 = tie, 3 = b on a|b|tie
```
Judge against humans (`judge_agreement`): on the three-way outcome (1 = model_a better, 2 = tie,
3 = model_b better) per prompt and pair, Cohen's kappa and Gwet's AC2 (quadratic weights) of the
judge against the humans' majority and each human (`agreement.judge_human_agreement`).
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llama2.atomic import atomic_folder
from llama2.errors import DataError
from llama2.evaluate.agreement import JudgeAgreement, judge_human_agreement
from llama2.evaluate.comparisons import Comparison, ShownVerdict, combine_majority, combine_swapped, summarize, votes_csv
from llama2.evaluate.judge import render_conversation
from llama2.evaluate.pairwise import JUDGMENTS_FILE, PROMPTS_FILE, model_pairs, read_study
from llama2.evaluate.prompts import load_prompts
from llama2.evaluate.records import table_records
from llama2.evaluate.verdicts import Outcome, Scale, check_scale, flip, flip_label, read_rating, verdict_from_label

FORMATS = ("csv", "jsonl")
TASK_COLUMNS = ("item", "category", "conversation", "answer_a", "answer_b", "rater", "rating")
KEY_COLUMNS = ("item", "prompt_id", "category", "turns", "model_a", "model_b", "swapped", "words_a", "words_b")
RATINGS_FILE, SUMMARY_FILE, VOTES_FILE, AGREEMENT_FILE = "ratings.jsonl", "summary.json", "votes.csv", "agreement.csv"
OUTCOME_CODE = {"win": 1, "tie": 2, "loss": 3}  # model_a better, same, model_b better: the 7-point direction
_INSTRUCTIONS = """# Rating instructions

Each task shows a conversation and two replies to its last user message, A and B. Decide which
reply is better: more helpful, while also being safe and honest. The order of A and B is random;
judge what the replies say, not their length.

Write your name or code in `rater` and your verdict in `rating`:

{scale}

Leave `rating` blank to skip a task. Do not change the `item` column.
"""
_SCALE_TEXT = {
    "likert7": "1 = A is much better, 2 = A is better, 3 = A is slightly better, 4 = about the same,\n"
               "5 = B is slightly better, 6 = B is better, 7 = B is much better",
    "wtl": "a = A is better, b = B is better, tie = about the same",
}


@dataclass(frozen=True)
class Rating:
    """One human rating. `model_a`/`model_b` as the rater saw them; `swapped` when A is the later
    model in the study's order; `label` the normalized rating ("1".."7" or "A"/"B"/"tie")."""

    rater: str
    item: str
    prompt_id: str
    category: str | None
    turns: int
    model_a: str
    model_b: str
    swapped: bool
    label: str
    words_a: int | None
    words_b: int | None
    source: str

    @property
    def pair(self) -> tuple[str, str]:
        """The two models in the study's order."""
        return (self.model_b, self.model_a) if self.swapped else (self.model_a, self.model_b)

    def outcome(self, scale: Scale) -> Outcome:
        """Win/tie/loss of the model shown as A."""
        outcome = verdict_from_label(self.label, scale).outcome
        assert outcome is not None
        return outcome

    def study_outcome(self, scale: Scale) -> Outcome:
        """Win/tie/loss of the study's first model of the pair."""
        return flip(self.outcome(scale)) if self.swapped else self.outcome(scale)


@dataclass(frozen=True)
class Imported:
    ratings: list[Rating]
    blank: int


# ---- export ---------------------------------------------------------------------------------


def export_tasks(study: Path, out: Path, *, scale: Scale = "likert7", seed: int = 0, fmt: str = "csv") -> int:
    """Write blinded rating tasks and their key for a study's answers (see the module docstring);
    returns the number of tasks. `out` must not exist: an earlier key is never overwritten."""
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    check_scale(scale)
    summary, answer_rows = read_study(study)
    items = load_prompts(Path(study) / PROMPTS_FILE)
    answers = {(row["model"], row["prompt_id"]): row["answer"] for row in answer_rows if row["answer"] is not None}
    rng = random.Random(seed)
    drawn = [(item, a, b) for a, b in model_pairs(summary["models"]) for item in items
             if (a, item.id) in answers and (b, item.id) in answers]
    rng.shuffle(drawn)
    tasks, key = [], []
    for number, (item, first, second) in enumerate(drawn, 1):
        swapped = rng.random() < 0.5
        model_a, model_b = (second, first) if swapped else (first, second)
        name = f"item-{number:05d}"
        answer_a, answer_b = answers[(model_a, item.id)], answers[(model_b, item.id)]
        tasks.append({"item": name, "category": item.category or "", "conversation": render_conversation(item),
                      "answer_a": answer_a, "answer_b": answer_b, "rater": "", "rating": ""})
        key.append({"item": name, "prompt_id": item.id, "category": item.category or "", "turns": item.turns,
                    "model_a": model_a, "model_b": model_b, "swapped": swapped,
                    "words_a": len(answer_a.split()), "words_b": len(answer_b.split())})
    if not tasks:
        raise DataError(f"{study}: no prompt has answers from two models; nothing to rate")
    with atomic_folder(Path(out)) as tmp:
        _write_table(tmp / f"tasks.{fmt}", TASK_COLUMNS, tasks)
        _write_table(tmp / f"key.{fmt}", KEY_COLUMNS, key)
        (tmp / "INSTRUCTIONS.md").write_text(_INSTRUCTIONS.format(scale=_SCALE_TEXT[scale]), encoding="utf-8")
    return len(tasks)


# ---- import ---------------------------------------------------------------------------------


def import_ratings(paths: Sequence[Path | str], *, scale: Scale, key: Path | str | None = None,
                   rater: str | None = None) -> Imported:
    """Read ratings files (blinded with `key`, or unblinded; see the module docstring). `rater`
    fills rows whose rater cell is empty."""
    check_scale(scale)
    if not paths:
        raise DataError("no ratings files given")
    keys = _read_key(Path(key)) if key is not None else None
    ratings: list[Rating] = []
    seen: dict[tuple[str, str], str] = {}
    order: list[str] = []  # models by first appearance, for unblinded files
    blank = 0
    for path in paths:
        for where, row in table_records(path, ()):
            value = row.get("rating", row.get("score"))
            if value is None and "rating" not in row and "score" not in row:
                raise DataError(f"{where}: no 'rating' (or 'score') column; each row needs rater and rating")
            if value is None or not str(value).strip():
                blank += 1
                continue
            who = str(row.get("rater") or "").strip() or rater
            if not who:
                raise DataError(f"{where}: no rater; fill the 'rater' column or pass --rater NAME")
            try:
                label = read_rating(value, scale)
            except DataError as error:
                raise DataError(f"{where}: {error}") from None
            rating = _keyed(row, keys, where, who, label) if keys is not None else _unblinded(row, where, who, label, order)
            if (who, rating.item) in seen:
                raise DataError(f"{where}: rater {who!r} already rated {rating.item!r} at {seen[(who, rating.item)]}; "
                                "keep one rating per rater and item")
            seen[(who, rating.item)] = where
            ratings.append(rating)
    if not ratings:
        raise DataError(f"no ratings in {', '.join(map(str, paths))} ({blank} blank); fill the 'rating' column")
    return Imported(ratings, blank)


def _read_key(path: Path) -> dict[str, dict[str, Any]]:
    keys = {}
    for where, row in table_records(path, ("item", "prompt_id", "model_a", "model_b", "swapped")):
        swapped = str(row["swapped"]).strip().lower()
        if swapped not in ("true", "false"):
            raise DataError(f"{where}: 'swapped' must be true or false, got {row['swapped']!r}; is this an export key?")
        keys[str(row["item"])] = row | {"swapped": swapped == "true", "turns": _int(row.get("turns"), where, 1),
                                        "words_a": _int(row.get("words_a"), where, None),
                                        "words_b": _int(row.get("words_b"), where, None)}
    if not keys:
        raise DataError(f"{path}: the key is empty")
    return keys


def _keyed(row: dict[str, Any], keys: dict[str, dict[str, Any]], where: str, rater: str, label: str) -> Rating:
    item = str(row.get("item") or "").strip()
    if item not in keys:
        raise DataError(f"{where}: item {item!r} is not in the key; was this file exported with that key?")
    k = keys[item]
    return Rating(rater, item, str(k["prompt_id"]), str(k.get("category") or "") or None, k["turns"],
                  str(k["model_a"]), str(k["model_b"]), k["swapped"], label, k["words_a"], k["words_b"],
                  where.rsplit(":", 1)[0])


def _unblinded(row: dict[str, Any], where: str, rater: str, label: str, order: list[str]) -> Rating:
    prompt_id = str(row.get("prompt_id") or row.get("prompt") or "").strip()
    model_a, model_b = (str(row.get(name) or "").strip() for name in ("model_a", "model_b"))
    if not prompt_id or not model_a or not model_b:
        raise DataError(f"{where}: a rating without a key needs prompt_id, model_a and model_b (or give --key)")
    if model_a == model_b:
        raise DataError(f"{where}: model_a and model_b are both {model_a!r}; a rating compares two models")
    for model in (model_a, model_b):
        if model not in order:
            order.append(model)
    swapped = order.index(model_a) > order.index(model_b)
    x, y = (model_b, model_a) if swapped else (model_a, model_b)
    return Rating(rater, f"{prompt_id} | {x} vs {y}", prompt_id, str(row.get("category") or "").strip() or None,
                  _int(row.get("turns"), where, 1), model_a, model_b, swapped, label, None, None,
                  where.rsplit(":", 1)[0])


def _int(value: Any, where: str, default: int | None) -> int | None:
    if value is None or str(value).strip() == "":
        return default
    try:
        return int(str(value).strip())
    except ValueError:
        raise DataError(f"{where}: {value!r} is not a whole number") from None


# ---- tables ---------------------------------------------------------------------------------


def comparisons_of(ratings: Sequence[Rating], scale: Scale) -> tuple[list[Comparison], list[str]]:
    """One comparison per item (its raters combined by majority) and the models in study order."""
    by_item: dict[str, list[Rating]] = {}
    for rating in ratings:
        by_item.setdefault(rating.item, []).append(rating)
    comparisons = []
    for group in by_item.values():
        first = group[0]
        x, y = first.pair
        words = (first.words_b, first.words_a) if first.swapped else (first.words_a, first.words_b)
        comparisons.append(Comparison(
            first.prompt_id, first.category, first.turns, x, y,
            tuple(ShownVerdict(r.model_a, r.outcome(scale)) for r in group),
            combine_majority([r.study_outcome(scale) for r in group]), *words))
    return comparisons, _model_order([r.pair for r in ratings])


def summarize_ratings(imported: Imported, scale: Scale, *, seed: int = 0) -> dict[str, Any]:
    comparisons, models = comparisons_of(imported.ratings, scale)
    return {"kind": "human", "scale": scale, "models": models,
            "raters": sorted({r.rater for r in imported.ratings}), "ratings": len(imported.ratings),
            "blank": imported.blank, "items": len(comparisons), "consensus": "strict majority of raters, else a tie",
            **summarize(comparisons, models, seed=seed)}


def write_ratings(out: Path, imported: Imported, scale: Scale) -> dict[str, Any]:
    """Write the import folder (see the module docstring) atomically; returns its summary."""
    summary = summarize_ratings(imported, scale)
    comparisons, _ = comparisons_of(imported.ratings, scale)
    with atomic_folder(Path(out), overwrite=True) as tmp:
        with open(tmp / RATINGS_FILE, "w", encoding="utf-8") as handle:
            for r in imported.ratings:
                row = {key: value for key, value in asdict(r).items() if key != "label"}
                handle.write(json.dumps(row | {"rating": r.label, "outcome": r.outcome(scale)}, ensure_ascii=False) + "\n")
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / VOTES_FILE).write_text(votes_csv(comparisons), encoding="utf-8")
        _write_table(tmp / AGREEMENT_FILE, ("item", "rater", "rating"),
                     [{"item": r.item, "rater": r.rater, "rating": _agreement_value(r, scale)} for r in imported.ratings])
    return summary


def read_ratings_folder(folder: Path) -> tuple[dict[str, Any], Imported]:
    """An import folder's summary and ratings."""
    folder = Path(folder)
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in (folder / RATINGS_FILE).read_text(encoding="utf-8").splitlines() if line]
    except FileNotFoundError as error:
        raise DataError(f"{folder}: not a ratings folder ({Path(error.filename).name} missing); "
                        "run `llama2 eval ratings import ... --output DIR` first") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{folder}: a ratings file is not valid JSON ({error.msg})") from None
    if summary.get("kind") != "human":
        raise DataError(f"{folder}: {SUMMARY_FILE} is not a human ratings summary")
    fields = set(Rating.__dataclass_fields__)
    ratings = [Rating(**{k: v for k, v in row.items() if k in fields}, label=row["rating"]) for row in rows]
    return summary, Imported(ratings, summary.get("blank", 0))


def judge_agreement(imported: Imported, scale: Scale, study: Path) -> JudgeAgreement:
    """The study's judge against the humans, per prompt and pair, on the three-way outcome."""
    summary, _ = read_study(study)
    if summary.get("judge") is None:
        raise DataError(f"{study}: this study has no judge; run `llama2 eval pairwise --judge SPEC` for one")
    verdicts: dict[tuple[str, str, str], list[Outcome | None]] = {}
    with open(Path(study) / JUDGMENTS_FILE, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            verdicts.setdefault((row["prompt_id"], row["model_a"], row["model_b"]), []).append(row["outcome"])
    judge = {}
    for (prompt_id, a, b), outcomes in verdicts.items():
        outcome = combine_swapped(outcomes)
        if outcome is not None:
            judge[f"{prompt_id} | {a} vs {b}"] = OUTCOME_CODE[outcome]
    humans = []
    for r in imported.ratings:
        x, y = r.pair
        outcome = r.study_outcome(scale)
        if (r.prompt_id, y, x) in verdicts:  # the judge's study has this pair the other way round
            x, y, outcome = y, x, flip(outcome)
        humans.append((f"{r.prompt_id} | {x} vs {y}", r.rater, OUTCOME_CODE[outcome]))
    if not judge:
        raise DataError(f"the judge of {study} gave no usable verdict (all unparseable or failed); "
                        "nothing to compare with the humans")
    if not set(judge) & {item for item, _, _ in humans}:
        raise DataError(f"no prompt and pair is rated by both the humans and the judge of {study}; "
                        "export the tasks from that study")
    return judge_human_agreement(judge, humans, weights="quadratic", categories=[1, 2, 3])


def _agreement_value(r: Rating, scale: Scale) -> int:
    label = flip_label(r.label, scale) if r.swapped else r.label
    return int(label) if scale == "likert7" else OUTCOME_CODE[verdict_from_label(label, scale).outcome]  # type: ignore[index]


def _model_order(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """The study order from its oriented pairs: a model before more others comes first."""
    before: dict[str, set[str]] = {}
    for x, y in pairs:
        before.setdefault(x, set()).add(y)
        before.setdefault(y, set())
    first_seen = list(before)
    return sorted(before, key=lambda m: (-len(before[m]), first_seen.index(m)))


def _write_table(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    if path.suffix == ".jsonl":
        text = "".join(json.dumps({c: row[c] for c in columns}, ensure_ascii=False) + "\n" for row in rows)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows([{c: str(row[c]).lower() if isinstance(row[c], bool) else row[c] for c in columns}
                          for row in rows])
        text = buffer.getvalue()
    path.write_text(text, encoding="utf-8")
