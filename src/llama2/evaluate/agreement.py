"""Inter-rater reliability: how far human raters (or a judge and humans) agree, beyond chance.

Llama 2 reports Gwet's AC1/AC2 for its human studies (0.37-0.55 on the 7-point helpfulness scale,
0.92 on safety; Llama 2, §3.4.2 and §4.4), because AC1/AC2 stay stable when one category dominates,
where kappa collapses (the "kappa paradox"). The other usual coefficients are here to compare with.

Ratings come in long format, one `(item, rater, rating)` per row; a rater may skip items. Every
coefficient is a weighted agreement `(pa - pe) / (1 - pe)` over categories, and follows Gwet,
*Handbook of Inter-Rater Reliability* (4th ed., 2014) exactly as the `irrCAC` package implements it:

- Gwet's AC1 (identity weights) / AC2 (linear, quadratic or ordinal weights), Fleiss' generalised
  kappa, and Krippendorff's alpha at the nominal, interval and ratio levels: Gwet's analytic
  (linearised) standard error, a t interval with n-1 degrees of freedom, its top capped at 1.
- Krippendorff's alpha at the ordinal level: the ordinal distance depends on the data's own
  marginals, so the analytic error (which takes weights as fixed) does not apply; its interval is a
  percentile bootstrap over items, as is the one of the percent agreement.
- Cohen's kappa (two raters, unweighted, linear or quadratic) on the items both rated, with Gwet's
  analytic standard error for a contingency table.

Weights use the categories' numeric values (linear, quadratic, ratio) or their ranks (ordinal); text
labels have an order only when the categories are given, and then count as 1, 2, ... q.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import stats as scipy_stats

from llama2.errors import DataError
from llama2.evaluate.records import table_records
from llama2.evaluate.stats import N_RESAMPLES, Interval, bootstrap_mean, percentile_interval, resample_counts

WEIGHTS = ("identity", "linear", "quadratic", "ordinal")
LEVELS = ("nominal", "ordinal", "interval", "ratio")
COHEN_WEIGHTS = {"unweighted": "identity", "linear": "linear", "quadratic": "quadratic"}
ANALYTIC = "analytic (Gwet)"
BOOTSTRAP = "bootstrap (items)"
Category = float | str


class RatingRow(NamedTuple):
    """One rating in long format; `rating` is None when the rater skipped the item."""

    item: str
    rater: str
    rating: Any


@dataclass(frozen=True)
class RatingTable:
    """Ratings as an items x raters grid of category indices (-1 where a rater skipped an item).
    `values` are the categories' places on the scale: their numbers, or 1..q for ordered labels."""

    items: tuple[str, ...]
    raters: tuple[str, ...]
    categories: tuple[Category, ...]
    codes: np.ndarray  # (n_items, n_raters) int
    ordered: bool  # numeric ratings, or labels with a given order

    @cached_property
    def counts(self) -> np.ndarray:
        """(n_items, q): how many raters put each item in each category."""
        q = len(self.categories)
        return np.stack([(self.codes == k).sum(axis=1) for k in range(q)], axis=1).astype(np.float64)

    @property
    def values(self) -> np.ndarray:
        if isinstance(self.categories[0], str):
            return np.arange(1.0, len(self.categories) + 1)
        return np.asarray(self.categories, dtype=np.float64)

    def subset(self, raters: Sequence[str], *, complete: bool = True) -> RatingTable:
        """The same categories, only these raters' columns, and only the items all of them rated
        (`complete`) or at least one of them rated."""
        codes = self.codes[:, [self.raters.index(rater) for rater in raters]]
        keep = (codes >= 0).all(axis=1) if complete else (codes >= 0).any(axis=1)
        items = tuple(item for item, kept in zip(self.items, keep) if kept)
        return RatingTable(items, tuple(raters), self.categories, codes[keep], self.ordered)


Ratings = RatingTable | Iterable[tuple[Any, Any, Any]]  # a table, or rows of (item, rater, rating)


@dataclass(frozen=True)
class Agreement:
    """One coefficient with its confidence interval, and the observed and chance agreement it
    compares (pa, pe); `se` is None when the interval comes from the bootstrap."""

    statistic: str
    weights: str
    interval: Interval
    se: float | None
    pa: float
    pe: float
    n_items: int
    ci_method: str

    @property
    def estimate(self) -> float:
        return self.interval.estimate

    def to_dict(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "weights": self.weights, **self.interval.to_dict(), "se": self.se,
                "pa": self.pa, "pe": self.pe, "n_items": self.n_items, "ci_method": self.ci_method}


def read_ratings(path: Path | str) -> list[RatingRow]:
    """Long-format ratings from CSV/TSV (header `item,rater,rating`) or JSONL (`{"item", "rater",
    "rating"}` per line). An empty rating (or JSON null) is a skipped item."""
    rows = []
    for where, record in table_records(path, ("item", "rater", "rating")):
        item, rater, rating = (record[name] for name in ("item", "rater", "rating"))
        if item is None or rater is None or not str(item).strip() or not str(rater).strip():
            raise DataError(f"{where}: empty item or rater; every row names the item and the rater")
        if isinstance(rating, str):
            rating = rating.strip() or None
        elif isinstance(rating, bool) or not isinstance(rating, (int, float, type(None))):
            raise DataError(f"{where}: rating {rating!r} is neither a number nor a label")
        rows.append(RatingRow(str(item).strip(), str(rater).strip(), rating))
    if not rows:
        raise DataError(f"{path}: no ratings; give one row per (item, rater, rating)")
    return rows


def rating_table(ratings: Ratings, categories: Sequence[Any] | None = None) -> RatingTable:
    """The grid of `ratings` (rows of item, rater, rating). `categories` lists every possible rating
    in order (unused ones count: they change the weights and AC1's chance agreement); without it,
    the ratings seen, sorted. Numbers given as text ("3") are numbers."""
    if isinstance(ratings, RatingTable):
        return ratings if categories is None else rating_table(_rows_of(ratings), categories)
    rows = [(str(item), str(rater), rating) for item, rater, rating in ratings if not _missing(rating)]
    if not rows:
        raise DataError("no ratings given; agreement needs items rated by at least two raters")
    seen = list(dict.fromkeys(rating for _, _, rating in rows))
    labels = list(categories) if categories is not None else seen
    numbers = [_number(label) for label in [*labels, *seen]]
    numeric = all(number is not None for number in numbers)
    scale: list[Category] = [_number(label) if numeric else str(label) for label in labels]  # type: ignore[misc]
    if categories is None:
        scale = sorted(set(scale))  # type: ignore[type-var]
    elif len(set(scale)) != len(scale):
        raise DataError(f"categories {list(categories)} name a category twice; list each possible rating once")
    index = {category: k for k, category in enumerate(scale)}
    items, raters = list(dict.fromkeys(r[0] for r in rows)), list(dict.fromkeys(r[1] for r in rows))
    item_at, rater_at = {item: i for i, item in enumerate(items)}, {rater: j for j, rater in enumerate(raters)}
    codes = np.full((len(items), len(raters)), -1, dtype=np.int64)
    for item, rater, rating in rows:
        key = _number(rating) if numeric else str(rating)
        if key not in index:
            raise DataError(f"item {item!r}, rater {rater!r}: rating {rating!r} is not one of the categories "
                            f"{', '.join(map(_show, scale))}; add it to the categories or fix the rating")
        if codes[item_at[item], rater_at[rater]] >= 0:
            raise DataError(f"item {item!r} has two ratings from rater {rater!r}; keep one row per item and rater")
        codes[item_at[item], rater_at[rater]] = index[key]
    return RatingTable(tuple(items), tuple(raters), tuple(scale), codes, numeric or categories is not None)


def gwet_ac(ratings: Ratings, *, weights: str = "identity", categories: Sequence[Any] | None = None,
            confidence: float = 0.95) -> Agreement:
    """Gwet's AC1 (identity weights) or AC2 (any other weights): chance agreement is the chance
    that a rating is random, estimated from how far the ratings spread over the categories."""
    table = _table(ratings, categories, raters=2)
    w = weight_matrix(table, weights)
    counts, n_rated = table.counts, table.counts.sum(axis=1)
    q = len(table.categories)
    pi = (counts / n_rated[:, None]).mean(axis=0)
    scale = w.sum() / (q * (q - 1))
    pe = scale * float((pi * (1 - pi)).sum())
    pe_items = scale * (counts @ (1 - pi)) / n_rated
    name = "Gwet's AC1" if weights == "identity" else "Gwet's AC2"
    return _linearised(name, weights, counts, w, pe, pe_items, confidence)


def fleiss_kappa(ratings: Ratings, *, weights: str = "identity", categories: Sequence[Any] | None = None,
                 confidence: float = 0.95) -> Agreement:
    """Fleiss' kappa, generalised to missing ratings and weights: chance agreement is that of two
    ratings drawn from the pooled distribution of all ratings."""
    table = _table(ratings, categories, raters=2)
    w = weight_matrix(table, weights)
    counts, n_rated = table.counts, table.counts.sum(axis=1)
    pi = (counts / n_rated[:, None]).mean(axis=0)
    pe = float(pi @ w @ pi)
    pe_items = counts @ ((w + w.T) @ pi / 2) / n_rated
    return _linearised("Fleiss' kappa", weights, counts, w, pe, pe_items, confidence)


def krippendorff_alpha(ratings: Ratings, *, level: str = "nominal", categories: Sequence[Any] | None = None,
                       confidence: float = 0.95, n_resamples: int = N_RESAMPLES, seed: int = 0) -> Agreement:
    """Krippendorff's alpha, 1 - observed / expected disagreement over all pairable ratings, at a
    level of measurement: nominal, ordinal, interval or ratio (Krippendorff 2011, "Computing
    Krippendorff's alpha-reliability"). Items rated once are not pairable and are left out."""
    if level not in LEVELS:
        raise DataError(f"unknown level of measurement {level!r}; choose one of {', '.join(LEVELS)}")
    table = _table(ratings, categories, raters=2)
    counts = table.counts[table.counts.sum(axis=1) >= 2]
    if level == "ordinal":
        _require_order(table, "Krippendorff's ordinal alpha")
        return _bootstrap_ordinal_alpha(counts, confidence, n_resamples, seed)
    w = weight_matrix(table, {"nominal": "identity", "interval": "quadratic", "ratio": "ratio"}[level])
    n, n_rated = len(counts), counts.sum(axis=1)
    mean_rated, eps = n_rated.mean(), 1 / n_rated.sum()
    agree = (counts * (counts @ w.T - 1)).sum(axis=1)
    pa_prime = float((agree / (mean_rated * (n_rated - 1))).mean())
    pa = (1 - eps) * pa_prime + eps
    pi = counts.mean(axis=0) / mean_rated
    pe = float(pi @ w @ pi)
    alpha, alpha_prime = (pa - pe) / (1 - pe), (pa_prime - pe) / (1 - pe)
    pa_items = agree / (mean_rated * (n_rated - 1)) - pa * (n_rated - mean_rated) / mean_rated
    pe_items = counts @ ((w + w.T) @ pi / 2) / mean_rated - pe * (n_rated - mean_rated) / mean_rated
    terms = (pa_items - pe) / (1 - pe) - 2 * (1 - alpha_prime) * (pe_items - pe) / (1 - pe)
    se = float(np.sqrt(((terms - alpha_prime) ** 2).sum() / (n * (n - 1))))
    return Agreement("Krippendorff's alpha", level, _t_interval(alpha, se, n, confidence), se, pa, pe, n, ANALYTIC)


def cohen_kappa(ratings: Ratings, *, weights: str = "unweighted", raters: Sequence[str] | None = None,
                categories: Sequence[Any] | None = None, confidence: float = 0.95) -> Agreement:
    """Cohen's kappa between two raters on the items both rated; `weights` unweighted, linear or
    quadratic (Cohen 1968). `raters` picks two when the ratings have more."""
    if weights not in COHEN_WEIGHTS:
        raise DataError(f"unknown Cohen's kappa weights {weights!r}; choose one of {', '.join(COHEN_WEIGHTS)}")
    table = rating_table(ratings, categories)
    if raters is None:
        if len(table.raters) != 2:
            raise DataError(f"Cohen's kappa compares two raters; these ratings have {len(table.raters)} "
                            f"({', '.join(table.raters[:5])}); name the two to compare")
        raters = table.raters
    unknown = [rater for rater in raters if rater not in table.raters]
    if len(raters) != 2 or unknown:
        raise DataError(f"Cohen's kappa needs two of the raters {', '.join(table.raters[:10])}; got {list(raters)}")
    pair = table.subset(raters)
    n = len(pair.items)
    if n < 2:
        raise DataError(f"raters {raters[0]!r} and {raters[1]!r} rated {n} item(s) in common; need at least 2")
    w = weight_matrix(pair, COHEN_WEIGHTS[weights])
    q = len(pair.categories)
    p = np.zeros((q, q))
    np.add.at(p, (pair.codes[:, 0], pair.codes[:, 1]), 1 / n)
    rows, cols = p.sum(axis=1), p.sum(axis=0)
    pa, pe = float((w * p).sum()), float(rows @ w @ cols)
    kappa = _chance_corrected(pa, pe, "Cohen's kappa")
    spread = w - (1 - kappa) * ((w @ cols)[:, None] + (w.T @ rows)[None, :])
    variance = ((p * spread**2).sum() - (pa - 2 * (1 - kappa) * pe) ** 2) / (n * (1 - pe) ** 2)
    se = float(np.sqrt(max(variance, 0.0)))
    return Agreement("Cohen's kappa", weights, _t_interval(kappa, se, n, confidence), se, pa, pe, n, ANALYTIC)


def percent_agreement(ratings: Ratings, *, weights: str = "identity", categories: Sequence[Any] | None = None,
                      confidence: float = 0.95, n_resamples: int = N_RESAMPLES, seed: int = 0) -> Agreement:
    """The share of rater pairs on an item that agree (weighted: partly, by the weights), averaged
    over items rated at least twice; no chance correction. Bootstrap interval over those items."""
    table = _table(ratings, categories, raters=2)
    w = weight_matrix(table, weights)
    counts = table.counts[table.counts.sum(axis=1) >= 2]
    n_rated = counts.sum(axis=1)
    per_item = (counts * (counts @ w.T - 1)).sum(axis=1) / (n_rated * (n_rated - 1))
    interval = bootstrap_mean(per_item, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return Agreement("percent agreement", weights, interval, None, interval.estimate, 0.0, len(counts), BOOTSTRAP)


def weight_matrix(table: RatingTable, weights: str) -> np.ndarray:
    """(q, q) agreement credit between categories, 1 on the diagonal, as in Gwet (2014, ch. 3) and
    irrCAC: identity, linear, quadratic, ordinal (by ranks), ratio."""
    q = len(table.categories)
    if weights == "identity":
        return np.eye(q)
    if weights not in (*WEIGHTS, "ratio"):
        raise DataError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHTS)}")
    _require_order(table, f"{weights} weights")
    x = table.values
    if weights == "ordinal":
        steps = np.abs(np.subtract.outer(np.arange(q), np.arange(q))) + 1.0
        distance = steps * (steps - 1) / 2
    elif weights == "ratio":
        if (x < 0).any():
            raise DataError(f"ratio-level agreement needs ratings of 0 or more; the scale has {_show(x.min())}")
        total = np.add.outer(x, x)
        distance = np.divide(np.subtract.outer(x, x), total, out=np.zeros_like(total), where=total != 0) ** 2
    else:
        distance = np.abs(np.subtract.outer(x, x)) ** (1 if weights == "linear" else 2)
    return 1 - distance / distance.max()


@dataclass(frozen=True)
class AgreementReport:
    """The coefficients `llama2 eval agreement` prints, with what they were computed on."""

    n_items: int
    raters: tuple[str, ...]
    n_ratings: int
    categories: tuple[Category, ...]
    statistics: list[Agreement]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"n_items": self.n_items, "raters": list(self.raters), "n_ratings": self.n_ratings,
                "categories": list(self.categories), "statistics": [s.to_dict() for s in self.statistics],
                "notes": self.notes}


def agreement_report(ratings: Ratings, *, categories: Sequence[Any] | None = None, confidence: float = 0.95,
                     seed: int = 0) -> AgreementReport:
    """Percent agreement, AC1, AC2 (quadratic and ordinal weights), Krippendorff's alpha (nominal,
    ordinal, interval), Fleiss' kappa, and Cohen's kappa when there are exactly two raters. Labels
    without a given order get the nominal coefficients only (and a note saying why)."""
    table = _table(ratings, categories, raters=2)
    kw = {"confidence": confidence}
    stats = [percent_agreement(table, seed=seed, **kw), gwet_ac(table, **kw)]
    notes = []
    if table.ordered:
        stats += [gwet_ac(table, weights="quadratic", **kw), gwet_ac(table, weights="ordinal", **kw)]
    stats += [krippendorff_alpha(table, level="nominal", **kw)]
    if table.ordered:
        stats += [krippendorff_alpha(table, level="ordinal", seed=seed, **kw),
                  krippendorff_alpha(table, level="interval", **kw)]
    else:
        notes.append("ratings are labels without an order: give the categories in order (--categories) "
                     "for AC2 and the ordinal and interval alphas")
    stats.append(fleiss_kappa(table, **kw))
    if len(table.raters) == 2:
        stats.append(cohen_kappa(table, **kw))
        if table.ordered:
            stats.append(cohen_kappa(table, weights="quadratic", **kw))
    return AgreementReport(len(table.items), table.raters, int((table.codes >= 0).sum()), table.categories,
                           stats, notes)


@dataclass(frozen=True)
class PairAgreement:
    """A judge against one reference (a human, or the humans' majority) on the items both rated."""

    n_items: int
    exact: float  # share of items with the same rating
    cohen_kappa: Agreement
    gwet_ac: Agreement

    def to_dict(self) -> dict[str, Any]:
        return {"n_items": self.n_items, "exact": self.exact, "cohen_kappa": self.cohen_kappa.to_dict(),
                "gwet_ac": self.gwet_ac.to_dict()}


@dataclass(frozen=True)
class JudgeAgreement:
    """The judge-vs-human table: the judge against the humans' majority and against each human,
    next to the humans' agreement among themselves (the ceiling a judge can be held to)."""

    weights: str
    majority: PairAgreement
    per_rater: dict[str, PairAgreement]
    among_humans: Agreement | None
    no_majority: int  # items whose humans tied for the most frequent rating (left out of `majority`)

    def to_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "majority": self.majority.to_dict(),
                "per_rater": {rater: pair.to_dict() for rater, pair in self.per_rater.items()},
                "among_humans": self.among_humans.to_dict() if self.among_humans else None,
                "no_majority": self.no_majority}


def judge_human_agreement(judge: Mapping[Any, Any], humans: Iterable[tuple[Any, Any, Any]] | Mapping[Any, Mapping],
                          *, weights: str = "quadratic", categories: Sequence[Any] | None = None,
                          confidence: float = 0.95) -> JudgeAgreement:
    """How well a judge's ratings (`{item: rating}`) match human ones (long rows, or `{rater: {item:
    rating}}`): Cohen's kappa (`weights` unweighted, linear or quadratic) and Gwet's AC1/AC2 with the
    same weights, against the humans' majority rating and against each human."""
    if isinstance(humans, Mapping):
        humans = [(item, rater, rating) for rater, given in humans.items() for item, rating in given.items()]
    rows = [(str(i), str(r), v) for i, r, v in humans if not _missing(v)]
    judge_name = "judge"
    while judge_name in {rater for _, rater, _ in rows}:
        judge_name = f"_{judge_name}"
    judged = [(str(item), judge_name, rating) for item, rating in judge.items() if not _missing(rating)]
    table = rating_table([*rows, *judged], categories)
    humans_only = table.subset([rater for rater in table.raters if rater != judge_name], complete=False)
    majority_rows, no_majority = _majority(humans_only)
    gwet_weights = COHEN_WEIGHTS.get(weights, weights)

    def versus_judge(reference: RatingTable, rater: str) -> PairAgreement:
        both = reference.subset([rater, judge_name])
        exact = float((both.codes[:, 0] == both.codes[:, 1]).mean()) if len(both.items) else float("nan")
        return PairAgreement(len(both.items), exact, cohen_kappa(both, weights=weights, confidence=confidence),
                             gwet_ac(both, weights=gwet_weights, confidence=confidence))

    majority_table = replace(rating_table([*majority_rows, *judged], table.categories), ordered=table.ordered)
    majority = versus_judge(majority_table, "majority")
    per_rater = {rater: versus_judge(table, rater) for rater in humans_only.raters}
    among = gwet_ac(humans_only, weights=gwet_weights, confidence=confidence) if len(humans_only.raters) >= 2 else None
    return JudgeAgreement(weights, majority, per_rater, among, no_majority)


def _majority(table: RatingTable) -> tuple[list[tuple[str, str, Category]], int]:
    rows, ties = [], 0
    for item, counts in zip(table.items, table.counts):
        if counts.sum() == 0:
            continue
        top = np.flatnonzero(counts == counts.max())
        if len(top) > 1:
            ties += 1
        else:
            rows.append((item, "majority", table.categories[top[0]]))
    return rows, ties


def _linearised(name: str, weights: str, counts: np.ndarray, w: np.ndarray, pe: float, pe_items: np.ndarray,
                confidence: float) -> Agreement:
    """Gwet's AC and Fleiss' kappa share pa and the linearised variance (Gwet 2014, §5.4); they
    differ in the chance agreement pe and its per-item terms."""
    n, n_rated = len(counts), counts.sum(axis=1)
    pairable = n_rated >= 2
    agree = (counts * (counts @ w.T - 1)).sum(axis=1)
    pa_items = np.where(pairable, agree / np.maximum(n_rated * (n_rated - 1), 1), 0.0)
    pa = float(pa_items[pairable].mean())
    coefficient = _chance_corrected(pa, pe, name)
    terms = (n / pairable.sum()) * (pa_items - pe * pairable) / (1 - pe)
    terms = terms - 2 * (1 - coefficient) * (pe_items - pe) / (1 - pe)
    se = float(np.sqrt(((terms - coefficient) ** 2).sum() / (n * (n - 1))))
    return Agreement(name, weights, _t_interval(coefficient, se, n, confidence), se, pa, pe, n, ANALYTIC)


def _bootstrap_ordinal_alpha(counts: np.ndarray, confidence: float, n_resamples: int, seed: int) -> Agreement:
    """Alpha from the items' coincidence matrices; a resample weights each item by how often it was drawn."""
    q = counts.shape[1]
    coincidences = (counts[:, :, None] * counts[:, None, :] - counts[:, :, None] * np.eye(q)) \
        / (counts.sum(axis=1) - 1)[:, None, None]
    flat = coincidences.reshape(len(counts), q * q)
    observed, expected = _ordinal_disagreement(flat.sum(axis=0)[None], q)
    rng = np.random.default_rng(seed)
    resampled = np.concatenate([_ratio_complement(*_ordinal_disagreement(block @ flat, q))
                                for block in resample_counts(len(counts), n_resamples, rng)])
    interval = percentile_interval(float(_ratio_complement(observed, expected)[0]), resampled[np.isfinite(resampled)],
                           confidence)
    return Agreement("Krippendorff's alpha", "ordinal", interval, None, float(1 - observed[0]),
                     float(1 - expected[0]), len(counts), BOOTSTRAP)


def _ratio_complement(observed: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """1 - observed / expected, NaN where nothing was expected (a resample with one category)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1 - observed / expected


def _ordinal_disagreement(coincidences: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray]:
    """Observed and expected ordinal disagreement for each row of flattened (q*q) coincidence
    matrices, as shares of the largest distance (so 1 - each reads as pa and pe)."""
    o = coincidences.reshape(-1, q, q)
    n_v = o.sum(axis=1)  # (B, q): pairable values per category
    n = n_v.sum(axis=1)
    e = (n_v[:, :, None] * n_v[:, None, :] - n_v[:, :, None] * np.eye(q)) / (n - 1)[:, None, None]
    below = np.concatenate([np.zeros((len(n_v), 1)), np.cumsum(n_v, axis=1)], axis=1)
    low, high = np.minimum.outer(np.arange(q), np.arange(q)), np.maximum.outer(np.arange(q), np.arange(q))
    d = (below[:, high + 1] - below[:, low] - (n_v[:, low] + n_v[:, high]) / 2) ** 2
    scale = n * np.maximum(d.max(axis=(1, 2)), np.finfo(float).tiny)
    return (o * d).sum(axis=(1, 2)) / scale, (e * d).sum(axis=(1, 2)) / scale


def _chance_corrected(pa: float, pe: float, name: str) -> float:
    if pe >= 1 - 1e-12:
        raise DataError(f"{name} is undefined here: chance agreement is 1 (every rating falls in one category); "
                        "give the full rating scale as the categories")
    return (pa - pe) / (1 - pe)


def _t_interval(estimate: float, se: float, n: int, confidence: float) -> Interval:
    if not 0 < confidence < 1:
        raise DataError(f"confidence must lie between 0 and 1; got {confidence}")
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * se
    return Interval(float(estimate), float(estimate - half), float(min(1.0, estimate + half)), confidence)


def _table(ratings: Ratings, categories: Sequence[Any] | None, *, raters: int) -> RatingTable:
    table = rating_table(ratings, categories)
    if len(table.raters) < raters:
        raise DataError(f"agreement needs at least {raters} raters; the ratings have one ({table.raters[0]})")
    if (table.counts.sum(axis=1) >= 2).sum() < 2:
        raise DataError("agreement needs at least two items rated by two or more raters")
    if len(table.categories) < 2:
        raise DataError(f"every rating is {_show(table.categories[0])}: agreement needs at least two categories; "
                        "give the full rating scale as the categories")
    return table


def _require_order(table: RatingTable, what: str) -> None:
    if not table.ordered:
        shown = ", ".join(map(_show, table.categories[:4]))
        raise DataError(f"{what} need ordered ratings, but these are labels ({shown}); use numbers, or give "
                        "the categories in order (--categories low,mid,high)")


def _rows_of(table: RatingTable) -> list[tuple[str, str, Category]]:
    return [(item, rater, table.categories[code]) for item, row in zip(table.items, table.codes)
            for rater, code in zip(table.raters, row) if code >= 0]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, float) and np.isnan(value))


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)
