"""Shared fixtures: a tiny SentencePiece tokenizer trained on the spot, tiny seeded models, and a
saved tiny checkpoint whose greedy output is plain text."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import pytest
import torch

from llama2.model.checkpoint import save_meta
from llama2.model.config import get_preset
from llama2.model.tokenizer import Tokenizer
from llama2.model.transformer import Transformer

# Fixtures over the real Llama 2 vocabulary (fetched at test time, never committed), and
# llama.cpp's server as a peer on loopback.
pytest_plugins = ("real_vocab", "llama_cpp_peer")

TRAINING_TEXT = [
    "Once upon a time there was a little robot who loved to read books.",
    "The quick brown fox jumps over the lazy dog 1234567890 times.",
    "Llama 2 is a family of pretrained and fine-tuned large language models.",
    "Grüße aus München! Ça va? 日本語のテキストも少し。 Emoji: 🙂",
    "def add(a, b):\n    return a + b\n",
    "[INST] <<SYS>> You are a helpful assistant. <</SYS>> What is the capital of France? [/INST]",
] * 40


def train_sentencepiece(vocab_size: int) -> bytes:
    """A Llama-style SentencePiece BPE model (byte fallback, split digits) of `vocab_size` pieces."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXT),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return model.getvalue()


@pytest.fixture(scope="session")
def tiny_tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path to a 512-piece tokenizer.model matching the `tiny` presets' vocabulary size."""
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.model"
    path.write_bytes(train_sentencepiece(512))
    return path


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


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def load_script():
    """Import `scripts/NAME.py` (a folder of scripts, not a package) as a module for this test
    module; it is registered in sys.modules while it runs (dataclasses look their module up) and
    removed afterwards."""
    loaded: list[str] = []

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loaded.append(name)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in loaded:
        sys.modules.pop(name, None)
