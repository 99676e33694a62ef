"""Fixtures for the provider tests: an environment with no real keys or config."""

from __future__ import annotations

import pytest

PROVIDER_ENV = (
    "LLAMA2_PROVIDERS_FILE", "OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN",
    "AZURE_OPENAI_ENDPOINT", "OPENAI_API_VERSION", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No key, endpoint or providers file of the machine running the tests leaks in."""
    for name in PROVIDER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
