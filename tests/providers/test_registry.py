"""Model specs: parsing, the local default, and errors that list the valid choices."""

from __future__ import annotations

import sys

import pytest

from llama2.errors import ProviderError
from llama2.providers.local import LocalProvider
from llama2.providers.openai_compatible import OpenAICompatibleProvider
from llama2.providers.registry import PROVIDERS, canonical_spec, load_provider, parse_spec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("local:default", ("local", "default")),
        ("default", ("local", "default")),
        ("local:/models/llama-2-7b-chat", ("local", "/models/llama-2-7b-chat")),
        ("/models/llama-2-7b-chat", ("local", "/models/llama-2-7b-chat")),
        ("openai:gpt-4o", ("openai", "gpt-4o")),
        ("azure:gpt-35-turbo", ("azure", "gpt-35-turbo")),
        ("anthropic:claude-3-5-sonnet-20241022", ("anthropic", "claude-3-5-sonnet-20241022")),
        ("vllm:/models/hf", ("vllm", "/models/hf")),
        ("http://127.0.0.1:8080/v1#llama", ("openai-compatible", "http://127.0.0.1:8080/v1#llama")),
        ("https://example.com/v1#m", ("openai-compatible", "https://example.com/v1#m")),
        ("openai-compatible:http://h:1/v1#m", ("openai-compatible", "http://h:1/v1#m")),
    ],
)
def test_parse_spec(spec, expected):
    assert parse_spec(spec) == expected


def test_an_existing_path_with_a_colon_is_local(tmp_path):
    folder = tmp_path / "run:3"
    folder.mkdir()
    assert parse_spec(str(folder)) == ("local", str(folder))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gemini:pro", "unknown provider 'gemini'.*local:, openai:, azure:, anthropic:, openai-compatible:, vllm:"),
        ("openai:", "names no model after 'openai:'; e.g. openai:gpt-4o"),
        ("  ", "empty model spec"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(ProviderError, match=message):
        parse_spec(spec)


def test_url_specs_need_a_model_and_send_no_real_key(monkeypatch):
    with pytest.raises(ProviderError, match="name the model after '#'"):
        load_provider("http://127.0.0.1:8080/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-key-123456")
    provider = load_provider("http://127.0.0.1:8080/v1/#llama")
    assert isinstance(provider, OpenAICompatibleProvider)
    assert (provider.model, provider.base_url) == ("llama", "http://127.0.0.1:8080/v1")
    assert provider.spec == "http://127.0.0.1:8080/v1/#llama"
    assert provider.client.api_key != "sk-real-key-123456"
    assert provider.capabilities.text_completion and provider.capabilities.loglikelihood


def test_spellings_of_one_model_share_a_spec(tiny_checkpoint):
    assert canonical_spec("default") == canonical_spec("local:default") == "local:default"
    provider = load_provider(str(tiny_checkpoint), device="cpu")
    assert isinstance(provider, LocalProvider) and provider.spec == f"local:{tiny_checkpoint}"


def test_vllm_without_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as where the GPU extra is not installed
    with pytest.raises(ProviderError, match=r"pip install 'llama2\[gpu\]'"):
        load_provider("vllm:/no/such/model")


def test_every_scheme_is_registered():
    assert set(PROVIDERS) == {"local", "openai", "azure", "anthropic", "openai-compatible", "vllm"}


def test_remote_identity_reflects_settings_that_change_answers(tmp_path, monkeypatch):
    plain = load_provider("http://127.0.0.1:1/v1#m")
    tuned = load_provider("http://127.0.0.1:1/v1#m", extra_body={"repeat_penalty": 1.0})
    assert plain.identity == "http://127.0.0.1:1/v1#m"
    assert tuned.identity == 'http://127.0.0.1:1/v1#m extra_body={"repeat_penalty": 1.0}'
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "k")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://r.openai.azure.com")
    assert load_provider("azure:gpt35").identity == "azure:gpt35"
    assert load_provider("azure:gpt35", deployment="team-gpt35").identity == "azure:gpt35 deployment=team-gpt35"
