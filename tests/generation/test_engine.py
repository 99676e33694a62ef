import pytest
import torch

from llama2.model.transformer import Transformer
from llama2.errors import ConfigError, ContextLengthError
from llama2.generation.engine import Engine
from llama2.model.config import get_preset
from llama2.types import SamplingParams

GREEDY = SamplingParams(max_new_tokens=10, temperature=0)
PROMPTS = [[1, 5, 9, 33], [1, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]


def byte_decode(ids):
    """A stand-in detokenizer: token id = one UTF-8 byte (ids >= 256 map to 'x')."""
    return bytes(i if i < 256 else 120 for i in ids).decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def model():
    return Transformer.random(get_preset("tiny"), seed=0).eval()


def naive_greedy(model, prompt, n):
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
    return tokens[len(prompt):]


def test_ragged_batch_greedy_equals_one_prompt_at_a_time_without_cache(model):
    results = Engine(model).generate(PROMPTS, GREEDY)
    for prompt, result in zip(PROMPTS, results):
        assert result.tokens == naive_greedy(model, prompt, 10)
        assert result.finish_reason == "length" and result.prompt_tokens == len(prompt)


def test_each_row_keeps_its_own_budget_and_settings(model):
    params = [SamplingParams(max_new_tokens=n, temperature=0) for n in (2, 9, 4)]
    results = Engine(model).generate(PROMPTS, params)
    assert [len(r.tokens) for r in results] == [2, 9, 4]
    assert results[1].tokens == naive_greedy(model, PROMPTS[1], 9)


def test_seeded_sampling_does_not_depend_on_batch_neighbours(model):
    sampled = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.95, seed=123)
    alone = Engine(model).generate([PROMPTS[0]], sampled)[0].tokens
    together = Engine(model, max_batch_size=2).generate(PROMPTS, sampled)[0].tokens
    assert alone == together


def test_eos_ends_a_row_and_is_not_returned(model):
    first = naive_greedy(model, PROMPTS[0], 3)
    result = Engine(model, eos_id=first[2]).generate([PROMPTS[0]], GREEDY)[0]
    assert result.tokens == first[:2] and result.finish_reason == "stop"


def test_stop_string_and_streaming_agree_with_generate(model):
    engine = Engine(model, decode=byte_decode)
    full = engine.generate([PROMPTS[0]], GREEDY)[0]
    stop = full.text[3:5]
    stopped = engine.generate([PROMPTS[0]], SamplingParams(max_new_tokens=10, temperature=0, stop=(stop,)))[0]
    assert stopped.finish_reason == "stop" and stopped.text == full.text[: full.text.index(stop)]
    deltas = list(engine.stream(PROMPTS, GREEDY))
    for index in range(len(PROMPTS)):
        mine = [d for d in deltas if d.index == index]
        assert "".join(d.text for d in mine) == engine.generate([PROMPTS[index]], GREEDY)[0].text
        assert mine[-1].finish_reason == "length"


def test_kept_hidden_states_are_the_full_forwards_states_at_each_sampled_token(model):
    """With `keep_hidden_states` each result carries the state every sampled token was drawn from
    (the closing EOS's too): equal to a cache-free forward over prompt + answer at those positions."""
    params = [SamplingParams(max_new_tokens=n, temperature=1.0, seed=i) for i, n in enumerate((3, 7, 5))]
    results = Engine(model, eos_id=None, keep_hidden_states=True).generate(PROMPTS, params)
    assert Engine(model).generate(PROMPTS, params)[0].hidden_states is None  # off unless asked for
    for prompt, result in zip(PROMPTS, results):
        with torch.no_grad():
            full = model.hidden_states(torch.tensor([prompt + result.tokens]))[0]
        assert result.hidden_states.shape == (len(result.tokens), model.args.dim)
        torch.testing.assert_close(result.hidden_states, full[len(prompt) - 1:-1], atol=1e-5, rtol=0)
    eos = results[1].tokens[2]  # a token the second prompt samples: made the EOS, it ends that answer there
    ended = Engine(model, eos_id=eos, keep_hidden_states=True).generate([PROMPTS[1]], params[1])[0]
    assert ended.finish_reason == "stop" and len(ended.hidden_states) == len(ended.tokens) + 1


def test_logprobs_are_the_model_log_softmax(model):
    result = Engine(model).generate([PROMPTS[1]], SamplingParams(max_new_tokens=3, temperature=0, logprobs=True,
                                                                 top_logprobs=2))[0]
    with torch.no_grad():
        logits = model(torch.tensor([PROMPTS[1] + result.tokens]))[0]
    expected = torch.log_softmax(logits, -1)[len(PROMPTS[1]) - 1 : -1].gather(-1, torch.tensor(result.tokens)[:, None])
    torch.testing.assert_close(torch.tensor(result.logprobs), expected[:, 0], atol=1e-5, rtol=0)
    assert all(max(top, key=top.get) == tok for top, tok in zip(result.top_logprobs, result.tokens))


def test_loglikelihood_matches_a_manual_computation(model):
    context, continuation = [1, 4, 8, 15], [16, 23, 42]
    [(score, greedy)] = Engine(model).loglikelihood([(context, continuation)])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([context + continuation]))[0], -1)
    expected = sum(float(log_probs[len(context) - 1 + i, t]) for i, t in enumerate(continuation))
    assert score == pytest.approx(expected, abs=1e-4)
    greedy_continuation = naive_greedy(model, context, 3)
    assert Engine(model).loglikelihood([(context, greedy_continuation)])[0][1] is True
    assert greedy is (continuation == greedy_continuation)


def test_batched_loglikelihood_equals_one_at_a_time(model):
    requests = [([1, 2, 3], [4]), ([1, 9], [8, 7, 6, 5]), ([1] * 20, [3, 3])]
    batched = Engine(model).loglikelihood(requests)
    for request, (score, greedy) in zip(requests, batched):
        alone = Engine(model).loglikelihood([request])[0]
        assert score == pytest.approx(alone[0], abs=1e-4) and greedy == alone[1]


def test_requests_beyond_the_context_window_are_errors_not_cuts(model):
    limit = model.args.max_seq_len
    engine = Engine(model)
    with pytest.raises(ContextLengthError, match=f"context window of {limit}"):
        engine.generate([[1] * (limit - 5)], SamplingParams(max_new_tokens=10))
    with pytest.raises(ContextLengthError, match="shorten the prompt"):
        engine.generate([[1] * limit], SamplingParams(max_new_tokens=None))
    with pytest.raises(ContextLengthError):
        engine.loglikelihood([([1] * limit, [2, 3])])
    result = engine.generate([[1] * (limit - 3)], SamplingParams(max_new_tokens=None, temperature=0))[0]
    assert len(result.tokens) == 3 and result.finish_reason == "length"


def test_bad_prompts_are_clear_errors(model):
    engine = Engine(model)
    with pytest.raises(ConfigError, match="prompt 0 is empty"):
        engine.generate([[]], GREEDY)
    with pytest.raises(ConfigError, match="token id 9999"):
        engine.generate([[1, 9999]], GREEDY)
    with pytest.raises(ConfigError, match="stop strings need a tokenizer"):
        engine.generate([[1]], SamplingParams(max_new_tokens=4, stop=("x",)))
