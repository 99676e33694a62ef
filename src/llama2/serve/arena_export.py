"""Arena votes as files for the evaluation tools (`llama2 admin export-votes`).

Votes file, for `llama2 eval ladder` (Bradley-Terry ratings): one row per cast vote,

    model_a,model_b,winner,voter,prompt_id,battle,voted_at

with model_a the model shown as "Model A" and winner `a`, `b` or `tie`. The ladder reads the first
three columns and passes the others through. "Both bad" is a tie — neither answer was preferred,
as LMSYS's Chatbot Arena counts its "tie (bothbad)" — unless `drop_bad` leaves those votes out.
`prompt_id` names the question (the SHA-256 of its whitespace-collapsed, case-folded text), so the
file says which votes were on the same prompt without holding the prompt.

Agreement file, for `llama2 eval agreement`: long `item,rater,rating` rows for the items that two
or more people judged, an item being one prompt and one pair of models (`PROMPT_ID:X|Y`, the names
in sorted order, whichever side each person saw them on). The rating is on that order, as
`llama2 eval ratings` writes its agreement.csv: 1 = X better, 2 = tie (or both bad), 3 = Y better;
a person who judged an item more than once counts with their latest vote.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from llama2.atomic import write_text
from llama2.errors import ConfigError
from llama2.serve.arena_store import Arena, VoteRecord
from llama2.serve.store import Store

VOTE_COLUMNS = ("model_a", "model_b", "winner", "voter", "prompt_id", "battle", "voted_at")
AGREEMENT_COLUMNS = ("item", "rater", "rating")
WINNER = {"a": "a", "b": "b", "tie": "tie", "bad": "tie"}
MIN_RATERS = 2


@dataclass(frozen=True)
class ExportSummary:
    votes: int  # rows in the votes file
    dropped: int  # "both bad" votes left out
    items: int  # items in the agreement file (0 without one)
    ratings: int
    raters: int


def prompt_id(question: str) -> str:
    """The same id for the same question, whatever its spacing or letter case."""
    return hashlib.sha256(" ".join(question.split()).casefold().encode("utf-8")).hexdigest()[:12]


def vote_rows(records: Sequence[VoteRecord], *, drop_bad: bool = False) -> list[tuple[str, ...]]:
    return [(r.model_a, r.model_b, WINNER[r.vote], r.voter, prompt_id(r.question), str(r.battle_id),
             r.voted_at.isoformat()) for r in records if not (drop_bad and r.vote == "bad")]


def agreement_rows(records: Sequence[VoteRecord], *, drop_bad: bool = False) -> list[tuple[str, str, int]]:
    """(item, rater, rating) for the items with at least MIN_RATERS raters, sorted by item and rater."""
    latest: dict[tuple[str, str], tuple[datetime, int]] = {}
    for r in records:
        if drop_bad and r.vote == "bad":
            continue
        first, second = sorted((r.model_a, r.model_b))
        winner = WINNER[r.vote]
        rating = 2 if winner == "tie" else (1 if (r.model_a if winner == "a" else r.model_b) == first else 3)
        key = (f"{prompt_id(r.question)}:{first}|{second}", r.voter)
        if key not in latest or latest[key][0] <= r.voted_at:
            latest[key] = (r.voted_at, rating)
    raters: dict[str, int] = defaultdict(int)
    for item, _ in latest:
        raters[item] += 1
    return sorted((item, rater, rating) for (item, rater), (_, rating) in latest.items() if raters[item] >= MIN_RATERS)


def export_votes(store: Store, out: Path, *, since: datetime | None = None, agreement: Path | None = None,
                 drop_bad: bool = False) -> ExportSummary:
    """Write the votes file (and the agreement file), each atomically, replacing what was there."""
    for path in (out, agreement):
        if path is not None and Path(path).suffix.lower() != ".csv":
            raise ConfigError(f"{path}: give a .csv file name (the eval commands read files by their suffix)")
    records = Arena(store).votes(since)
    votes = vote_rows(records, drop_bad=drop_bad)
    write_text(Path(out), _csv(VOTE_COLUMNS, votes))
    items = ratings = raters = 0
    if agreement is not None:
        rows = agreement_rows(records, drop_bad=drop_bad)
        write_text(Path(agreement), _csv(AGREEMENT_COLUMNS, rows))
        items, ratings, raters = len({r[0] for r in rows}), len(rows), len({r[1] for r in rows})
    return ExportSummary(len(votes), len(records) - len(votes), items, ratings, raters)


def _csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
