"""The local provider over our engine: batching changes nothing, streams add up to the answer, and
scores follow lm-evaluation-harness's conventions exactly."""

from __future__ import annotations

import asyncio

import pytest
import torch

from llama2.api import Llama
from llama2.errors import ContextLengthError, ProviderError
from llama2.providers.base import GenerateRequest, LoglikelihoodRequest
from llama2.providers.local import LocalProvider
from llama2.providers.registry import load_provider
from llama2.providers.scoring import rolling_windows
from llama2.types import SamplingParams

GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0)
PROMPTS = ["Once upon a time", "The quick brown fox jumps", "Llama 2 is", "def add(a, b):\n   "]
DIALOG = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def provider(tiny_checkpoint) -> LocalProvider:
    return load_provider(f"local:{tiny_checkpoint}", device="cpu")


@pytest.fixture(scope="module")
def llama(tiny_checkpoint) -> Llama:
    return Llama.from_pretrained(tiny_checkpoint, device="cpu")


def test_generate_text_and_chat_match_the_python_api(provider, llama):
    text, chat = asyncio.run(provider.generate([GenerateRequest(PROMPTS[0], GREEDY), GenerateRequest(DIALOG, GREEDY)]))
    [direct_text] = llama.generate(PROMPTS[0], max_new_tokens=12, temperature=0.0)
    [direct_chat] = llama.chat(DIALOG, max_new_tokens=12, temperature=0.0)
    assert (text.text, text.prompt_tokens, text.completion_tokens) == (direct_text.text, direct_text.prompt_tokens, 12)
    assert (chat.text, chat.prompt_tokens) == (direct_chat.text, direct_chat.prompt_tokens)
    assert text.finish_reason == "length" and text.text.strip()
    assert text.latency_s > 0 and text.cost_usd is None


def test_batching_equals_one_at_a_time_for_greedy(provider):
    requests = [GenerateRequest(p, GREEDY) for p in PROMPTS] + [GenerateRequest(DIALOG, GREEDY)]
    together = asyncio.run(provider.generate(requests))
    alone = [asyncio.run(provider.generate([r]))[0] for r in requests]
    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.completion_tokens for c in together] == [c.completion_tokens for c in alone]


def test_max_new_tokens_is_a_ceiling_at_the_end_of_the_window(provider, llama):
    """A benchmark's generous max_new_tokens stops at the window's end; a prompt that does not fit fails."""
    window = llama.args.max_seq_len
    prompt_len = len(llama.tokenizer.encode(PROMPTS[0], bos=True, eos=False))
    greedy = SamplingParams(max_new_tokens=window * 2, temperature=0.0)
    [completion] = asyncio.run(provider.generate([GenerateRequest(PROMPTS[0], greedy)]))
    [expected] = llama.generate(PROMPTS[0], max_new_tokens=window - prompt_len, temperature=0.0)
    assert completion.text == expected.text
    if completion.finish_reason == "length":
        assert completion.prompt_tokens + completion.completion_tokens == window
    with pytest.raises(ContextLengthError):
        asyncio.run(provider.generate([GenerateRequest("once " * window, greedy)]))


def test_mixed_sampling_settings_keep_request_order(provider):
    short = SamplingParams(max_new_tokens=3, temperature=0.0)
    requests = [GenerateRequest(PROMPTS[0], GREEDY), GenerateRequest(PROMPTS[1], short),
                GenerateRequest(PROMPTS[2], GREEDY)]
    completions = asyncio.run(provider.generate(requests))
    assert [c.completion_tokens for c in completions] == [12, 3, 12]
    assert completions[1].text == asyncio.run(provider.generate([requests[1]]))[0].text


def test_seeded_sampling_is_reproducible_and_logprobs_come_back(provider):
    params = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.95, seed=11, logprobs=True)
    first, second = (asyncio.run(provider.generate([GenerateRequest(PROMPTS[0], params)]))[0] for _ in range(2))
    assert first.text == second.text
    assert len(first.logprobs) == first.completion_tokens and all(lp <= 0 for lp in first.logprobs)


@pytest.mark.parametrize("prompt", [PROMPTS[1], DIALOG], ids=["text", "chat"])
def test_stream_adds_up_to_generate(provider, prompt):
    request = GenerateRequest(prompt, SamplingParams(max_new_tokens=16, temperature=0.0, stop=("\n",)))

    async def collect():
        return [delta async for delta in provider.stream(request)]

    deltas = asyncio.run(collect())
    [completion] = asyncio.run(provider.generate([request]))
    assert "".join(d.text for d in deltas) == completion.text
    assert deltas[-1].finish_reason == completion.finish_reason
    assert all(d.finish_reason is None for d in deltas[:-1]) and all(d.index == 0 for d in deltas)


def test_a_stream_closed_early_frees_the_model(provider):
    async def first_then_generate():
        stream = provider.stream(GenerateRequest(PROMPTS[0], GREEDY))
        first = await anext(stream)
        await stream.aclose()
        return first, await asyncio.wait_for(provider.generate([GenerateRequest(PROMPTS[0], GREEDY)]), 30)

    first, [completion] = asyncio.run(first_then_generate())
    assert completion.text.startswith(first.text)


def test_concurrent_calls_are_serialized_on_the_model(provider):
    requests = [GenerateRequest(p, GREEDY) for p in PROMPTS[:2]]

    async def both():
        return await asyncio.gather(provider.generate(requests[:1]), provider.generate(requests[1:]))

    a, b = asyncio.run(both())
    assert [a[0].text, b[0].text] == [c.text for c in asyncio.run(provider.generate(requests))]


def test_loglikelihood_equals_the_engine_on_lm_evals_split(provider, llama):
    requests = [
        LoglikelihoodRequest("Question: What is 2+2?\nAnswer:", " 4"),
        LoglikelihoodRequest("The quick brown", " fox jumps"),
        LoglikelihoodRequest("", "Once upon a time"),
    ]
    scores = asyncio.run(provider.loglikelihood(requests))
    expected = llama.loglikelihood([(r.context, r.continuation) for r in requests])
    assert [(s.logprob, s.is_greedy) for s in scores] == expected
    assert all(s.logprob < 0 for s in scores)


def test_trailing_context_space_moves_to_the_continuation(provider, llama):
    [moved] = asyncio.run(provider.loglikelihood([LoglikelihoodRequest("Answer: ", "A")]))
    [(expected, greedy)] = llama.loglikelihood([("Answer:", " A")])
    assert (moved.logprob, moved.is_greedy) == (pytest.approx(expected), greedy)
    # What the move changes: split as given, the space's token would count as context.
    [(unmoved, _)] = llama.loglikelihood([("Answer: ", "A")])
    assert unmoved != pytest.approx(expected)


def test_greedy_continuation_is_reported_greedy(provider):
    request = GenerateRequest(PROMPTS[0], SamplingParams(max_new_tokens=4, temperature=0.0))
    [completion] = asyncio.run(provider.generate([request]))
    [score] = asyncio.run(provider.loglikelihood([LoglikelihoodRequest(PROMPTS[0], completion.text)]))
    assert score.is_greedy


def test_rolling_loglikelihood_short_text_is_one_window_from_bos(provider, llama):
    text = "Once upon a time there was a little robot."
    [rolling] = asyncio.run(provider.loglikelihood_rolling([text]))
    [(expected, _)] = llama.engine.loglikelihood([([1], llama.tokenizer.encode(text, bos=False, eos=False))])
    assert rolling == pytest.approx(expected, abs=1e-4)


def test_rolling_loglikelihood_windows_long_text(provider, llama):
    text = " ".join(["Llama 2 is a family of pretrained and fine-tuned large language models."] * 30)
    n_tokens = len(llama.tokenizer.encode(text, bos=False, eos=False))
    assert n_tokens > 2 * llama.args.max_seq_len  # three windows at least
    rolling, empty = asyncio.run(provider.loglikelihood_rolling([text, ""]))
    assert empty == 0.0
    # The windows are lm-eval's (test_scoring checks); score them here with plain forward passes.
    tokens = llama.tokenizer.encode(text, bos=False, eos=False)
    expected = 0.0
    with torch.no_grad():
        for context, targets in rolling_windows(tokens, 1, llama.args.max_seq_len):
            inputs = (context + targets)[:-1]
            log_probs = torch.log_softmax(llama.model(torch.tensor([inputs]))[0].float(), -1)
            rows = log_probs[len(context) - 1 :]
            expected += float(rows.gather(-1, torch.tensor(targets)[:, None]).sum())
    assert rolling == pytest.approx(expected, rel=1e-4)


def test_identity_fingerprints_the_weights(tiny_checkpoint, tiny_tokenizer_path):
    first = load_provider(f"local:{tiny_checkpoint}", device="cpu")
    again = load_provider(str(tiny_checkpoint), device="cpu")
    assert first.identity == again.identity and first.identity.startswith(f"local:{tiny_checkpoint}@")
    seed0 = load_provider("local:tiny", device="cpu", tokenizer=tiny_tokenizer_path)
    seed1 = load_provider("local:tiny", device="cpu", tokenizer=tiny_tokenizer_path, seed=1)
    assert seed0.identity != seed1.identity and seed0.identity.startswith("local:tiny@")
    assert load_provider("local:tiny", device="cpu", tokenizer=tiny_tokenizer_path).identity == seed0.identity
    request = GenerateRequest("Once", SamplingParams(max_new_tokens=2, temperature=0))
    [completion] = asyncio.run(seed0.generate([request]))
    assert completion.completion_tokens == 2


def test_unknown_load_option_is_a_provider_error(tiny_checkpoint):
    with pytest.raises(ProviderError, match="unknown option.*dtype, device, seed, tokenizer"):
        load_provider(f"local:{tiny_checkpoint}", concurrency=4)
