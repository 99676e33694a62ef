"""The OpenAI-compatible provider against a real server: llama.cpp's (`llama_cpp.server`) on the
GGUF export of the tiny checkpoint. Same weights, so greedy text and scores equal our engine's.

Skipped when llama-cpp-python's server is not installed, except under CI (env CI set), where it must be.
"""

from __future__ import annotations

import asyncio

import pytest

from llama2.providers.base import GenerateRequest, LoglikelihoodRequest
from llama2.providers.registry import load_provider
from llama2.types import SamplingParams

PROMPT = "Once upon a time"
GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def server_url(llama_cpp_url):
    return llama_cpp_url


@pytest.fixture(scope="module")
def local(tiny_checkpoint):
    return load_provider(f"local:{tiny_checkpoint}", device="cpu")


def remote(server_url):
    # llama.cpp's server applies a repeat penalty of 1.1 unless told otherwise: greedy means 1.0.
    return load_provider(f"{server_url}/v1#tiny", extra_body={"repeat_penalty": 1.0}, max_retries=0)


async def generate_and_close(provider, requests):
    async with provider:
        return await provider.generate(requests)


async def stream_and_close(provider, request):
    async with provider:
        return [delta async for delta in provider.stream(request)]


def test_greedy_completion_equals_our_engine(server_url, local):
    [theirs] = asyncio.run(generate_and_close(remote(server_url), [GenerateRequest(PROMPT, GREEDY)]))
    [ours] = asyncio.run(local.generate([GenerateRequest(PROMPT, GREEDY)]))
    assert theirs.text == ours.text and ours.text.strip()
    assert (theirs.prompt_tokens, theirs.completion_tokens, theirs.finish_reason) == (ours.prompt_tokens, 12, "length")


def test_streamed_completion_adds_up(server_url):
    deltas = asyncio.run(stream_and_close(remote(server_url), GenerateRequest(PROMPT, GREEDY)))
    [whole] = asyncio.run(generate_and_close(remote(server_url), [GenerateRequest(PROMPT, GREEDY)]))
    assert "".join(d.text for d in deltas) == whole.text
    assert deltas[-1].finish_reason == "length"


def test_chat_and_streamed_chat(server_url):
    dialog = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    request = GenerateRequest(dialog, SamplingParams(max_new_tokens=6, temperature=0.0))
    provider = remote(server_url)
    [completion] = asyncio.run(generate_and_close(provider, [request]))
    assert completion.text and completion.finish_reason in ("stop", "length") and completion.prompt_tokens > 0
    assert provider.usage.requests == 1 and provider.usage.cost_usd is None  # no price for a local model
    deltas = asyncio.run(stream_and_close(remote(server_url), request))
    assert "".join(d.text for d in deltas) == completion.text and deltas[-1].finish_reason == completion.finish_reason


def test_loglikelihood_by_echo_equals_our_engine(server_url, local):
    [greedy] = asyncio.run(local.generate([GenerateRequest(PROMPT, SamplingParams(max_new_tokens=3, temperature=0.0))]))
    requests = [
        LoglikelihoodRequest("Once upon a", " time"),
        LoglikelihoodRequest("The quick brown fox ", "jumps over"),
        LoglikelihoodRequest(PROMPT, greedy.text),
    ]
    theirs = asyncio.run(remote(server_url).loglikelihood(requests))
    ours = asyncio.run(local.loglikelihood(requests))
    assert [t.logprob for t in theirs] == pytest.approx([o.logprob for o in ours], abs=1e-3)
    assert [t.is_greedy for t in theirs] == [o.is_greedy for o in ours]
    assert ours[2].is_greedy and not ours[0].is_greedy
