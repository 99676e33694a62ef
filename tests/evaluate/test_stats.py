"""Bootstrap intervals against scipy.stats.bootstrap (percentile method), and paired-bootstrap sanity."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from llama2.errors import DataError
from llama2.evaluate.benchmarks.base import SampleResult
from llama2.evaluate.stats import (bootstrap_macro_mean, bootstrap_mean, estimator_name, metric_interval,
                                   paired_bootstrap, paired_difference, resample_counts, win_tie_loss)

# Monte-Carlo tolerance: with 10,000 resamples the 2.5%/97.5% quantiles of a mean of ~0/1 scores
# wander by ~0.002 between seeds; 0.01 is five of those and far below the intervals' widths (~0.1).
TOLERANCE = 0.01


def scipy_interval(data, statistic, **kwargs):
    result = scipy_stats.bootstrap(data, statistic, method="percentile", n_resamples=10_000,
                                   rng=np.random.default_rng(123), **kwargs)
    return result.confidence_interval.low, result.confidence_interval.high


def test_mean_interval_agrees_with_scipy():
    scores = np.random.default_rng(0).binomial(1, 0.6, size=300).astype(float)
    ours = bootstrap_mean(scores, seed=7)
    low, high = scipy_interval((scores,), np.mean)
    assert ours.estimate == pytest.approx(scores.mean())
    assert ours.low == pytest.approx(low, abs=TOLERANCE) and ours.high == pytest.approx(high, abs=TOLERANCE)
    assert ours.low < ours.estimate < ours.high and ours.high - ours.low > 0.08


def test_macro_interval_agrees_with_scipy_resampling_each_group():
    rng = np.random.default_rng(1)
    sizes, rates = [40, 120, 15, 80], [0.3, 0.8, 0.5, 0.6]
    groups = [rng.binomial(1, p, size=n).astype(float) for n, p in zip(sizes, rates)]
    values = np.concatenate(groups)
    labels = [f"g{i}" for i, n in enumerate(sizes) for _ in range(n)]
    ours = bootstrap_macro_mean(values, labels, seed=7)
    # scipy resamples each of several samples independently (paired=False): within-group resampling.
    low, high = scipy_interval(tuple(groups), lambda *g, axis: np.mean([x.mean(axis=axis) for x in g], axis=0))
    assert ours.estimate == pytest.approx(np.mean([g.mean() for g in groups]))
    assert ours.estimate != pytest.approx(values.mean())  # the macro and micro averages differ here
    assert ours.low == pytest.approx(low, abs=TOLERANCE) and ours.high == pytest.approx(high, abs=TOLERANCE)


def test_paired_interval_agrees_with_scipy_paired():
    rng = np.random.default_rng(2)
    a = rng.binomial(1, 0.55, size=250).astype(float)
    b = np.where(rng.random(250) < 0.15, 1 - a, a)  # b agrees with a on 85% of the samples
    ours = paired_bootstrap(a, b, seed=7)
    low, high = scipy_interval((a, b), lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis), paired=True)
    assert ours.estimate == pytest.approx(a.mean() - b.mean())
    assert ours.low == pytest.approx(low, abs=TOLERANCE) and ours.high == pytest.approx(high, abs=TOLERANCE)


def test_pairing_sees_a_small_consistent_gain_that_separate_intervals_miss():
    rng = np.random.default_rng(3)
    a = rng.binomial(1, 0.5, size=400).astype(float)
    b = a.copy()
    b[np.flatnonzero(a == 0)[:24]] = 1.0  # b fixes 24 of a's mistakes and breaks nothing: +0.06
    first, second = bootstrap_mean(a), bootstrap_mean(b)
    assert second.low < first.high  # the separate intervals overlap ...
    difference = paired_bootstrap(b, a)
    assert difference.estimate == pytest.approx(0.06)
    assert 0 < difference.low < 0.06 < difference.high  # ... yet the paired one excludes zero


def test_identical_models_differ_by_exactly_zero():
    a = np.random.default_rng(4).binomial(1, 0.5, size=100).astype(float)
    difference = paired_bootstrap(a, a.copy(), groups=["x", "y"] * 50)
    assert (difference.estimate, difference.low, difference.high) == (0.0, 0.0, 0.0)


def test_seeded_and_reproducible():
    scores = np.random.default_rng(5).random(50)
    assert bootstrap_mean(scores, seed=1) == bootstrap_mean(scores, seed=1)
    assert bootstrap_mean(scores, seed=1) != bootstrap_mean(scores, seed=2)
    narrow = bootstrap_mean(scores, confidence=0.5)
    wide = bootstrap_mean(scores, confidence=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_large_samples_are_resampled_in_blocks():
    scores = np.random.default_rng(6).binomial(1, 0.45, size=14_042).astype(float)  # MMLU's test size
    interval = bootstrap_mean(scores, n_resamples=2_000)
    half_width = 1.96 * scores.std() / np.sqrt(scores.size)  # the normal approximation's
    assert interval.high - interval.low == pytest.approx(2 * half_width, rel=0.1)


def test_bad_inputs_are_data_errors():
    with pytest.raises(DataError, match="non-empty"):
        bootstrap_mean([])
    with pytest.raises(DataError, match="3 group labels for 2 values"):
        bootstrap_macro_mean([1.0, 0.0], ["a", "b", "c"])
    with pytest.raises(DataError, match="same samples"):
        paired_bootstrap([1.0, 0.0], [1.0])
    with pytest.raises(DataError, match="between 0 and 1"):
        bootstrap_mean([1.0, 0.0], confidence=95)


def results(scores, groups=None, prefix="s"):
    groups = groups or [None] * len(scores)
    return [SampleResult(f"{prefix}{i}", {"acc": float(s)}, "", "", g) for i, (s, g) in enumerate(zip(scores, groups))]


def test_metric_interval_takes_the_macro_mean_over_groups():
    grouped = results([1, 1, 1, 0], ["a", "a", "a", "b"])
    assert estimator_name(grouped) == "macro" and metric_interval(grouped, "acc").estimate == pytest.approx(0.5)
    plain = results([1, 1, 1, 0])
    assert estimator_name(plain) == "mean" and metric_interval(plain, "acc").estimate == pytest.approx(0.75)
    one_group = results([1, 1, 1, 0], ["a"] * 4)
    assert estimator_name(one_group) == "mean"
    with pytest.raises(DataError, match="sample s0 has no metric 'f1'"):
        metric_interval(plain, "f1")


def test_paired_difference_matches_samples_by_id():
    first = results([0, 0, 1, 1, 0])
    second = list(reversed(results([1, 0, 1, 1]))) + results([1], prefix="extra")  # s4 unanswered, one extra
    interval, n = paired_difference(first, second, "acc")
    assert n == 4 and interval.estimate == pytest.approx(0.25)
    with pytest.raises(DataError, match="no sample was scored for both"):
        paired_difference(first, results([1], prefix="other"), "acc")


def test_win_tie_loss_rates_agree_with_scipy():
    rng = np.random.default_rng(3)
    outcomes = rng.choice(["win", "tie", "loss"], p=[0.36, 0.31, 0.33], size=500).tolist()
    ours = win_tie_loss(outcomes, seed=4)
    assert ours.n == 500 and ours.win.estimate + ours.tie.estimate + ours.loss.estimate == pytest.approx(1)
    for outcome, interval in (("win", ours.win), ("tie", ours.tie), ("loss", ours.loss)):
        indicator = (np.array(outcomes) == outcome).astype(float)
        low, high = scipy_interval((indicator,), np.mean)
        assert interval.estimate == pytest.approx(indicator.mean())
        assert interval.low == pytest.approx(low, abs=TOLERANCE) and interval.high == pytest.approx(high, abs=TOLERANCE)
    assert win_tie_loss(outcomes, seed=4).to_dict() == ours.to_dict() and set(ours.to_dict()) == {"win", "tie", "loss", "n"}


def test_win_tie_loss_rejects_other_outcomes():
    with pytest.raises(DataError, match="outcome 1 is 'lose'; each outcome must be one of win, tie, loss"):
        win_tie_loss(["win", "lose"])
    with pytest.raises(DataError, match="no outcomes"):
        win_tie_loss([])


def test_resample_counts_draw_items_uniformly():
    blocks = list(resample_counts(7, 3000, np.random.default_rng(0)))
    counts = np.concatenate(blocks)
    assert counts.shape == (3000, 7) and (counts.sum(axis=1) == 7).all()
    assert counts.mean(axis=0) == pytest.approx(np.ones(7), abs=0.08)  # each item drawn once per resample on average
    assert counts.var(axis=0) == pytest.approx(np.full(7, 6 / 7), abs=0.1)  # binomial(7, 1/7) variance
