"""Bradley-Terry ladders against choix (the maximum-likelihood and penalised fits), hand-computed
cases, the bootstrap against scipy's bootstrap of choix fits, online Elo by hand, and votes files."""

from __future__ import annotations

import json
import math

import choix
import numpy as np
import pytest
from scipy import stats as scipy_stats

from llama2.errors import DataError
from llama2.evaluate.ladder import Vote, bradley_terry, online_elo, read_votes

MODELS = ["llama-2-70b-chat", "gpt-3.5-turbo", "palm-bison", "falcon-40b", "vicuna-33b", "mpt-7b-chat"]
STRENGTHS = [0.6, 0.5, 0.1, -0.7, 0.0, -0.9]  # natural-log strengths the votes are drawn from


def simulated_votes(seed: int, n: int, models=MODELS, strengths=STRENGTHS, tie_band: float = 0.12) -> list[Vote]:
    """Votes between random pairs: a tie when the draw falls near the Bradley-Terry probability."""
    rng = np.random.default_rng(seed)
    votes = []
    for _ in range(n):
        i, j = rng.choice(len(models), size=2, replace=False)
        p = 1 / (1 + math.exp(strengths[j] - strengths[i]))
        u = rng.random()
        votes.append(Vote(models[i], models[j], "tie" if abs(u - p) < tie_band else "a" if u < p else "b"))
    return votes


def choix_pairs(votes, models):
    """choix takes (winner, loser) pairs; doubling every vote lets a tie be one win each way."""
    index = {model: m for m, model in enumerate(models)}
    pairs = []
    for vote in votes:
        a, b = index[vote.model_a], index[vote.model_b]
        pairs += {"a": [(a, b), (a, b)], "b": [(b, a), (b, a)], "tie": [(a, b), (b, a)]}[vote.winner]
    return pairs


def elo_of(theta):
    theta = np.asarray(theta)
    return 1000 + 400 / math.log(10) * (theta - theta.mean())


def ratings_in(ladder, models):
    by_model = {rating.model: rating.rating for rating in ladder.ratings}
    return np.array([by_model[model] for model in models])


def test_maximum_likelihood_equals_choix():
    votes = simulated_votes(0, 600)
    ladder = bradley_terry(votes, prior=0, n_bootstrap=0)
    theta = choix.ilsr_pairwise(len(MODELS), choix_pairs(votes, MODELS), alpha=0.0, tol=1e-12, max_iter=1000)
    assert ratings_in(ladder, MODELS) == pytest.approx(elo_of(theta), abs=1e-6)
    assert [r.rating for r in ladder.ratings] == sorted((r.rating for r in ladder.ratings), reverse=True)
    assert np.mean([r.rating for r in ladder.ratings]) == pytest.approx(1000)


def test_penalised_fit_equals_choix_map_estimate():
    votes = simulated_votes(1, 200)
    prior = 0.5  # strong, so that the penalty visibly moves the ratings
    ladder = bradley_terry(votes, prior=prior, n_bootstrap=0)
    # choix's penalty is alpha * |theta|^2 on doubled votes: alpha = 2 * prior.
    theta = choix.opt_pairwise(len(MODELS), choix_pairs(votes, MODELS), alpha=2 * prior, tol=1e-12)
    assert ratings_in(ladder, MODELS) == pytest.approx(elo_of(theta), abs=1e-6)
    mle = ratings_in(bradley_terry(votes, prior=0, n_bootstrap=0), MODELS)
    assert np.ptp(ratings_in(ladder, MODELS)) < np.ptp(mle) - 10  # shrunk towards the mean


def test_default_prior_barely_moves_a_study_of_hundreds_of_votes():
    votes = simulated_votes(2, 400)
    default = ratings_in(bradley_terry(votes, n_bootstrap=0), MODELS)
    assert np.abs(default - ratings_in(bradley_terry(votes, prior=0, n_bootstrap=0), MODELS)).max() < 0.5


def test_two_models_by_hand_ties_count_half():
    # A wins 3 of 4: p_A / (p_A + p_B) = 3/4, so the gap is 400 * log10(3).
    wins = [Vote("A", "B", "a")] * 3 + [Vote("A", "B", "b")]
    with_ties = [Vote("A", "B", "a")] * 2 + [Vote("B", "A", "tie")] * 2  # 2 + 1 wins for A, 0 + 1 for B
    for votes in (wins, with_ties):
        ladder = bradley_terry(votes, prior=0, n_bootstrap=0)
        assert [r.model for r in ladder.ratings] == ["A", "B"]
        assert ladder.ratings[0].rating - ladder.ratings[1].rating == pytest.approx(400 * math.log10(3), abs=1e-9)
        assert ladder.win_probability("A", "B") == pytest.approx(0.75, abs=1e-12)
    a = bradley_terry(with_ties, n_bootstrap=0).ratings[0]
    assert (a.games, a.wins, a.ties, a.losses) == (4, 2, 2, 0)


def test_anchor_fixes_one_model_at_1000_and_keeps_the_gaps():
    votes = simulated_votes(3, 300)
    mean_anchored = bradley_terry(votes, n_bootstrap=200)
    anchored = bradley_terry(votes, n_bootstrap=200, anchor="gpt-3.5-turbo")
    gpt = next(r for r in anchored.ratings if r.model == "gpt-3.5-turbo")
    assert (gpt.rating, gpt.low, gpt.high) == pytest.approx((1000, 1000, 1000))
    gaps = ratings_in(anchored, MODELS) - ratings_in(mean_anchored, MODELS)
    assert np.ptp(gaps) == pytest.approx(0, abs=1e-9)
    with pytest.raises(DataError, match="anchor 'gpt-4' is not among the voted models"):
        bradley_terry(votes, anchor="gpt-4")


def test_bootstrap_interval_agrees_with_scipy_bootstrap_of_choix_fits():
    models, strengths = MODELS[:4], STRENGTHS[:4]
    votes = simulated_votes(4, 300, models, strengths)
    ours = bradley_terry(votes, n_bootstrap=2000, prior=0, seed=5)
    pairs_per_vote = [choix_pairs([vote], models) for vote in votes]

    def rating_of_first(indices):
        pairs = [pair for i in indices.astype(int) for pair in pairs_per_vote[i]]
        return elo_of(choix.ilsr_pairwise(len(models), pairs, alpha=0.0, tol=1e-10))[0]

    reference = scipy_stats.bootstrap((np.arange(len(votes)),), rating_of_first, vectorized=False,
                                      method="percentile", n_resamples=1000, rng=np.random.default_rng(6))
    first = next(r for r in ours.ratings if r.model == models[0])
    # Monte-Carlo tolerance: these quantiles move by ~2 points between seeds; the interval is ~80 wide.
    assert first.low == pytest.approx(reference.confidence_interval.low, abs=8)
    assert first.high == pytest.approx(reference.confidence_interval.high, abs=8)
    assert all(r.low < r.rating < r.high for r in ours.ratings)
    again = bradley_terry(votes, n_bootstrap=300, seed=5)
    assert again.ratings == bradley_terry(votes, n_bootstrap=300, seed=5).ratings  # seeded


def test_an_unbeaten_model_needs_the_prior():
    votes = [Vote("A", "B", "a"), Vote("A", "C", "a"), Vote("B", "C", "a"), Vote("C", "B", "tie")]
    with pytest.raises(DataError, match="Bradley-Terry strength is infinite; use a prior > 0"):
        bradley_terry(votes, prior=0, n_bootstrap=0)
    ladder = bradley_terry(votes, n_bootstrap=100)
    assert ladder.ratings[0].model == "A" and all(math.isfinite(r.rating) for r in ladder.ratings)
    cycle = [Vote(x, y, "a") for x, y in ("AB", "BA", "BC", "CB", "CA", "AC")]  # the MLE exists: all 1000
    assert [r.rating for r in bradley_terry(cycle, prior=0, n_bootstrap=0).ratings] == pytest.approx([1000] * 3)
    with pytest.raises(DataError, match="in a bootstrap resample of the votes some model won, or lost, every"):
        bradley_terry(cycle, prior=0, n_bootstrap=100)  # many resamples leave some model unbeaten


def test_win_matrix_and_json():
    ladder = bradley_terry(simulated_votes(8, 200), n_bootstrap=50)
    matrix = np.array(ladder.win_matrix())
    assert matrix + matrix.T == pytest.approx(np.ones_like(matrix))
    assert (np.diff(matrix[0][1:]) >= 0).all()  # the best model's chances grow down the ladder
    data = json.loads(json.dumps(ladder.to_dict()))
    assert data["win_probability"]["models"] == [r.model for r in ladder.ratings]
    assert data["ratings"][0].keys() == {"model", "rating", "low", "high", "games", "wins", "ties", "losses"}
    assert sum(r["games"] for r in data["ratings"]) == 2 * data["n_votes"] == 400


def test_online_elo_by_hand():
    votes = [Vote("A", "B", "a"), Vote("B", "A", "tie")]
    ratings = online_elo(votes, k=4)
    first = 4 * (1 - 0.5)  # equal ratings: expected score 0.5
    expected_b = 1 / (1 + 10 ** ((1000 + first - (1000 - first)) / 400))
    second = 4 * (0.5 - expected_b)
    assert ratings == pytest.approx({"A": 1000 + first - second, "B": 1000 - first + second})
    assert list(ratings) == ["A", "B"]
    votes = simulated_votes(9, 300)
    assert online_elo(votes, seed=1) == online_elo(votes, seed=1) != online_elo(votes, seed=2)
    assert list(online_elo(votes * 5, k=8))[0] == bradley_terry(votes, n_bootstrap=0).ratings[0].model


def test_read_votes(tmp_path):
    (tmp_path / "v.csv").write_text("model_a,model_b,winner,prompt\nx,y,A,p1\nx,y,Tie,p2\n\ny,x, b ,p3\n")
    assert read_votes(tmp_path / "v.csv") == [Vote("x", "y", "a"), Vote("x", "y", "tie"), Vote("y", "x", "b")]
    (tmp_path / "v.jsonl").write_text('{"model_a": "x", "model_b": "y", "winner": "b"}\n')
    assert read_votes(tmp_path / "v.jsonl") == [Vote("x", "y", "b")]


@pytest.mark.parametrize(("text", "message"), [
    ("model_a,model_b,winner\nx,y,a\nx,y,Draw\n", r"v\.csv:3: winner 'draw' is not one of a, b, tie"),
    ("model_a,model_b\nx,y\n", r"v\.csv:1: no column 'winner'"),
    ("model_a,model_b,winner\nx,x,a\n", r"v\.csv:2: 'x' is compared with itself"),
    ("model_a,model_b,winner\n,y,a\n", r"v\.csv:2: empty model name"),
    ("model_a,model_b,winner\n", "no votes"),
])
def test_bad_votes_name_the_line(tmp_path, text, message):
    (tmp_path / "v.csv").write_text(text)
    with pytest.raises(DataError, match=message) as caught:
        read_votes(tmp_path / "v.csv")
    assert "\n" not in str(caught.value)


def test_bad_votes_in_code():
    with pytest.raises(DataError, match="winner 'A wins' is not one of a, b, tie"):
        Vote("x", "y", "A wins")
    with pytest.raises(DataError, match="no votes"):
        bradley_terry([])
    with pytest.raises(DataError, match="no model 'z' on the ladder"):
        bradley_terry([Vote("x", "y", "a"), Vote("y", "x", "a")], n_bootstrap=0).win_probability("x", "z")
