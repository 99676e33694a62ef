"""Bootstrap confidence intervals for benchmark scores, and for the difference between two models.

Percentile bootstrap (Efron & Tibshirani 1993, §13.3): resample the per-sample scores with
replacement, take the statistic of each resample, and read the interval off the resampled values'
quantiles. Seeded, so a report is reproducible; vectorised with numpy in blocks so 10,000 resamples
of MMLU's 14,042 questions need about 64 MB at a time, not 2 GB.

- `bootstrap_mean`: a plain average over samples (GSM8K, HumanEval).
- `bootstrap_macro_mean`: the average of per-group averages (MMLU subjects, BBH tasks); resampling
  happens within each group, so every resample keeps every group at its own size.
- `paired_bootstrap`: two models on the same samples. The same resample indices go to both, which
  is the bootstrap of the per-sample differences: it accounts for the two scores being correlated
  (easy questions are easy for both), so its interval is much narrower than two separate ones.
- `win_tie_loss`: the three rates of a pairwise comparison (Llama 2, §3.4.2: win / tie / loss with
  95% CIs), each resampled over the same draws of items.
- `resample_counts`: the bootstrap as item multiplicities, for statistics that are not plain means
  but sums over items (Krippendorff's ordinal alpha, from the items' coincidence matrices).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from llama2.errors import DataError
from llama2.evaluate.benchmarks.base import SampleResult

N_RESAMPLES = 10_000
_BLOCK_ELEMENTS = 1 << 22  # resampled values held at once: 32 MB of int64 indices + 32 MB of values


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval [low, high]."""

    estimate: float
    low: float
    high: float
    confidence: float = 0.95

    def to_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "confidence": self.confidence}


def bootstrap_mean(values: Sequence[float] | np.ndarray, *, confidence: float = 0.95,
                   n_resamples: int = N_RESAMPLES, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of the mean of `values`."""
    x = _as_array(values)
    means = _resampled_means(x, n_resamples, np.random.default_rng(seed))
    return percentile_interval(float(x.mean()), means, confidence)


def bootstrap_macro_mean(values: Sequence[float] | np.ndarray, groups: Sequence[str], *, confidence: float = 0.95,
                         n_resamples: int = N_RESAMPLES, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of the mean over groups of each group's mean (resampled within groups)."""
    x = _as_array(values)
    labels = np.asarray(groups, dtype=object)
    if labels.shape != x.shape:
        raise DataError(f"{len(labels)} group labels for {len(x)} values; give one group per value")
    rng = np.random.default_rng(seed)
    names = sorted(set(labels.tolist()))
    group_means = np.empty((len(names), n_resamples))
    point = np.empty(len(names))
    for row, name in enumerate(names):
        members = x[labels == name]
        point[row] = members.mean()
        group_means[row] = _resampled_means(members, n_resamples, rng)
    return percentile_interval(float(point.mean()), group_means.mean(axis=0), confidence)


def paired_bootstrap(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                     groups: Sequence[str] | None = None, confidence: float = 0.95,
                     n_resamples: int = N_RESAMPLES, seed: int = 0) -> Interval:
    """Interval of score(a) - score(b) for two models scored on the same samples, in the same order.
    With `groups`, the score is the macro mean (the difference of macro means is the macro mean of
    differences, so one within-group bootstrap of the differences is the paired bootstrap)."""
    x, y = _as_array(a), _as_array(b)
    if x.shape != y.shape:
        raise DataError(f"paired bootstrap needs the same samples for both models; got {len(x)} and {len(y)} scores")
    if groups is None:
        return bootstrap_mean(x - y, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return bootstrap_macro_mean(x - y, groups, confidence=confidence, n_resamples=n_resamples, seed=seed)


OUTCOMES = ("win", "tie", "loss")


@dataclass(frozen=True)
class WinTieLoss:
    """Win, tie and loss rates of model A against model B over `n` compared items, each with its
    bootstrap interval. The three estimates sum to 1."""

    win: Interval
    tie: Interval
    loss: Interval
    n: int

    def to_dict(self) -> dict[str, object]:
        return {"win": self.win.to_dict(), "tie": self.tie.to_dict(), "loss": self.loss.to_dict(), "n": self.n}


def win_tie_loss(outcomes: Sequence[str], *, confidence: float = 0.95, n_resamples: int = N_RESAMPLES,
                 seed: int = 0) -> WinTieLoss:
    """Rates of "win", "tie" and "loss" (model A's side of each item) with percentile-bootstrap
    intervals over items. One seed gives the three the same resamples, so each resample's three
    rates still sum to 1."""
    if not len(outcomes):
        raise DataError("no outcomes to count; give one of win, tie or loss per compared item")
    for position, outcome in enumerate(outcomes):
        if outcome not in OUTCOMES:
            raise DataError(f"outcome {position} is {outcome!r}; each outcome must be one of {', '.join(OUTCOMES)} "
                            "(from model A's side)")
    labels = np.asarray(outcomes, dtype=object)
    rates = [bootstrap_mean((labels == outcome).astype(np.float64), confidence=confidence,
                            n_resamples=n_resamples, seed=seed) for outcome in OUTCOMES]
    return WinTieLoss(*rates, n=len(labels))


def resample_counts(n: int, n_resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """How often each of `n` items is drawn in each of `n_resamples` resamples with replacement:
    float arrays of shape (block, n), blocks kept to `_BLOCK_ELEMENTS` values, rows summing to n.
    A statistic that is a sum over items becomes `counts @ per_item`."""
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n_resamples, block):
        rows = min(block, n_resamples - start)
        draws = rng.integers(0, n, size=(rows, n)) + (np.arange(rows) * n)[:, None]
        yield np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def metric_interval(results: Sequence[SampleResult], metric: str, *, seed: int = 0) -> Interval:
    """Interval of one metric over scored samples: a macro mean when every sample has a group and
    there are several groups (as MMLU and BBH are reported), a plain mean otherwise."""
    values = [_metric(result, metric) for result in results]
    groups = _groups(results)
    if groups is None:
        return bootstrap_mean(values, seed=seed)
    return bootstrap_macro_mean(values, groups, seed=seed)


def paired_difference(first: Sequence[SampleResult], second: Sequence[SampleResult], metric: str, *,
                      seed: int = 0) -> tuple[Interval, int]:
    """Interval of metric(second) - metric(first) over the samples both scored (matched by id), and
    how many samples that is. Same estimator choice as `metric_interval`."""
    by_id = {result.sample_id: result for result in first}
    pairs = [(by_id[result.sample_id], result) for result in second if result.sample_id in by_id]
    if not pairs:
        raise DataError(f"no sample was scored for both models; cannot compare {metric}")
    groups = _groups([b for _, b in pairs])
    interval = paired_bootstrap([_metric(b, metric) for _, b in pairs], [_metric(a, metric) for a, _ in pairs],
                                groups=groups, seed=seed)
    return interval, len(pairs)


def estimator_name(results: Sequence[SampleResult]) -> str:
    """"macro" or "mean": which average `metric_interval` takes for these results."""
    return "mean" if _groups(results) is None else "macro"


def _groups(results: Sequence[SampleResult]) -> list[str] | None:
    groups = [result.group for result in results]
    if any(group is None for group in groups) or len(set(groups)) < 2:
        return None
    return groups  # type: ignore[return-value]


def _metric(result: SampleResult, metric: str) -> float:
    try:
        return float(result.metrics[metric])
    except KeyError:
        raise DataError(f"sample {result.sample_id} has no metric {metric!r} (it has {sorted(result.metrics)})") from None


def _as_array(values: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise DataError(f"bootstrap needs a non-empty list of numbers; got shape {x.shape}")
    return x


def _resampled_means(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `n_resamples` resamples of `x` with replacement, shape (n_resamples,)."""
    n = len(x)
    block = max(1, _BLOCK_ELEMENTS // n)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        means[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return means


def percentile_interval(estimate: float, resampled: np.ndarray, confidence: float) -> Interval:
    """`estimate` with the central `confidence` share of its bootstrap replicates `resampled`."""
    if not 0 < confidence < 1:
        raise DataError(f"confidence must lie between 0 and 1; got {confidence}")
    alpha = 1 - confidence
    low, high = np.percentile(resampled, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return Interval(estimate, float(low), float(high), confidence)
