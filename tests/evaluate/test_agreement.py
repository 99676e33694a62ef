"""Agreement coefficients against published figures and reference packages on the same data:
irrCAC (Gwet's AC1/AC2, Fleiss, Krippendorff, Cohen, with their standard errors and intervals),
krippendorff (alpha at every level), scikit-learn (Cohen's kappa) and statsmodels (Fleiss' kappa)."""

from __future__ import annotations

import json
import math
import os

import krippendorff
import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss

from llama2.errors import DataError
from llama2.evaluate.agreement import (WEIGHTS, agreement_report, cohen_kappa, fleiss_kappa, gwet_ac,
                                       judge_human_agreement, krippendorff_alpha, percent_agreement,
                                       rating_table, read_ratings)

NAN = math.nan
EXACT = 1e-9  # irrCAC is asked for 15 digits; both sides are the same closed forms

# Gwet, Handbook of Inter-Rater Reliability (4th ed.): 12 units, 4 raters, 5 categories, missing
# ratings; also Krippendorff (2011), "Computing Krippendorff's alpha-reliability", §C (the same data).
GWET_4_RATERS = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]
# Krippendorff (2011), §B: 3 observers, 15 units.
KRIPPENDORFF_3_OBSERVERS = [
    [NAN, NAN, NAN, NAN, NAN, 3, 4, 1, 2, 1, 1, 3, 3, NAN, 3],
    [1, NAN, 2, 1, 3, 3, 4, 3, NAN, NAN, NAN, NAN, NAN, NAN, NAN],
    [NAN, NAN, 2, 1, 3, 4, 4, NAN, 2, 1, 1, 3, 3, NAN, 4],
]


def long_rows(matrix, raters=None):
    """(item, rater, rating) rows from a raters x items matrix with NaN for missing ratings."""
    raters = raters or [f"r{j + 1}" for j in range(len(matrix))]
    return [(f"u{i + 1}", rater, value) for j, rater in enumerate(raters) for i, value in enumerate(matrix[j])
            if not (isinstance(value, float) and math.isnan(value))]


def random_matrix(seed, n_items=60, n_raters=5, scale=7, missing=0.3):
    """Likert-like ratings: each item has a true level, raters add noise, some ratings are missing."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, scale + 1, size=n_items)
    ratings = np.clip(truth + rng.integers(-1, 2, size=(n_raters, n_items)), 1, scale).astype(float)
    ratings[rng.random(ratings.shape) < missing] = NAN
    return ratings.tolist()


# --- published figures ------------------------------------------------------------------------

def test_gwet_handbook_example_ac1_and_fleiss():
    rows = long_rows(GWET_4_RATERS)
    ac1, fleiss = gwet_ac(rows), fleiss_kappa(rows)
    assert ac1.statistic == "Gwet's AC1" and ac1.n_items == 12
    assert (round(ac1.estimate, 5), round(ac1.se, 5), round(ac1.interval.low, 5), ac1.interval.high) == (
        0.77544, 0.14295, 0.46081, 1.0)
    assert (round(ac1.pa, 5), round(ac1.pe, 5)) == (0.81818, 0.19032)
    assert (round(fleiss.estimate, 5), round(fleiss.se, 5), round(fleiss.interval.low, 5)) == (0.76117, 0.15302, 0.42438)


def test_krippendorff_paper_examples():
    four = long_rows(GWET_4_RATERS)
    published = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849, "ratio": 0.797}
    assert {level: round(krippendorff_alpha(four, level=level, n_resamples=200).estimate, 3)
            for level in published} == published
    three = long_rows(KRIPPENDORFF_3_OBSERVERS)
    assert round(krippendorff_alpha(three, level="nominal").estimate, 6) == 0.691358
    assert round(krippendorff_alpha(three, level="interval").estimate, 6) == 0.810845


# --- irrCAC, the reference implementation of Gwet's book ------------------------------------------

@pytest.fixture(scope="module")
def irrcac():
    """irrCAC pins scipy==1.12.0 (and so numpy<1.29), which would downgrade the whole environment, so
    it is installed apart: `pip install --no-deps irrCAC==0.4.4` (.ci/run does)."""
    try:
        import irrCAC.datasets
        import irrCAC.raw
        import irrCAC.table
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("irrCAC is not installed: pip install --no-deps irrCAC==0.4.4")
    return irrCAC


def irrcac_frame(rows):
    """irrCAC's layout: items down, raters across, NaN where a rater skipped an item."""
    table = rating_table(rows)
    frame = pd.DataFrame(index=list(table.items), columns=list(table.raters), dtype=object)
    for item, rater, rating in rows:
        frame.loc[str(item), rater] = rating
    return frame.astype(float) if all(isinstance(r, (int, float)) for _, _, r in rows) else frame


def assert_matches(ours, reference):
    est = reference["est"]
    assert ours.estimate == pytest.approx(est["coefficient_value"], abs=EXACT)
    assert ours.se == pytest.approx(est["se"], abs=EXACT)
    assert ours.interval.low == pytest.approx(est["confidence_interval"][0], abs=EXACT)
    assert ours.interval.high == pytest.approx(est["confidence_interval"][1], abs=EXACT)
    assert ours.pa == pytest.approx(est["pa"], abs=EXACT) and ours.pe == pytest.approx(est["pe"], abs=EXACT)


def numeric_datasets(irrcac):
    """irrCAC's numeric example datasets, plus random Likert ratings with missing values."""
    four = irrcac.datasets.raw_4raters()
    observers = irrcac.datasets.raw_5observers()
    frames = {"raw_4raters": four, "raw_5observers": observers}
    sets = {name: [(str(item), rater, value) for rater in frame.columns for item, value in frame[rater].items()
                   if not math.isnan(value)] for name, frame in frames.items()}
    sets["random_7pt"] = long_rows(random_matrix(0))
    sets["random_3pt_sparse"] = long_rows(random_matrix(1, n_items=90, n_raters=4, scale=3, missing=0.5))
    return sets


@pytest.mark.parametrize("weights", WEIGHTS)
def test_gwet_and_fleiss_equal_irrcac(irrcac, weights):
    for name, rows in numeric_datasets(irrcac).items():
        categories = sorted({float(r) for _, _, r in rows})
        reference = irrcac.raw.CAC(irrcac_frame(rows), weights=weights, categories=categories, digits=15)
        assert_matches(gwet_ac(rows, weights=weights), reference.gwet())
        assert_matches(fleiss_kappa(rows, weights=weights), reference.fleiss())
        assert gwet_ac(rows, weights=weights).statistic == ("Gwet's AC1" if weights == "identity" else "Gwet's AC2"), name


def test_unused_categories_count_as_in_irrcac(irrcac):
    rows = long_rows(random_matrix(2, scale=5))
    scale = [1, 2, 3, 4, 5, 6, 7]  # 6 and 7 never used: AC1's chance agreement and the weights change
    for weights in ("identity", "quadratic", "ordinal"):
        reference = irrcac.raw.CAC(irrcac_frame(rows), weights=weights, categories=[float(c) for c in scale], digits=15)
        assert_matches(gwet_ac(rows, weights=weights, categories=scale), reference.gwet())
    assert gwet_ac(rows, categories=scale).estimate != pytest.approx(gwet_ac(rows).estimate, abs=1e-3)


@pytest.mark.parametrize(("level", "weights"), [("nominal", "identity"), ("interval", "quadratic"), ("ratio", "ratio")])
def test_krippendorff_alpha_and_its_standard_error_equal_irrcac(irrcac, level, weights):
    for name, rows in numeric_datasets(irrcac).items():
        categories = sorted({float(r) for _, _, r in rows})
        if level == "ratio" and categories[0] <= 0:
            continue  # irrCAC's ratio weights divide by zero at 0
        reference = irrcac.raw.CAC(irrcac_frame(rows), weights=weights, categories=categories, digits=15)
        ours = krippendorff_alpha(rows, level=level)
        assert_matches(ours, reference.krippendorff())
        assert ours.ci_method == "analytic (Gwet)", name


def test_text_labels_with_an_order_equal_irrcac(irrcac):
    """irrCAC's text datasets; labels count as 1..q in the order given."""
    for frame in (irrcac.datasets.raw_g1g2(), irrcac.datasets.raw_gender(), irrcac.datasets.raw_ben_gerry()):
        frame = frame.reset_index(drop=True).astype(object)
        rows = [(str(item), rater, value) for rater in frame.columns for item, value in frame[rater].items()
                if isinstance(value, str)]
        categories = sorted({r for _, _, r in rows})
        for weights in ("identity", "quadratic"):
            reference = irrcac.raw.CAC(frame.where(frame.notna(), NAN), weights=weights, categories=categories,
                                       digits=15)
            assert_matches(gwet_ac(rows, weights=weights, categories=categories), reference.gwet())
            assert_matches(fleiss_kappa(rows, weights=weights, categories=categories), reference.fleiss())


@pytest.mark.parametrize("weights", ["unweighted", "linear", "quadratic"])
def test_cohen_kappa_equals_irrcac_and_scikit_learn(irrcac, weights):
    first, second = random_matrix(3, n_items=120, n_raters=2, missing=0.0)
    rows = long_rows([first, second], raters=["judge", "human"])
    ours = cohen_kappa(rows, weights=weights)
    assert ours.estimate == pytest.approx(
        cohen_kappa_score(first, second, weights=None if weights == "unweighted" else weights), abs=EXACT)
    scale = sorted(set(first) | set(second))
    table = pd.crosstab(pd.Series(first), pd.Series(second)).reindex(index=scale, columns=scale, fill_value=0)
    reference = irrcac.table.CAC(table, weights="identity" if weights == "unweighted" else weights, digits=15)
    assert_matches(ours, reference.cohen())


# --- krippendorff, scikit-learn, statsmodels --------------------------------------------------

@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_krippendorff_alpha_equals_the_krippendorff_package(level):
    from_zero = (np.array(random_matrix(10)) - 1).tolist()  # a scale starting at 0 (ratio: 0 is absolute)
    for matrix in (GWET_4_RATERS, KRIPPENDORFF_3_OBSERVERS, random_matrix(4), random_matrix(5, scale=5, missing=0.6),
                   from_zero):
        expected = krippendorff.alpha(reliability_data=np.array(matrix, dtype=float), level_of_measurement=level)
        assert krippendorff_alpha(long_rows(matrix), level=level, n_resamples=100).estimate == pytest.approx(
            expected, abs=EXACT)


def test_ordinal_alpha_interval_agrees_with_scipy_bootstrap_of_the_krippendorff_package():
    matrix = np.array(random_matrix(6, n_items=150, n_raters=3, missing=0.2))
    pairable = matrix[:, (~np.isnan(matrix)).sum(axis=0) >= 2]  # the items alpha uses
    ours = krippendorff_alpha(long_rows(pairable.tolist()), level="ordinal", seed=1)

    def alpha_of(indices):
        return krippendorff.alpha(reliability_data=pairable[:, indices.astype(int)], level_of_measurement="ordinal")

    reference = scipy_stats.bootstrap((np.arange(pairable.shape[1]),), alpha_of, vectorized=False,
                                      method="percentile", n_resamples=3000, rng=np.random.default_rng(2))
    assert ours.ci_method == "bootstrap (items)" and ours.se is None
    # Monte-Carlo tolerance: the 2.5%/97.5% quantiles move by ~0.005 between seeds at these sizes.
    assert ours.interval.low == pytest.approx(reference.confidence_interval.low, abs=0.02)
    assert ours.interval.high == pytest.approx(reference.confidence_interval.high, abs=0.02)
    assert ours.interval.low < ours.estimate < ours.interval.high


def test_fleiss_kappa_equals_statsmodels_on_complete_ratings():
    matrix = np.array(random_matrix(7, n_items=80, n_raters=6, missing=0.0))
    counts, _ = aggregate_raters(matrix.T.astype(int))
    assert fleiss_kappa(long_rows(matrix.tolist())).estimate == pytest.approx(
        statsmodels_fleiss(counts, method="fleiss"), abs=EXACT)


def test_percent_agreement_is_the_mean_share_of_agreeing_pairs():
    rows = [("a", "x", 1), ("a", "y", 1), ("a", "z", 2),  # 1 of 3 pairs agree
            ("b", "x", 3), ("b", "y", 3),                 # 1 of 1
            ("c", "x", 2), ("c", "y", 1),                 # 0 of 1
            ("d", "z", 5)]                                # rated once: not pairable
    result = percent_agreement(rows, n_resamples=2000)
    assert result.estimate == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert result.n_items == 3 and result.ci_method == "bootstrap (items)"
    assert 0 <= result.interval.low <= result.estimate <= result.interval.high <= 1


# --- judge against humans ---------------------------------------------------------------------

def test_judge_against_the_human_majority_and_each_human():
    matrix = random_matrix(8, n_items=50, n_raters=3, missing=0.0)
    humans = long_rows(matrix, raters=["ann", "bob", "cyd"])
    judge = {f"u{i + 1}": rating for i, rating in enumerate(matrix[1])}  # the judge agrees with bob exactly
    result = judge_human_agreement(judge, humans)
    assert result.per_rater["bob"].exact == 1.0 and result.per_rater["bob"].cohen_kappa.estimate == pytest.approx(1.0)
    ann = [row for row in humans if row[1] == "ann"] + [(item, "judge", r) for item, r in judge.items()]
    assert result.per_rater["ann"].cohen_kappa.estimate == pytest.approx(
        cohen_kappa(ann, weights="quadratic").estimate, abs=EXACT)
    assert result.per_rater["ann"].gwet_ac.estimate == pytest.approx(gwet_ac(ann, weights="quadratic").estimate, abs=EXACT)
    assert result.among_humans.estimate == pytest.approx(gwet_ac(humans, weights="quadratic").estimate, abs=EXACT)

    columns = np.array(matrix).T
    majority = {}
    for i, ratings in enumerate(columns):
        values, counts = np.unique(ratings, return_counts=True)
        if (counts == counts.max()).sum() == 1:
            majority[f"u{i + 1}"] = values[counts.argmax()]
    assert result.no_majority == 50 - len(majority) and result.majority.n_items == len(majority)
    expected = cohen_kappa_score([majority[i] for i in majority], [judge[i] for i in majority], weights="quadratic")
    assert result.majority.cohen_kappa.estimate == pytest.approx(expected, abs=EXACT)
    assert json.loads(json.dumps(result.to_dict()))["per_rater"]["bob"]["exact"] == 1.0


def test_judge_ratings_from_a_mapping_of_raters():
    humans = {"ann": {"q1": 1, "q2": 2, "q3": 3, "q4": 3}, "bob": {"q1": 1, "q2": 2, "q3": 2, "q4": 3}}
    result = judge_human_agreement({"q1": 1, "q2": 2, "q3": 3, "q4": 1}, humans, weights="unweighted")
    assert result.per_rater["ann"].exact == 0.75 and result.per_rater["ann"].gwet_ac.statistic == "Gwet's AC1"
    assert result.no_majority == 1 and result.majority.n_items == 3


# --- the report and reading files -------------------------------------------------------------

def test_report_lists_every_coefficient_with_its_interval():
    report = agreement_report(long_rows(random_matrix(9)), categories=range(1, 8))
    names = [(s.statistic, s.weights) for s in report.statistics]
    assert names == [("percent agreement", "identity"), ("Gwet's AC1", "identity"), ("Gwet's AC2", "quadratic"),
                     ("Gwet's AC2", "ordinal"), ("Krippendorff's alpha", "nominal"), ("Krippendorff's alpha", "ordinal"),
                     ("Krippendorff's alpha", "interval"), ("Fleiss' kappa", "identity")]
    assert all(s.interval.low <= s.estimate <= s.interval.high for s in report.statistics)
    assert report.categories == tuple(float(c) for c in range(1, 8)) and report.notes == []


def test_report_on_unordered_labels_keeps_the_nominal_coefficients():
    rows = [(f"i{i}", rater, label) for i, labels in enumerate([("safe", "safe"), ("unsafe", "safe"), ("unsafe", "unsafe"),
                                                                 ("safe", "safe"), ("refusal", "refusal")])
            for rater, label in zip(("x", "y"), labels)]
    report = agreement_report(rows)
    assert {s.weights for s in report.statistics} == {"identity", "nominal", "unweighted"}
    assert "--categories" in report.notes[0]


def test_read_ratings_from_csv_and_jsonl(tmp_path):
    (tmp_path / "r.csv").write_text("item,rater,rating,comment\nq1,ann,3,ok\nq1,bob,,skipped\nq2,ann,5,\n")
    assert read_ratings(tmp_path / "r.csv") == [("q1", "ann", "3"), ("q1", "bob", None), ("q2", "ann", "5")]
    (tmp_path / "r.jsonl").write_text('{"item": 1, "rater": "ann", "rating": 3}\n\n{"item": 1, "rater": "bob", "rating": null}\n')
    assert read_ratings(tmp_path / "r.jsonl") == [("1", "ann", 3), ("1", "bob", None)]


@pytest.mark.parametrize(("text", "suffix", "message"), [
    ("item,rater,score\nq1,a,1\n", ".csv", r"r\.csv:1: no column 'rating'"),
    ("item,rater,rating\nq1,a,1\nq2,a\n", ".csv", r"r\.csv:3: 2 fields where the header has 3"),
    ("item,rater,rating\nq1,,1\n", ".csv", r"r\.csv:2: empty item or rater"),
    ('{"item": "q1", "rater": "a", "rating": 1}\n{"item": "q2", "rating": 1}\n', ".jsonl", r"r\.jsonl:2: no field 'rater'"),
    ('{"item": "q1", "rater": "a", "rating": [1]}\n', ".jsonl", r"r\.jsonl:1: rating \[1\] is neither"),
    ("item,rater,rating\n", ".csv", "no ratings"),
    ("item,rater,rating\n", ".xlsx", "unknown file type .xlsx"),
])
def test_read_ratings_names_the_bad_line(tmp_path, text, suffix, message):
    path = tmp_path / f"r{suffix}"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_ratings(path)


def test_bad_input_is_one_line_data_error():
    one_rater = [("q1", "ann", 1), ("q2", "ann", 2)]
    labels = [("q1", "a", "good"), ("q1", "b", "bad"), ("q2", "a", "bad"), ("q2", "b", "bad")]
    numbers = long_rows(GWET_4_RATERS)
    cases = [
        (lambda: gwet_ac(one_rater), "at least 2 raters; the ratings have one"),
        (lambda: gwet_ac(labels, weights="ordinal"), "ordinal weights need ordered ratings, but these are labels"),
        (lambda: krippendorff_alpha(labels, level="interval"), "need ordered ratings"),
        (lambda: gwet_ac(numbers, weights="cubic"), "unknown weights 'cubic'"),
        (lambda: krippendorff_alpha(numbers, level="fuzzy"), "unknown level of measurement"),
        (lambda: gwet_ac(numbers, categories=[1, 2, 3]), "rating 4 is not one of the categories 1, 2, 3"),
        (lambda: gwet_ac([*numbers, ("u1", "r1", 2)]), "item 'u1' has two ratings from rater 'r1'"),
        (lambda: cohen_kappa(numbers), "Cohen's kappa compares two raters; these ratings have 4"),
        (lambda: gwet_ac([("q1", "a", 2), ("q1", "b", 2), ("q2", "a", 2), ("q2", "b", 2)]), "at least two categories"),
        (lambda: gwet_ac(numbers, confidence=95), "confidence must lie between 0 and 1"),
    ]
    for call, message in cases:
        with pytest.raises(DataError, match=message) as caught:
            call()
        assert "\n" not in str(caught.value)
    assert gwet_ac(labels, weights="ordinal", categories=["bad", "good"]).statistic == "Gwet's AC2"
