"""The gateway through the official `openai` client against a real server on loopback, serving the
tiny checkpoint: models, chat and text completions, streaming, logprobs, stop strings, usage,
keys and their limits, and OpenAI-shaped errors."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from llama2.api import Llama
from llama2.model.chat_format import encode_dialog
from llama2.serve.app import create_app
from llama2.serve.auth import Authorizer
from llama2.serve.config import ModelEntry, ServeConfig
from llama2.serve.app import build_gateway
from llama2.serve.store import Store

from .running import running

QUESTION = [{"role": "user", "content": "Once upon a time"}]


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("serve")
    store = Store.open(data_dir)
    store.add_user("ada@example.com", role="admin")
    keys = {
        "full": store.create_key("ada@example.com", name="full")[1],
        "other-only": store.create_key("ada@example.com", models=["other"])[1],
        "slow": store.create_key("ada@example.com", rpm=2)[1],
    }
    options = {"max_batch_size": 4, "max_queue": 16}
    config = ServeConfig(models=(ModelEntry("tiny", f"local:{tiny_checkpoint}", options),
                                 ModelEntry("other", f"local:{tiny_checkpoint}", options)),
                         max_body_bytes=64 * 1024)
    gateway = build_gateway(config, store)
    with running(create_app(gateway, max_body_bytes=config.max_body_bytes)) as url:
        yield {"url": url, "keys": keys, "store": store}


@pytest.fixture(scope="module")
def llama(tiny_checkpoint):
    return Llama.from_pretrained(str(tiny_checkpoint), device="cpu")


def client(server, key="full", **kwargs):
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=server["keys"].get(key, key), max_retries=0, **kwargs)


def test_models_are_listed_per_key(server):
    assert [m.id for m in client(server).models.list()] == ["tiny", "other"]
    assert [m.id for m in client(server, "other-only").models.list()] == ["other"]
    assert client(server).models.retrieve("tiny").owned_by == "local"


def test_chat_usage_counts_equal_the_tokenizer_and_text_equals_the_engine(server, llama):
    reply = client(server).chat.completions.create(model="tiny", messages=QUESTION, max_tokens=12, temperature=0)
    expected = llama.chat([QUESTION], max_new_tokens=12, temperature=0)[0]
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == "tiny"
    assert choice.message.role == "assistant" and choice.message.content == expected.text
    assert choice.finish_reason == expected.finish_reason
    assert reply.usage.prompt_tokens == len(encode_dialog(llama.tokenizer, QUESTION))
    assert reply.usage.completion_tokens == len(expected.tokens)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_chat_equals_the_whole_answer(server):
    api = client(server)
    whole = api.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=20, temperature=0)
    chunks = list(api.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=20, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_streamed_text_completion_equals_the_whole_answer(server, llama):
    api = client(server)
    whole = api.completions.create(model="tiny", prompt="Once upon a time", max_tokens=15, temperature=0)
    chunks = list(api.completions.create(model="tiny", prompt="Once upon a time", max_tokens=15, temperature=0,
                                         stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert whole.choices[0].text == llama.generate("Once upon a time", max_new_tokens=15, temperature=0)[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 15


def test_logprobs_and_top_logprobs(server):
    reply = client(server).chat.completions.create(model="tiny", messages=QUESTION, max_tokens=6, temperature=0,
                                                   logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    assert "".join(t.token for t in content).strip() == reply.choices[0].message.content.strip()
    for token in content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        assert token.top_logprobs[0].logprob == pytest.approx(token.logprob)  # greedy: the top token
        assert bytes(token.bytes).decode() == token.token
    text = client(server).completions.create(model="tiny", prompt="Once", max_tokens=4, temperature=0, logprobs=2)
    assert len(text.choices[0].logprobs.tokens) == 4 and len(text.choices[0].logprobs.top_logprobs[0]) == 2


def test_stop_strings_cut_the_answer_before_them(server):
    api = client(server)
    free = api.completions.create(model="tiny", prompt="Once upon a time", max_tokens=30, temperature=0).choices[0].text
    stop = free[len(free) // 2 : len(free) // 2 + 3]
    cut = api.completions.create(model="tiny", prompt="Once upon a time", max_tokens=30, temperature=0, stop=[stop])
    assert cut.choices[0].text == free[: free.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_n_choices_and_prompt_lists(server):
    reply = client(server).chat.completions.create(model="tiny", messages=QUESTION, max_tokens=5, n=3, seed=1)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    texts = client(server).completions.create(model="tiny", prompt=["Once", "The cat"], max_tokens=3, n=2, temperature=0)
    assert len(texts.choices) == 4 and texts.choices[0].text == texts.choices[1].text
    assert texts.usage.completion_tokens == 12


def test_without_a_valid_key_is_401(server):
    with pytest.raises(openai.AuthenticationError) as missing:
        client(server, "sk-l2-not-a-real-key").models.list()
    assert missing.value.body["code"] == "invalid_api_key"
    assert "sk-l2-not-a-real-key" not in missing.value.message
    response = httpx.post(server["url"] + "/v1/chat/completions", json={"model": "tiny", "messages": QUESTION})
    assert response.status_code == 401 and set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_a_model_outside_the_keys_list_is_403(server):
    with pytest.raises(openai.PermissionDeniedError):
        client(server, "other-only").chat.completions.create(model="tiny", messages=QUESTION, max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client(server, "other-only").models.retrieve("tiny")


def test_past_the_keys_rate_is_429_with_retry_after(server):
    api = client(server, "slow")
    for _ in range(2):
        api.completions.create(model="tiny", prompt="Hi", max_tokens=1)
    with pytest.raises(openai.RateLimitError) as limited:
        api.completions.create(model="tiny", prompt="Hi", max_tokens=1)
    assert int(limited.value.response.headers["retry-after"]) >= 1


@pytest.mark.parametrize("body, param", [
    ({"model": "tiny", "messages": QUESTION, "temperature": 5}, "temperature"),
    ({"model": "tiny"}, "messages"),
    ({"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ({"model": "tiny", "messages": QUESTION, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "tiny", "messages": QUESTION, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"model": "tiny", "messages": QUESTION, "presence_penalty": 1.0}, "presence_penalty"),
])
def test_bad_bodies_are_400_in_openais_shape(server, body, param):
    response = httpx.post(server["url"] + "/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {server['keys']['full']}"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_unparseable_json_unknown_model_and_paths(server):
    headers = {"Authorization": f"Bearer {server['keys']['full']}", "Content-Type": "application/json"}
    bad = httpx.post(server["url"] + "/v1/chat/completions", content=b"{not json", headers=headers)
    assert bad.status_code == 400 and "error" in bad.json()
    with pytest.raises(openai.NotFoundError) as unknown:
        client(server).chat.completions.create(model="gpt-9", messages=QUESTION)
    assert unknown.value.body["code"] == "model_not_found"
    assert "(offered: tiny, other)" in unknown.value.body["message"]
    with pytest.raises(openai.NotFoundError) as unknown:  # a key limited to "other" never learns of "tiny"
        client(server, "other-only").chat.completions.create(model="gpt-9", messages=QUESTION)
    assert "(offered: other)" in unknown.value.body["message"]
    assert httpx.get(server["url"] + "/v1/nothing-here", headers=headers).json()["error"]["code"] == "not_found"


def test_a_prompt_longer_than_the_context_says_how_long(server):
    long = [{"role": "user", "content": "word " * 400}]
    with pytest.raises(openai.BadRequestError) as too_long:
        client(server).chat.completions.create(model="tiny", messages=long, max_tokens=2)
    assert too_long.value.body["code"] == "context_length_exceeded"
    assert "256" in too_long.value.message
    with pytest.raises(openai.BadRequestError):  # streamed too: still a plain HTTP error
        client(server).chat.completions.create(model="tiny", messages=long, max_tokens=2, stream=True)


def test_oversized_bodies_are_413(server):
    huge = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 70_000}]}
    response = httpx.post(server["url"] + "/v1/chat/completions", json=huge,
                          headers={"Authorization": f"Bearer {server['keys']['full']}"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_health_metrics_and_the_usage_log(server):
    client(server).completions.create(model="other", prompt="Hello", max_tokens=2, temperature=0)
    assert httpx.get(server["url"] + "/health").json()["status"] == "ok"
    metrics = httpx.get(server["url"] + "/metrics").text
    assert 'llama2_requests_total{endpoint="completions",model="other",status="200"}' in metrics
    assert 'llama2_queue_depth{model="tiny"}' in metrics
    assert "llama2_time_to_first_token_seconds_bucket" in metrics
    rows = {(r.model, r.key_id): r for r in server["store"].usage_summary()}
    assert any(model == "other" and row.completion_tokens >= 2 for (model, _), row in rows.items())
