"""A ladder of many models from pairwise votes: Bradley-Terry ratings on an Elo-like scale with
bootstrap intervals, the win probabilities they predict, and the online Elo of chatbot arenas.

Llama 2 compares models pair by pair (§3.4.2); with more than two models, one rating per model
summarises all the pairs at once. Bradley-Terry (1952) says model i beats model j with probability
p_i / (p_i + p_j); its maximum-likelihood strengths do not depend on the order of the votes, which
online Elo does (`online_elo` is here to compare with leaderboards that use it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from llama2.errors import DataError
from llama2.evaluate.records import table_records
from llama2.evaluate.stats import percentile_interval

WINNERS = ("a", "b", "tie")
BASE = 1000.0
ELO_SCALE = 400.0 / math.log(10)  # rating points per unit of natural log-strength
PRIOR = 0.01
_BLOCK_MATRIX_ELEMENTS = 1 << 22  # resamples x models^2 held at once
_MAX_NEWTON_STEPS = 100


@dataclass(frozen=True)
class Vote:
    """One pairwise judgement: `winner` is "a" (model_a won), "b" or "tie"."""

    model_a: str
    model_b: str
    winner: str

    def __post_init__(self) -> None:
        if not self.model_a or not self.model_b:
            raise DataError("empty model name; every vote names model_a and model_b")
        if self.winner not in WINNERS:
            raise DataError(f"winner {self.winner!r} is not one of {', '.join(WINNERS)}")
        if self.model_a == self.model_b:
            raise DataError(f"{self.model_a!r} is compared with itself; model_a and model_b must differ")


@dataclass(frozen=True)
class Rating:
    """A model's rating, its bootstrap interval (None without a bootstrap) and its record."""

    model: str
    rating: float
    low: float | None
    high: float | None
    games: int
    wins: int
    ties: int
    losses: int


@dataclass(frozen=True)
class Ladder:
    """Bradley-Terry ratings, best first. A rating difference d means the better model wins with
    probability 1 / (1 + 10^(-d/400)), as in Elo."""

    ratings: list[Rating]
    anchor: str | None
    confidence: float
    n_votes: int
    n_bootstrap: int
    prior: float

    def win_probability(self, model: str, other: str) -> float:
        """Predicted chance that `model` is preferred to `other` (a tie counted as half)."""
        by_name = {rating.model: rating.rating for rating in self.ratings}
        for name in (model, other):
            if name not in by_name:
                raise DataError(f"no model {name!r} on the ladder; it has {', '.join(by_name)}")
        return 1 / (1 + 10 ** ((by_name[other] - by_name[model]) / 400))

    def win_matrix(self) -> list[list[float]]:
        """Row model's predicted chance of being preferred to the column model, in ladder order."""
        return [[self.win_probability(row.model, column.model) for column in self.ratings] for row in self.ratings]

    def to_dict(self) -> dict[str, Any]:
        return {"ratings": [vars(rating).copy() for rating in self.ratings], "anchor": self.anchor,
                "base": BASE, "confidence": self.confidence, "n_votes": self.n_votes,
                "n_bootstrap": self.n_bootstrap, "prior": self.prior,
                "win_probability": {"models": [rating.model for rating in self.ratings], "matrix": self.win_matrix()}}


def read_votes(path: Path | str) -> list[Vote]:
    """Votes from CSV/TSV (header `model_a,model_b,winner`) or JSONL; winner is a, b or tie."""
    votes = []
    for where, record in table_records(path, ("model_a", "model_b", "winner")):
        model_a, model_b, winner = (str(record[name] or "").strip() for name in ("model_a", "model_b", "winner"))
        try:
            votes.append(Vote(model_a, model_b, winner.lower()))
        except DataError as error:
            raise DataError(f"{where}: {error}") from None
    if not votes:
        raise DataError(f"{path}: no votes; give one row per comparison (model_a,model_b,winner)")
    return votes


def bradley_terry(votes: Sequence[Vote], *, n_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95,
                  anchor: str | None = None, prior: float = PRIOR) -> Ladder:
    """Bradley-Terry ratings of the models in `votes`, fitted by maximum likelihood (Newton's
    method). A tie counts as half a win for each side. Ratings are 400 * log10(strength), shifted
    so that `anchor` (or, without one, the mean model) sits at 1000. Intervals: percentile
    bootstrap over votes (`n_bootstrap` resamples; 0 skips them).

    `prior` is a weak Gaussian prior on the log-strengths (a penalty prior * sum(theta^2), theta in
    natural-log units, as choix's `alpha`): it keeps ratings finite when a model won or lost every
    game (there the MLE does not exist), and on studies of hundreds of votes moves ratings by a
    small fraction of a point. `prior=0` gives the plain MLE, which then must exist."""
    if not votes:
        raise DataError("no votes; the ladder needs at least one comparison")
    if prior < 0 or n_bootstrap < 0:
        raise DataError(f"prior and n_bootstrap must not be negative; got {prior} and {n_bootstrap}")
    models = sorted({vote.model_a for vote in votes} | {vote.model_b for vote in votes})
    if anchor is not None and anchor not in models:
        raise DataError(f"anchor {anchor!r} is not among the voted models ({', '.join(models)})")
    if len(models) < 2:
        raise DataError("the votes name one model; a ladder needs at least two")
    kinds, counts = _vote_kinds(votes, models)
    theta = _fit(counts[None] @ kinds, len(models), prior, what="the votes")[0]
    ratings = _to_scale(theta[None], models, anchor)[0]
    intervals: list[tuple[float | None, float | None]] = [(None, None)] * len(models)
    if n_bootstrap:
        resampled = _to_scale(_bootstrap(kinds, counts, len(models), prior, n_bootstrap, seed), models, anchor)
        intervals = [(interval.low, interval.high) for interval in
                     (percentile_interval(ratings[m], resampled[:, m], confidence) for m in range(len(models)))]
    records = _records(votes)
    ladder = [Rating(model, float(ratings[m]), *intervals[m], **records[model]) for m, model in enumerate(models)]
    ladder.sort(key=lambda rating: (-rating.rating, rating.model))
    return Ladder(ladder, anchor, confidence, len(votes), n_bootstrap, prior)


def online_elo(votes: Iterable[Vote], *, k: float = 4.0, base: float = BASE,
               seed: int | None = None) -> dict[str, float]:
    """Sequential Elo as chatbot arenas first ran it: every model starts at `base`, each vote moves
    both ratings by k * (score - expected score). The result depends on the order of the votes
    (shuffled with `seed` when given); Bradley-Terry does not. Best first."""
    order = list(votes)
    if seed is not None:
        random.Random(seed).shuffle(order)
    ratings: dict[str, float] = {}
    for vote in order:
        a, b = ratings.setdefault(vote.model_a, base), ratings.setdefault(vote.model_b, base)
        expected = 1 / (1 + 10 ** ((b - a) / 400))
        change = k * ({"a": 1.0, "tie": 0.5, "b": 0.0}[vote.winner] - expected)
        ratings[vote.model_a], ratings[vote.model_b] = a + change, b - change
    return dict(sorted(ratings.items(), key=lambda item: (-item[1], item[0])))


def _vote_kinds(votes: Sequence[Vote], models: list[str]) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Distinct (a, b, winner) kinds as rows of a sparse (kinds, models^2) matrix of win credit
    (W[i, j] += 1 for a win of i over j, 0.5 each way for a tie), and how many votes of each kind."""
    index = {model: m for m, model in enumerate(models)}
    tally: dict[tuple[int, int, str], int] = {}
    for vote in votes:
        key = (index[vote.model_a], index[vote.model_b], vote.winner)
        tally[key] = tally.get(key, 0) + 1
    rows, columns, credit = [], [], []
    for row, (a, b, winner) in enumerate(tally):
        share = {"a": 1.0, "tie": 0.5, "b": 0.0}[winner]
        rows += [row, row]
        columns += [a * len(models) + b, b * len(models) + a]
        credit += [share, 1.0 - share]
    kinds = sparse.csr_matrix((credit, (rows, columns)), shape=(len(tally), len(models) ** 2))
    return kinds, np.fromiter(tally.values(), dtype=np.float64, count=len(tally))


def _bootstrap(kinds: sparse.csr_matrix, counts: np.ndarray, m: int, prior: float, n_bootstrap: int,
               seed: int) -> np.ndarray:
    """(n_bootstrap, m) log-strengths refitted on resamples of the votes. Drawing n votes with
    replacement is drawing multinomial counts of the vote kinds, which is what happens here."""
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_MATRIX_ELEMENTS // (m * m))
    fits = []
    for start in range(0, n_bootstrap, block):
        draws = rng.multinomial(int(counts.sum()), counts / counts.sum(), size=min(block, n_bootstrap - start))
        fits.append(_fit(np.asarray((kinds.T @ draws.T).T), m, prior, what="a bootstrap resample of the votes"))
    return np.concatenate(fits)


def _fit(wins: np.ndarray, m: int, prior: float, *, what: str) -> np.ndarray:
    """Maximise sum_ij W_ij log sigmoid(theta_i - theta_j) - prior * |theta|^2 for each row of
    `wins` (B, m*m), by Newton's method with step halving; returns theta (B, m), mean zero."""
    w = wins.reshape(-1, m, m)
    games = w + w.transpose(0, 2, 1)
    if prior == 0:
        _require_connected(w, what)
    theta = np.zeros((len(w), m))
    pin = np.ones((m, m)) / m if prior == 0 else 0  # fixes the free shift of theta when there is no prior
    for _ in range(_MAX_NEWTON_STEPS):
        p = 1 / (1 + np.exp(theta[:, None, :] - theta[:, :, None]))  # p[b, i, j] = P(i beats j)
        gradient = (w - games * p).sum(axis=2) - 2 * prior * theta
        if np.abs(gradient).max() <= 1e-10 * max(1.0, float(games.sum(axis=(1, 2)).max())):
            break
        curvature = games * p * p.transpose(0, 2, 1)
        information = np.eye(m) * curvature.sum(axis=2)[:, :, None] - curvature  # minus the Hessian
        step = np.linalg.solve(information + 2 * prior * np.eye(m) + pin, gradient[:, :, None])[:, :, 0]
        theta = _halve_until_better(theta, step, w, prior)
    return theta - theta.mean(axis=1, keepdims=True)


def _halve_until_better(theta: np.ndarray, step: np.ndarray, w: np.ndarray, prior: float) -> np.ndarray:
    """theta + step, the step halved per fit until the objective does not get worse."""
    current = _objective(theta, w, prior)
    scale = np.ones((len(theta), 1))
    for _ in range(30):
        worse = _objective(theta + scale * step, w, prior) < current - 1e-12 * np.abs(current)
        if not worse.any():
            break
        scale[worse] /= 2
    return theta + scale * step


def _objective(theta: np.ndarray, w: np.ndarray, prior: float) -> np.ndarray:
    margin = theta[:, :, None] - theta[:, None, :]
    return -(w * np.logaddexp(0, -margin)).sum(axis=(1, 2)) - prior * (theta**2).sum(axis=1)


def _require_connected(w: np.ndarray, what: str) -> None:
    """Without a prior the MLE exists only when every model beat (or tied), directly or through
    others, every other model: the graph "i won something against j" is strongly connected."""
    reach = (w > 0) | np.eye(w.shape[1], dtype=bool)
    for _ in range(max(1, math.ceil(math.log2(w.shape[1])))):
        reach = reach | (np.einsum("bij,bjk->bik", reach.astype(np.float64), reach.astype(np.float64)) > 0)
    if not reach.all():
        raise DataError(f"in {what} some model won, or lost, every comparison that links it to the others, so its "
                        "Bradley-Terry strength is infinite; use a prior > 0 (the default)")


def _to_scale(theta: np.ndarray, models: list[str], anchor: str | None) -> np.ndarray:
    reference = theta[:, models.index(anchor)][:, None] if anchor else theta.mean(axis=1, keepdims=True)
    return BASE + ELO_SCALE * (theta - reference)


def _records(votes: Sequence[Vote]) -> dict[str, dict[str, int]]:
    records: dict[str, dict[str, int]] = {}
    for vote in votes:
        for model, won in ((vote.model_a, "a"), (vote.model_b, "b")):
            record = records.setdefault(model, {"games": 0, "wins": 0, "ties": 0, "losses": 0})
            record["games"] += 1
            record["ties" if vote.winner == "tie" else "wins" if vote.winner == won else "losses"] += 1
    return records
