"""The Anthropic provider against a loopback server: what the official SDK sends to /v1/messages
(x-api-key, anthropic-version, system, max_tokens, stop_sequences) and Anthropic's JSON and SSE
event formats back."""

from __future__ import annotations

import asyncio

import pytest

from llama2.errors import ProviderError, UnsupportedError
from llama2.providers.base import GenerateRequest, LoglikelihoodRequest
from llama2.providers.registry import load_provider
from llama2.types import SamplingParams

from .wire import Reply, WireServer, generate_and_close, sse, stream_and_close

KEY = "sk-ant-test-0123456789abcdef"
MODEL = "claude-3-5-sonnet-20241022"
DIALOG = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]


def message(text: str = "Rome.", stop_reason: str = "end_turn") -> dict:
    return {
        "id": "msg_01", "type": "message", "role": "assistant", "model": MODEL,
        "content": [{"type": "text", "text": text}], "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 4},
    }


def message_events(pieces: list[str]) -> list[str]:
    start = {**message(""), "content": [], "stop_reason": None, "usage": {"input_tokens": 20, "output_tokens": 1}}
    frames = [
        sse({"type": "message_start", "message": start}, "message_start"),
        sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            "content_block_start"),
        sse({"type": "ping"}, "ping"),
    ]
    frames += [
        sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
            "content_block_delta")
        for p in pieces
    ]
    return frames + [
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
             "usage": {"output_tokens": len(pieces)}}, "message_delta"),
        sse({"type": "message_stop"}, "message_stop"),
    ]


def anthropic_error(status: int, kind: str, text: str, headers: dict | None = None) -> Reply:
    return Reply(status, {"type": "error", "error": {"type": kind, "message": text}}, headers=headers or {})


def test_messages_request_and_reply(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    params = SamplingParams(max_new_tokens=16, temperature=0.7, top_p=0.9, top_k=5, stop=("\n\n",))
    with WireServer([Reply(body=message())]) as server:
        provider = load_provider(f"anthropic:{MODEL}", endpoint=server.url)
        [completion] = asyncio.run(generate_and_close(provider, [GenerateRequest(DIALOG, params)]))
    [seen] = server.seen
    assert (seen.method, seen.path) == ("POST", "/v1/messages")
    assert seen.headers["x-api-key"] == KEY and seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.body["model"] == MODEL and seen.body["system"] == "Answer in one word."
    assert seen.body["messages"] == DIALOG[1:]
    assert seen.body["max_tokens"] == 16 and seen.body["stop_sequences"] == ["\n\n"]
    assert (seen.body["temperature"], seen.body["top_p"], seen.body["top_k"]) == (0.7, 0.9, 5)
    assert (completion.text, completion.finish_reason) == ("Rome.", "stop")
    assert (completion.prompt_tokens, completion.completion_tokens) == (20, 4)
    assert completion.cost_usd == pytest.approx((20 * 3.00 + 4 * 15.00) / 1e6)
    assert provider.usage.requests == 1 and provider.usage.cost_usd == pytest.approx(completion.cost_usd)


def test_max_tokens_defaults_when_unlimited_and_greedy_sends_no_top_p(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    params = SamplingParams(max_new_tokens=None, temperature=0.0)
    with WireServer([Reply(body=message())]) as server:
        provider = load_provider(f"anthropic:{MODEL}", endpoint=server.url)
        asyncio.run(generate_and_close(provider, [GenerateRequest(DIALOG[1:2], params)]))
    body = server.seen[0].body
    assert body["max_tokens"] == 1024 and body["temperature"] == 0.0
    assert "top_p" not in body and "system" not in body and "stop_sequences" not in body


def test_streaming_reads_the_event_stream(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with WireServer([Reply(events=message_events(["Ro", "me", "."]))]) as server:
        provider = load_provider(f"anthropic:{MODEL}", endpoint=server.url)
        deltas = asyncio.run(stream_and_close(provider, GenerateRequest(DIALOG, SamplingParams(max_new_tokens=3))))
    assert server.seen[0].body["stream"] is True
    assert "".join(d.text for d in deltas) == "Rome."
    assert deltas[-1].finish_reason == "length" and all(d.finish_reason is None for d in deltas[:-1])
    assert (provider.usage.prompt_tokens, provider.usage.completion_tokens) == (20, 3)


def test_overloaded_then_success_is_retried(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    replies = [anthropic_error(429, "rate_limit_error", "slow down", {"retry-after": "0"}), Reply(body=message())]
    with WireServer(replies) as server:
        provider = load_provider(f"anthropic:{MODEL}", endpoint=server.url, max_retries=2)
        [completion] = asyncio.run(generate_and_close(provider, [GenerateRequest(DIALOG)]))
    assert len(server.seen) == 2 and completion.text == "Rome."


def test_401_is_one_line_without_the_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with WireServer([anthropic_error(401, "authentication_error", f"invalid x-api-key {KEY}")]) as server:
        provider = load_provider(f"anthropic:{MODEL}", endpoint=server.url)
        with pytest.raises(ProviderError) as error:
            asyncio.run(generate_and_close(provider, [GenerateRequest(DIALOG)]))
    message_text = str(error.value)
    assert "\n" not in message_text and "401" in message_text and "ANTHROPIC_API_KEY" in message_text
    assert KEY not in message_text


def test_missing_key_and_unsupported_calls(monkeypatch):
    with pytest.raises(ProviderError, match="ANTHROPIC_API_KEY"):
        load_provider(f"anthropic:{MODEL}")
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    provider = load_provider(f"anthropic:{MODEL}")
    with pytest.raises(UnsupportedError):
        asyncio.run(provider.generate([GenerateRequest("Once upon a time")]))
    with pytest.raises(UnsupportedError):
        asyncio.run(provider.loglikelihood([LoglikelihoodRequest("a", " b")]))
    with pytest.raises(UnsupportedError, match="log-probabilities"):
        asyncio.run(provider.generate([GenerateRequest(DIALOG, SamplingParams(logprobs=True))]))
