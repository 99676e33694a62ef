import torch

from llama2.generation.sampling import RowSampling, filter_top_k_top_p, sample_next


def test_top_p_keeps_tokens_until_the_mass_before_them_exceeds_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    # mass before each token: 0, .5, .8, .95 -> with p=0.6 keep the first two (Meta's rule)
    out = filter_top_k_top_p(probs, torch.tensor([0]), torch.tensor([0.6]))
    torch.testing.assert_close(out, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))


def test_top_k_and_unsorted_input():
    probs = torch.tensor([[0.1, 0.6, 0.3]])
    out = filter_top_k_top_p(probs, torch.tensor([1]), torch.tensor([1.0]))
    torch.testing.assert_close(out, torch.tensor([[0.0, 1.0, 0.0]]))


def test_no_filter_leaves_the_distribution_as_it_is_and_a_filtering_row_still_filters():
    probs = torch.softmax(torch.randn(2, 100, generator=torch.Generator().manual_seed(1)), dim=-1)
    assert filter_top_k_top_p(probs, torch.tensor([0, 0]), torch.tensor([1.0, 1.0])) is probs
    mixed = filter_top_k_top_p(probs, torch.tensor([0, 5]), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(mixed[0], probs[0])
    assert int((mixed[1] > 0).sum()) == 5


def test_greedy_rows_and_sampled_rows_mix_and_seeds_reproduce():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    params = RowSampling.build([0.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0, 0, 0], [None, 7, 7], torch.device("cpu"))
    first = sample_next(logits, params)
    assert first[0] == logits[0].argmax()
    again = RowSampling.build([0.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0, 0, 0], [None, 7, 7], torch.device("cpu"))
    assert torch.equal(sample_next(logits, again), first)


def test_sampling_frequencies_follow_the_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).repeat(4000, 1)
    params = RowSampling.build([1.0] * 4000, [1.0] * 4000, [0] * 4000, [None] * 4000, torch.device("cpu"))
    torch.manual_seed(0)
    counts = torch.bincount(sample_next(logits, params), minlength=3).float() / 4000
    torch.testing.assert_close(counts, torch.tensor([0.7, 0.2, 0.1]), atol=0.03, rtol=0)
