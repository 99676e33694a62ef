"""The gateway in front of hosted and self-hosted models: an Azure OpenAI deployment (an HTTP
server on loopback speaking Azure's wire format) and llama.cpp's real OpenAI-compatible server.
Clients use their own gateway key; the upstream key goes only upstream."""

from __future__ import annotations

import openai
import pytest

from llama2.serve.app import build_gateway, create_app
from llama2.serve.config import ModelEntry, ServeConfig
from llama2.serve.store import Store
from providers.test_openai_wire import chat_chunks, chat_completion, openai_error
from providers.wire import Reply, WireServer

from .running import running

UPSTREAM_KEY = "azure-secret-0123456789abcdef"
QUESTION = [{"role": "user", "content": "Capital of France?"}]


def gateway_for(tmp_path, entries):
    store = Store.open(tmp_path)
    store.add_user("bo@example.com")
    _, key = store.create_key("bo@example.com")
    config = ServeConfig(models=tuple(entries))
    return create_app(build_gateway(config, store), max_body_bytes=config.max_body_bytes), key, store


def azure_entry(url: str) -> ModelEntry:
    return ModelEntry("gpt-35", "azure:gpt-35-turbo", {
        "endpoint": url, "api_version": "2024-10-21", "api_key_env": "TEST_AZURE_KEY", "max_retries": 0,
    })


@pytest.fixture
def azure_key(monkeypatch):
    monkeypatch.setenv("TEST_AZURE_KEY", UPSTREAM_KEY)


def test_chat_is_forwarded_to_the_azure_deployment(tmp_path, azure_key):
    with WireServer([Reply(body=chat_completion("Paris.", model="gpt-35-turbo"))]) as upstream:
        app, key, store = gateway_for(tmp_path, [azure_entry(upstream.url)])
        with running(app) as url:
            api = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
            reply = api.chat.completions.create(model="gpt-35", messages=QUESTION, max_tokens=5, temperature=0)
    seen = upstream.seen[0]
    assert seen.path == "/openai/deployments/gpt-35-turbo/chat/completions"
    assert seen.query["api-version"] == ["2024-10-21"] and seen.headers["api-key"] == UPSTREAM_KEY
    assert key not in str(seen.headers) and seen.body["messages"] == QUESTION
    assert reply.choices[0].message.content == "Paris." and reply.model == "gpt-35"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (12, 3)
    [row] = store.usage_summary()
    assert (row.model, row.prompt_tokens, row.completion_tokens) == ("gpt-35", 12, 3)


def test_streamed_chat_is_forwarded(tmp_path, azure_key):
    with WireServer([Reply(events=chat_chunks(["Par", "is", "."], model="gpt-35-turbo"))]) as upstream:
        app, key, _ = gateway_for(tmp_path, [azure_entry(upstream.url)])
        with running(app) as url:
            api = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
            chunks = list(api.chat.completions.create(model="gpt-35", messages=QUESTION, stream=True,
                                                      stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Paris."
    assert chunks[-1].usage.completion_tokens == 3
    assert upstream.seen[0].body["stream"] is True


@pytest.mark.parametrize("upstream_status, client_error, status", [
    (429, openai.RateLimitError, 429),
    (500, openai.InternalServerError, 502),
])
def test_upstream_failures_are_passed_on(tmp_path, azure_key, upstream_status, client_error, status):
    failure = openai_error(upstream_status, f"upstream says no (key {UPSTREAM_KEY})", {"retry-after": "7"})
    with WireServer([failure]) as upstream:
        app, key, store = gateway_for(tmp_path, [azure_entry(upstream.url)])
        with running(app) as url:
            api = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
            with pytest.raises(client_error) as raised:
                api.chat.completions.create(model="gpt-35", messages=QUESTION)
            with pytest.raises(client_error):  # streamed requests fail the same way, before any event
                api.chat.completions.create(model="gpt-35", messages=QUESTION, stream=True)
    assert raised.value.status_code == status
    assert UPSTREAM_KEY not in raised.value.response.text
    if status == 429:
        assert raised.value.response.headers["retry-after"] == "7"
    assert [r.errors for r in store.usage_summary()] == [2]


def test_chat_through_llama_cpps_server(tmp_path, llama_cpp_url):
    entry = ModelEntry("cpp", f"{llama_cpp_url}/v1#tiny", {"max_retries": 0})
    app, key, _ = gateway_for(tmp_path, [entry])
    with running(app) as url:
        api = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        whole = api.chat.completions.create(model="cpp", messages=QUESTION, max_tokens=8, temperature=0)
        streamed = list(api.chat.completions.create(model="cpp", messages=QUESTION, max_tokens=8, temperature=0,
                                                    stream=True))
        text = api.completions.create(model="cpp", prompt="Once upon a time", max_tokens=6, temperature=0)
    assert whole.choices[0].message.content
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == whole.choices[0].message.content
    assert text.usage.completion_tokens == 6


def test_upstream_logprobs_are_passed_on(tmp_path, azure_key):
    body = chat_completion("Paris", model="gpt-35-turbo")
    body["choices"][0]["logprobs"] = {"content": [{
        "token": "Paris", "logprob": -0.25, "bytes": list(b"Paris"),
        "top_logprobs": [{"token": "Paris", "logprob": -0.25, "bytes": list(b"Paris")},
                         {"token": "Lyon", "logprob": -2.5, "bytes": list(b"Lyon")}],
    }]}
    with WireServer([Reply(body=body)]) as upstream:
        app, key, _ = gateway_for(tmp_path, [azure_entry(upstream.url)])
        with running(app) as url:
            api = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
            reply = api.chat.completions.create(model="gpt-35", messages=QUESTION, logprobs=True, top_logprobs=2)
    assert upstream.seen[0].body["logprobs"] is True and upstream.seen[0].body["top_logprobs"] == 2
    [token] = reply.choices[0].logprobs.content
    assert (token.token, token.logprob) == ("Paris", -0.25)
    assert [(t.token, t.logprob) for t in token.top_logprobs] == [("Paris", -0.25), ("Lyon", -2.5)]
