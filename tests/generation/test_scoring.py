"""Shared-prefix and deduplicated scoring gives the scores of scoring each request on its own."""

import random

import pytest
import torch

from llama2.generation.scoring import group_inputs, score_loglikelihood
from llama2.model.config import get_preset
from llama2.model.transformer import Transformer


@pytest.fixture(scope="module")
def model():
    return Transformer.random(get_preset("tiny"), seed=0).eval()


def direct(model, context, continuation):
    """The definition: one full forward pass over context + continuation, no cache, no sharing."""
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([context + continuation]))[0], -1)
    picked = [log_probs[len(context) - 1 + i] for i in range(len(continuation))]
    total = sum(float(row[t]) for row, t in zip(picked, continuation))
    return total, all(int(row.argmax()) == t for row, t in zip(picked, continuation))


def few_shot_requests(seed=0):
    """MMLU-shaped requests: two 'subjects' with a 60-token shared block each, three questions per
    subject, four single-token choices per question, plus multi-token and odd-length requests."""
    rng = random.Random(seed)
    requests = []
    for subject in range(2):
        shots = [1] + [rng.randrange(3, 500) for _ in range(60)]
        for _ in range(3):
            question = [rng.randrange(3, 500) for _ in range(rng.randrange(4, 12))]
            requests += [(shots + question, [choice]) for choice in (10, 11, 12, 13)]
        requests.append((shots + [7, 7], [rng.randrange(3, 500) for _ in range(5)]))
    requests += [([1, 2], [3]), ([1, 2, 3, 4], [5, 6]), ([1, 2, 3], [4, 5, 6])]
    return requests


def test_identical_inputs_run_once_and_shared_prefixes_group():
    requests = few_shot_requests()
    groups = group_inputs(requests, min_prefix=32)
    distinct = sum(len(g.inputs) for g in groups)
    # Four choices of one question share one input; so do ([1,2,3,4],[5,6]) and ([1,2,3],[4,5,6]),
    # whose inputs are both 1..5, scored from different positions.
    assert distinct == 2 * (3 + 1) + 2
    shared = [g for g in groups if g.prefix]
    assert len(shared) == 2 and all(g.prefix >= 61 and len(g.inputs) == 4 for g in shared)
    for group in groups:  # a shared prefix never swallows a scored position
        assert all(first >= group.prefix for e in group.inputs for _, first, _ in e.targets)


def test_scores_equal_scoring_each_request_alone(model):
    requests = few_shot_requests()
    got = score_loglikelihood(model, requests, batch_tokens=256, max_rows=4)
    for (context, continuation), (score, greedy) in zip(requests, got):
        want_score, want_greedy = direct(model, context, continuation)
        assert score == pytest.approx(want_score, abs=1e-4)
        assert greedy == want_greedy


def test_a_prefix_shorter_than_min_prefix_is_not_shared(model):
    requests = [([1, 5, 6, 7], [8]), ([1, 5, 6, 9], [8])]
    assert all(g.prefix == 0 for g in group_inputs(requests, min_prefix=32))
    assert [g.prefix for g in group_inputs(requests, min_prefix=2)] == [3]
    for min_prefix in (2, 32):
        got = score_loglikelihood(model, requests, min_prefix=min_prefix)
        for request, (score, _) in zip(requests, got):
            assert score == pytest.approx(direct(model, *request)[0], abs=1e-4)
