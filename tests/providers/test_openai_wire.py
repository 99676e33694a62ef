"""OpenAI and Azure OpenAI providers against a loopback server: the requests the official SDK sends
(paths, api-version, auth headers, fields) and the replies in OpenAI's JSON and SSE formats."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import pytest

from llama2.errors import ProviderError, UnsupportedError
from llama2.providers.base import GenerateRequest, LoglikelihoodRequest
from llama2.providers.registry import load_provider
from llama2.types import SamplingParams

from .wire import Reply, WireServer, generate_and_close, sse, stream_and_close

KEY = "sk-test-0123456789abcdef"
DIALOG = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
GREEDY = SamplingParams(max_new_tokens=5, temperature=0.0, top_p=1.0, stop=("\n",), seed=7)


def chat_completion(text: str = "Paris.", model: str = "gpt-4o-2024-08-06", finish: str = "stop") -> dict:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                     "finish_reason": finish}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


def chat_chunks(pieces: list[str], model: str = "gpt-4o-2024-08-06") -> list[str]:
    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    frames = [sse(chunk({"role": "assistant", "content": ""}))]
    frames += [sse(chunk({"content": piece})) for piece in pieces]
    frames.append(sse(chunk({}, "length")))
    usage = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
             "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": len(pieces),
                                      "total_tokens": 12 + len(pieces)}}
    return frames + [sse(usage), sse("[DONE]")]


def openai_error(status: int, message: str, headers: dict | None = None) -> Reply:
    return Reply(status, {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}},
                 headers=headers or {})


# ---- OpenAI -------------------------------------------------------------------------------------


def test_openai_chat_request_and_reply(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with WireServer([Reply(body=chat_completion())]) as server:
        provider = load_provider("openai:gpt-4o", endpoint=server.url + "/v1")
        [completion] = asyncio.run(generate_and_close(provider, [GenerateRequest(DIALOG, GREEDY)]))
    [seen] = server.seen
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.body["model"] == "gpt-4o"
    assert seen.body["messages"] == DIALOG
    assert seen.body["temperature"] == 0.0 and seen.body["top_p"] == 1.0
    assert seen.body["max_completion_tokens"] == 5 and seen.body["stop"] == ["\n"] and seen.body["seed"] == 7
    assert (completion.text, completion.finish_reason) == ("Paris.", "stop")
    assert (completion.prompt_tokens, completion.completion_tokens) == (12, 3)
    assert completion.cost_usd == pytest.approx((12 * 2.50 + 3 * 10.00) / 1e6)  # gpt-4o's price, from the dated name
    assert provider.usage.requests == 1 and provider.usage.cost_usd == pytest.approx(completion.cost_usd)
    assert provider.usage.prompt_tokens == 12 and len(provider.usage.latencies_s) == 1


def test_openai_streaming_reads_sse_chunks_and_usage(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with WireServer([Reply(events=chat_chunks(["Pa", "ris", "."]))]) as server:
        provider = load_provider("openai:gpt-4o", endpoint=server.url + "/v1")
        deltas = asyncio.run(stream_and_close(provider, GenerateRequest(DIALOG, GREEDY)))
    assert server.seen[0].body["stream"] is True
    assert server.seen[0].body["stream_options"] == {"include_usage": True}
    assert "".join(d.text for d in deltas) == "Paris."
    assert [d.finish_reason for d in deltas] == [None, None, None, "length"]
    assert provider.usage.requests == 1 and provider.usage.completion_tokens == 3
    assert provider.usage.cost_usd == pytest.approx((12 * 2.50 + 3 * 10.00) / 1e6)


def test_openai_retries_a_429_then_succeeds(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    replies = [openai_error(429, "Rate limit reached", {"retry-after": "0"}), Reply(body=chat_completion())]
    with WireServer(replies) as server:
        provider = load_provider("openai:gpt-4o", endpoint=server.url + "/v1", max_retries=2)
        [completion] = asyncio.run(generate_and_close(provider, [GenerateRequest(DIALOG, GREEDY)]))
    assert len(server.seen) == 2 and completion.text == "Paris."
    assert provider.usage.requests == 1 and provider.usage.failures == 0


def test_openai_rate_limit_that_outlasts_retries_is_one_line(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with WireServer([openai_error(429, "Rate limit reached", {"retry-after": "0"})]) as server:
        provider = load_provider("openai:gpt-4o", endpoint=server.url + "/v1", max_retries=1)
        with pytest.raises(ProviderError) as error:
            asyncio.run(generate_and_close(provider, [GenerateRequest(DIALOG, GREEDY)]))
    assert len(server.seen) == 2
    message = str(error.value)
    assert "\n" not in message and "429" in message and "requests_per_minute" in message
    assert provider.usage.failures == 1


def test_openai_401_names_the_variable_and_never_the_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with WireServer([openai_error(401, f"Incorrect API key provided: {KEY}.")]) as server:
        provider = load_provider("openai:gpt-4o", endpoint=server.url + "/v1", max_retries=3)
        with pytest.raises(ProviderError) as error:
            asyncio.run(generate_and_close(provider, [GenerateRequest(DIALOG, GREEDY)]))
    assert len(server.seen) == 1  # authentication errors are not retried
    message = str(error.value)
    assert "\n" not in message and "401" in message and "OPENAI_API_KEY" in message and KEY not in message


def test_upstream_messages_are_scrubbed_of_keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with WireServer([openai_error(400, f"bad request\nfrom key {KEY} and sk-other-abcdef123456")]) as server:
        provider = load_provider("openai:gpt-4o", endpoint=server.url + "/v1")
        with pytest.raises(ProviderError) as error:
            asyncio.run(generate_and_close(provider, [GenerateRequest(DIALOG, GREEDY)]))
    message = str(error.value)
    assert "400" in message and "bad request" in message and "\n" not in message
    assert KEY not in message and "sk-other" not in message


def test_openai_missing_key_names_the_variable():
    with pytest.raises(ProviderError, match="OPENAI_API_KEY"):
        load_provider("openai:gpt-4o")


def test_openai_chat_model_refuses_text_and_scoring(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    provider = load_provider("openai:gpt-4o")
    assert not provider.capabilities.text_completion and not provider.capabilities.loglikelihood
    with pytest.raises(UnsupportedError, match="chat model"):
        asyncio.run(provider.generate([GenerateRequest("Once upon a time")]))
    with pytest.raises(UnsupportedError):
        asyncio.run(provider.loglikelihood([LoglikelihoodRequest("a", " b")]))
    completion_model = load_provider("openai:davinci-002")
    assert completion_model.capabilities.text_completion and completion_model.capabilities.loglikelihood
    assert not completion_model.capabilities.chat


def test_concurrency_limit_holds(monkeypatch):
    """With concurrency 2, no more than two requests are ever in flight at the server."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    active, peak, lock = [0], [0], threading.Lock()

    def answer(seen):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return Reply(body=chat_completion())

    with WireServer(answer) as server:
        provider = load_provider("openai:gpt-4o", endpoint=server.url + "/v1", concurrency=2)
        completions = asyncio.run(generate_and_close(provider, [GenerateRequest(DIALOG, GREEDY)] * 6))
    assert len(completions) == 6 and len(server.seen) == 6
    assert peak[0] == 2


# ---- Azure OpenAI -------------------------------------------------------------------------------


def test_azure_chat_uses_deployment_path_api_version_and_api_key(monkeypatch):
    with WireServer([Reply(body=chat_completion(model="gpt-35-turbo"))]) as server:
        monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
        monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", server.url)
        monkeypatch.setenv("OPENAI_API_VERSION", "2024-06-01")
        provider = load_provider("azure:gpt-35-turbo")
        [completion] = asyncio.run(generate_and_close(provider, [GenerateRequest(DIALOG, GREEDY)]))
    [seen] = server.seen
    assert seen.path == "/openai/deployments/gpt-35-turbo/chat/completions"
    assert seen.query == {"api-version": ["2024-06-01"]}
    assert seen.headers["api-key"] == KEY and "authorization" not in seen.headers
    assert seen.body["max_tokens"] == 5 and seen.body["messages"] == DIALOG
    assert completion.text == "Paris."
    assert completion.cost_usd == pytest.approx((12 * 0.50 + 3 * 1.50) / 1e6)  # priced by the model Azure names


def test_azure_entra_token_and_deployment_from_the_providers_file(monkeypatch, tmp_path):
    with WireServer([Reply(events=chat_chunks(["O", "k"], model="gpt-4o"))]) as server:
        config = tmp_path / "providers.yaml"
        config.write_text(
            f"providers:\n  azure:\n    endpoint: {server.url}\n    api_version: '2024-10-21'\n"
            "  'azure:gpt4o':\n    deployment: my-gpt4o-deployment\n"
        )
        monkeypatch.setenv("LLAMA2_PROVIDERS_FILE", str(config))
        monkeypatch.setenv("AZURE_OPENAI_AD_TOKEN", "entra-token-xyz")
        provider = load_provider("azure:gpt4o")
        deltas = asyncio.run(stream_and_close(provider, GenerateRequest(DIALOG, GREEDY)))
    [seen] = server.seen
    assert seen.path == "/openai/deployments/my-gpt4o-deployment/chat/completions"
    assert seen.query == {"api-version": ["2024-10-21"]}
    assert seen.headers["authorization"] == "Bearer entra-token-xyz" and "api-key" not in seen.headers
    assert "".join(d.text for d in deltas) == "Ok" and deltas[-1].finish_reason == "length"


def test_azure_missing_credentials_name_the_variables(monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://example.openai.azure.com")
    monkeypatch.setitem(sys.modules, "azure.identity", None)  # as if azure-identity were not installed
    with pytest.raises(ProviderError, match="AZURE_OPENAI_API_KEY.*AZURE_OPENAI_AD_TOKEN"):
        load_provider("azure:gpt-35-turbo")
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    with pytest.raises(ProviderError, match="AZURE_OPENAI_ENDPOINT"):
        load_provider("azure:gpt-35-turbo")


# ---- Completion endpoints: OpenAI's legacy models and OpenAI-compatible servers -------------------


def text_completion(text: str = " upon a time", logprobs: dict | None = None) -> dict:
    return {
        "id": "cmpl-1", "object": "text_completion", "created": 1_700_000_000, "model": "davinci-002",
        "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8},
    }


def test_completion_model_text_request_and_echo_scoring(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    echo = {
        "tokens": ["Once", " upon", " a", " time", ","], "text_offset": [0, 4, 9, 11, 16],
        "token_logprobs": [None, -1.5, -0.5, -0.25, -2.0],
        "top_logprobs": [None, {" upon": -1.5}, {" a": -0.5}, {" time": -0.25}, {",": -2.0}],
    }
    replies = [Reply(body=text_completion()), Reply(body=text_completion("Once upon a time,", echo))]
    with WireServer(replies) as server:
        provider = load_provider("openai:davinci-002", endpoint=server.url + "/v1")
        [completion] = asyncio.run(provider.generate([GenerateRequest("Once", SamplingParams(max_new_tokens=4))]))
        [score] = asyncio.run(provider.loglikelihood([LoglikelihoodRequest("Once upon ", "a time")]))
        asyncio.run(provider.aclose())
    first, second = server.seen
    assert first.path == second.path == "/v1/completions"
    assert first.body["prompt"] == "Once" and first.body["max_tokens"] == 4
    assert second.body == {"model": "davinci-002", "prompt": "Once upon a time", "max_tokens": 1, "echo": True,
                           "logprobs": 1, "temperature": 0}
    assert completion.text == " upon a time"
    assert (score.logprob, score.is_greedy) == (pytest.approx(-0.75), True)
    assert provider.usage.requests == 2 and provider.usage.cost_usd == pytest.approx((8 * 2.0 + 8 * 2.0) / 1e6)


def test_compatible_server_gets_max_tokens_top_k_and_extra_body():
    with WireServer([Reply(body=chat_completion(model="tiny"))]) as server:
        provider = load_provider(f"{server.url}/v1#tiny", extra_body={"repeat_penalty": 1.0})
        params = SamplingParams(max_new_tokens=4, temperature=0.5, top_k=20)
        asyncio.run(generate_and_close(provider, [GenerateRequest(DIALOG, params)]))
    [seen] = server.seen
    assert seen.path == "/v1/chat/completions" and seen.headers["authorization"] == "Bearer no-key"
    assert seen.body["model"] == "tiny" and seen.body["max_tokens"] == 4
    assert seen.body["top_k"] == 20 and seen.body["repeat_penalty"] == 1.0


def test_compatible_server_without_echo_logprobs_is_unsupported():
    with WireServer([Reply(body=text_completion("Hi there!", None))]) as server:
        provider = load_provider(f"{server.url}/v1#tiny")
        with pytest.raises(UnsupportedError, match="loglikelihood: false"):
            asyncio.run(provider.loglikelihood([LoglikelihoodRequest("Hi", " there")]))
    with pytest.raises(UnsupportedError):
        no_scores = load_provider(f"{server.url}/v1#tiny", loglikelihood=False)
        asyncio.run(no_scores.loglikelihood([LoglikelihoodRequest("a", "b")]))


def test_a_stream_closed_early_frees_its_slot(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    replies = [Reply(events=chat_chunks(["a", "b", "c"])), Reply(body=chat_completion())]

    async def first_delta_then_generate(provider):
        stream = provider.stream(GenerateRequest(DIALOG, GREEDY))
        first = await anext(stream)
        await stream.aclose()
        [completion] = await asyncio.wait_for(provider.generate([GenerateRequest(DIALOG, GREEDY)]), 10)
        await provider.aclose()
        return first, completion

    with WireServer(replies) as server:
        provider = load_provider("openai:gpt-4o", endpoint=server.url + "/v1", concurrency=1)
        first, completion = asyncio.run(first_delta_then_generate(provider))
    assert (first.text, completion.text) == ("a", "Paris.")
