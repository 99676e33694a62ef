"""Fixtures for the training tests: a small token-shard folder and a fast pretraining config."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from llama2.data.shards import write_shards
from llama2.train.config import parse_config
from llama2.train.recipes.pretrain import PretrainConfig

# Short, repetitive text, so a 2-layer model's loss falls visibly within a few dozen steps.
SENTENCES = [
    "Once upon a time there was a little robot who loved to read books.",
    "The quick brown fox jumps over the lazy dog.",
    "Llama 2 is a family of pretrained and fine-tuned large language models.",
    "def add(a, b):\n    return a + b\n",
]


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_path: Path) -> Path:
    """A shard folder (train + val) of ~25k tokens from the 512-piece test tokenizer."""
    rng = random.Random(0)
    documents = [" ".join(rng.choice(SENTENCES) for _ in range(6)) for _ in range(300)]
    out = tmp_path_factory.mktemp("data") / "shards"
    write_shards(documents, tiny_tokenizer_path, out, val_fraction=0.1, seed=0)
    return out


@pytest.fixture
def tiny_settings(shards: Path, tmp_path: Path):
    """`tiny_settings(**changes)`: recipe settings for a `tiny`-preset run taking milliseconds a step."""

    def make(**changes: object) -> dict:
        settings = {
            "model": "tiny", "data": str(shards), "output_dir": str(tmp_path / "run"), "max_steps": 8,
            "batch_size": 4, "seq_len": 32, "lr": 3e-3, "warmup_steps": 2, "log_every": 1,
            "tensorboard": False, "dtype": "float32", "device": "cpu",
        }
        settings.update(changes)
        return settings

    return make


@pytest.fixture
def tiny_config(tiny_settings):
    """`tiny_config(**changes)`: the checked `PretrainConfig` of `tiny_settings(**changes)`."""

    def make(**changes: object) -> PretrainConfig:
        return parse_config(PretrainConfig, tiny_settings(**changes))

    return make
