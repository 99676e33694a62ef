"""lm-eval's scoring conventions (whitespace move, rolling windows) and reading echoed log-probs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llama2.errors import ProviderError, UnsupportedError
from llama2.providers.echo import echo_arguments, score_echo
from llama2.providers.scoring import move_trailing_space, rolling_windows


@pytest.mark.parametrize(
    ("context", "continuation", "expected"),
    [
        ("Answer: ", "A", ("Answer:", " A")),
        ("Answer:\n\n", "B", ("Answer:", "\n\nB")),
        ("Answer:", " C", ("Answer:", " C")),
        ("", "text", ("", "text")),
    ],
)
def test_trailing_whitespace_moves_to_the_continuation(context, continuation, expected):
    assert move_trailing_space(context, continuation) == expected


def test_rolling_windows_by_hand():
    windows = list(rolling_windows(list(range(10)), prefix=-1, max_len=4))
    # lm-eval's docstring example: inputs BOS 0 1 2 | 3 4 5 6 | 5 6 7 8, each token predicted once
    assert windows == [([-1], [0, 1, 2, 3]), ([3], [4, 5, 6, 7]), ([5, 6, 7], [8, 9])]
    assert list(rolling_windows([], prefix=-1, max_len=4)) == []


@pytest.mark.parametrize(("n", "max_len"), [(1, 4), (4, 4), (5, 4), (10, 3), (37, 8), (100, 1)])
def test_rolling_windows_equal_lm_evals(n, max_len):
    utils = pytest.importorskip("lm_eval.utils")
    tokens = list(range(100, 100 + n))
    theirs = [
        utils.make_disjoint_window(pair)
        for pair in utils.get_rolling_token_windows(
            token_list=tokens, prefix_token=1, max_seq_len=max_len, context_len=1
        )
    ]
    assert list(rolling_windows(tokens, 1, max_len)) == theirs
    scored = [t for _, targets in theirs for t in targets]
    assert scored == tokens  # every token exactly once
    assert all(len(c) + len(t) - 1 <= max_len for c, t in theirs)


def echoed(tokens: list[str], values: list[float | None], tops: list[dict | None]):
    """An echoed completion choice's logprobs, with offsets counted over the tokens' own text."""
    offsets, at = [], 0
    for token in tokens:
        offsets.append(at)
        at += len(token)
    return SimpleNamespace(tokens=tokens, text_offset=offsets, token_logprobs=values, top_logprobs=tops)


def test_echo_request_scores_without_sampling():
    args = echo_arguments("m", "Question? Answer:", " A")
    assert args == {
        "model": "m", "prompt": "Question? Answer: A", "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0
    }


def test_echo_sums_the_continuation_and_drops_the_generated_token():
    tokens = ["Answer", ":", " yes", " indeed", "!"]
    values = [None, -1.0, -0.5, -0.25, -3.0]
    tops = [None, {":": -1.0}, {" yes": -0.5}, {" no": -0.1, " indeed": -0.25}, {"!": -3.0}]
    score = score_echo("m", "Answer: yes indeed!", echoed(tokens, values, tops), "Answer:", " yes indeed")
    assert score.logprob == pytest.approx(-0.75) and score.is_greedy is False


def test_echo_with_llama_cpp_style_offsets():
    """llama.cpp counts offsets over " Once upon" (SentencePiece's space) while its text is "Once upon"."""
    tokens = [" Once", " upon", " a", " time", " What"]
    values = [None, -6.3, -6.4, -6.2, -5.7]
    tops = [None, {" upon": -6.3}, {"im": -5.8, " a": -6.4}, {" time": -6.2}, {" What": -5.7}]
    score = score_echo("m", "Once upon a time What", echoed(tokens, values, tops), "Once upon", " a time")
    assert score.logprob == pytest.approx(-12.6) and score.is_greedy is False
    score = score_echo("m", "Once upon a time What", echoed(tokens, values, tops), "Once upon a", " time")
    assert score.logprob == pytest.approx(-6.2) and score.is_greedy is True


def test_echo_errors():
    with pytest.raises(UnsupportedError, match="loglikelihood: false"):
        score_echo("m", "Hi there", None, "Hi", " there")
    tokens, values, tops = ["Hi", " there", "!"], [None, -1.0, -2.0], [None, {" there": -1.0}, {"!": -2.0}]
    with pytest.raises(ProviderError, match="non-empty context"):
        score_echo("m", "Hi there!", echoed(tokens, values, tops), "", "Hi there")
