"""Fixtures for the provider tests: an environment with no real keys or config, and a tiny saved
checkpoint (with tokenizer) whose greedy output is plain text."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llama2.model.checkpoint import save_meta
from llama2.model.config import get_preset
from llama2.model.tokenizer import Tokenizer
from llama2.model.transformer import Transformer

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


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_tokenizer_path) -> Path:
    """A Meta-format `tiny` checkpoint whose output rows for byte, control and unknown pieces are
    zero, so greedy decoding picks only pieces that are text (random weights otherwise spell
    broken UTF-8, which engines may render differently)."""
    args = get_preset("tiny")
    model = Transformer.random(args, seed=3)
    sp = Tokenizer(tiny_tokenizer_path).sp
    not_text = [i for i in range(sp.get_piece_size()) if sp.is_byte(i) or sp.is_control(i) or sp.is_unknown(i)]
    with torch.no_grad():
        model.output.weight[not_text] = 0
    folder = tmp_path_factory.mktemp("providers") / "tiny"
    save_meta(model, args, folder, tokenizer=tiny_tokenizer_path)
    return folder
