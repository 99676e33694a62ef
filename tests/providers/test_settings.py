"""Provider settings: the providers file, the environment, precedence, and one-line errors."""

from __future__ import annotations

import pytest

from llama2.errors import ProviderError
from llama2.providers.prices import Price, lookup_price, price_table
from llama2.providers.settings import load_settings

AZURE_FILE = """
providers:
  azure:
    endpoint: https://from-file.openai.azure.com
    concurrency: 2
    requests_per_minute: 120
    api_key_env: MY_AZURE_KEY
  "azure:gpt35":
    deployment: team-gpt35
    timeout_s: 30
    prices:
      team-gpt35: {input: 0.4, output: 1.2}
prices:
  my-model: {input: 1, output: 2}
"""


@pytest.fixture
def providers_file(tmp_path, monkeypatch):
    def write(text: str):
        path = tmp_path / "providers.yaml"
        path.write_text(text)
        monkeypatch.setenv("LLAMA2_PROVIDERS_FILE", str(path))
        return path

    return write


def test_defaults_without_file_or_environment():
    settings = load_settings("openai", "openai:gpt-4o")
    assert (settings.concurrency, settings.max_retries, settings.requests_per_minute) == (8, 5, None)
    assert settings.api_key is None and settings.api_key_env == "OPENAI_API_KEY" and settings.endpoint is None


def test_file_entries_layer_scheme_then_spec_then_overrides(providers_file, monkeypatch):
    providers_file(AZURE_FILE)
    monkeypatch.setenv("MY_AZURE_KEY", "secret-value")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://from-env.openai.azure.com")
    settings = load_settings("azure", "azure:gpt35", {"concurrency": 5})
    assert settings.endpoint == "https://from-file.openai.azure.com"  # the file wins over the environment
    assert (settings.deployment, settings.timeout_s, settings.requests_per_minute) == ("team-gpt35", 30, 120)
    assert settings.concurrency == 5  # overrides win over the file
    assert settings.api_key == "secret-value" and settings.api_key_env == "MY_AZURE_KEY"
    assert settings.prices == {"my-model": Price(1.0, 2.0), "team-gpt35": Price(0.4, 1.2)}
    assert "secret-value" not in repr(settings)
    other = load_settings("azure", "azure:other")
    assert other.deployment is None and other.concurrency == 2


def test_environment_supplies_azure_endpoint_version_and_entra_token(monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://from-env.openai.azure.com")
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-06-01")
    monkeypatch.setenv("AZURE_OPENAI_AD_TOKEN", "token")
    settings = load_settings("azure", "azure:x")
    assert (settings.endpoint, settings.api_version, settings.ad_token, settings.api_key) == (
        "https://from-env.openai.azure.com", "2024-06-01", "token", None
    )


def test_the_per_user_file_is_read_when_no_file_is_named(tmp_path):
    folder = tmp_path / "config" / "llama2"  # XDG_CONFIG_HOME is tmp_path/config (conftest)
    folder.mkdir(parents=True)
    (folder / "providers.yaml").write_text("providers:\n  openai:\n    max_retries: 1\n")
    assert load_settings("openai", "openai:gpt-4o").max_retries == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("providers:\n  openai:\n    api_key: sk-123\n", "never read from here.*api_key_env"),
        ("providers:\n  openai:\n    concurency: 2\n    timeout_s: -1\n",
         "unknown setting 'concurency'; timeout_s must be"),
        ("providers:\n  openai:\n    prices: {gpt-4o: {input: 1}}\n", "price of 'gpt-4o' must be"),
        ("models: {}\n", "top-level keys"),
        ("providers: [\n", "cannot read the providers file"),
    ],
)
def test_bad_files_are_one_line_errors_naming_the_file(providers_file, text, message):
    path = providers_file(text)
    with pytest.raises(ProviderError, match=message) as error:
        load_settings("openai", "openai:gpt-4o")
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_named_file_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("LLAMA2_PROVIDERS_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(ProviderError, match="LLAMA2_PROVIDERS_FILE.*no such file"):
        load_settings("openai", "openai:gpt-4o")


def test_overrides_are_checked_and_never_take_keys():
    with pytest.raises(ProviderError, match="concurrency must be an integer >= 1"):
        load_settings("openai", "openai:gpt-4o", {"concurrency": 0})
    with pytest.raises(ProviderError, match="api_key_env"):
        load_settings("openai", "openai:gpt-4o", {"api_key": "sk-123"})


def test_price_lookup_matches_dated_names_at_dash_boundaries():
    table = price_table({"my-deployment": Price(1.0, 2.0)})
    assert lookup_price("gpt-4o-2024-08-06", table) == table["gpt-4o"]
    assert lookup_price("gpt-4o-mini-2024-07-18", table) == table["gpt-4o-mini"]
    assert lookup_price("gpt-4-0613", table) == table["gpt-4"]
    assert lookup_price("claude-3-5-sonnet-20241022", table) == Price(3.0, 15.0)
    assert lookup_price("claude-3-haiku-20240307", table) == Price(0.25, 1.25)
    assert lookup_price("my-deployment", table) == Price(1.0, 2.0)
    assert lookup_price("gpt-4.5-preview", table) is None and lookup_price("llama-2-7b", table) is None
    assert Price(2.5, 10.0).cost(1_000_000, 100_000) == pytest.approx(3.5)
