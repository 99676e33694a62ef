"""Our GGUF export runs in llama.cpp (through llama-cpp-python) and computes what our model computes:
the same logits at every prompt position and the same greedy continuation.

Skipped when llama-cpp-python is not installed, except under CI (env CI set), where it must be.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from llama2.model.checkpoint import export_gguf, load_transformer
from llama2.model.config import get_preset
from llama2.model.transformer import Transformer
from real_vocab import read_test_vectors

try:
    import llama_cpp
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("llama-cpp-python is not installed (pip install -e .[cpp])", allow_module_level=True)

PROMPT = [1, 5, 77, 300, 20, 9, 100, 200]
NEW_TOKENS = 20
GGML_TYPE_F32 = 0  # for llama.cpp's KV cache: its default f16 cache would blur an exact comparison


def random_model(preset: str, seed: int = 0) -> Transformer:
    model = Transformer(get_preset(preset))
    model.init_weights(torch.Generator().manual_seed(seed))
    return model


def open_gguf(path) -> "llama_cpp.Llama":
    return llama_cpp.Llama(
        model_path=str(path), n_ctx=64, n_threads=2, logits_all=True, verbose=False, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32
    )


def cpp_logits(llm: "llama_cpp.Llama", prompt: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(prompt)
    return np.array(llm.scores[: len(prompt)])


def cpp_greedy(llm: "llama_cpp.Llama", prompt: list[int], n: int) -> list[int]:
    """Temperature 0: evaluate, take the argmax of the last position's logits, feed it back."""
    llm.reset()
    llm.eval(prompt)
    out = []
    for _ in range(n):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval(out[-1:])
    return out


@torch.no_grad()
def our_greedy(model: Transformer, prompt: list[int], n: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(n):
        tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
    return tokens[len(prompt):]


@pytest.mark.parametrize(("preset", "dtype", "atol"), [("tiny", "f32", 1e-5), ("tiny-mha", "f32", 1e-5), ("tiny", "f16", 1e-3)])
def test_llama_cpp_matches_our_model(tmp_path, tiny_tokenizer_path, preset, dtype, atol):
    model = random_model(preset)
    path = tmp_path / f"model-{dtype}.gguf"
    export_gguf(model, model.args, path, tokenizer=tiny_tokenizer_path, dtype=dtype)
    # f16 rounds the weights; compare with our model holding the same rounded weights (in fp32).
    ours = model if dtype == "f32" else load_transformer(path, dtype=torch.float32)
    llm = open_gguf(path)
    with torch.no_grad():
        expected = ours(torch.tensor([PROMPT]))[0].numpy()
    found = cpp_logits(llm, PROMPT)
    assert found.shape == expected.shape == (len(PROMPT), 512)
    assert np.abs(found - expected).max() < atol
    assert cpp_greedy(llm, PROMPT, NEW_TOKENS) == our_greedy(ours, PROMPT, NEW_TOKENS)
    assert llm.n_vocab() == 512 and llm.token_bos() == 1 and llm.token_eos() == 2


def test_llama_cpp_runs_our_q8_0_export(tmp_path, tiny_tokenizer_path, monkeypatch):
    """Q8_0 also quantizes llama.cpp's activations, so only the logits are compared, loosely.

    llama.cpp's AMX Q8_0 matmul kernel (an "extra buffer type") crashes on this project's CPUs,
    also for files written by llama.cpp's own converter, so the plain CPU kernels are used.
    """
    defaults = llama_cpp.llama_model_default_params

    def without_extra_buffers():
        params = defaults()
        params.use_extra_bufts = False
        return params

    monkeypatch.setattr(llama_cpp.llama.llama_cpp, "llama_model_default_params", without_extra_buffers)
    model = random_model("tiny")
    path = tmp_path / "model-q8_0.gguf"
    export_gguf(model, model.args, path, tokenizer=tiny_tokenizer_path, dtype="q8_0")
    dequantized = load_transformer(path)
    with torch.no_grad():
        expected = dequantized(torch.tensor([PROMPT]))[0].numpy()
    found = cpp_logits(open_gguf(path), PROMPT)
    assert np.abs(found - expected).max() < 2e-2
    assert np.abs(found - expected).max() < 0.1 * expected.std()


def test_llama_cpp_tokenizes_with_our_exported_real_vocabulary(tmp_path, llama_tokenizer, llama_vocab):
    """The vocabulary keys we write (pieces, scores, types, special ids, dummy prefix) make llama.cpp
    tokenize llama.cpp's own Llama 2 test vectors exactly as expected."""
    model = Transformer(get_preset("tiny").replace(vocab_size=llama_tokenizer.n_words))
    path = tmp_path / "real-vocab.gguf"
    export_gguf(model, model.args, path, tokenizer=llama_tokenizer, dtype="f16")
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    vectors = read_test_vectors(llama_vocab)
    assert len(vectors) > 10
    for text, expected in vectors:
        assert llm.tokenize(text.encode("utf-8"), add_bos=False) == expected, text
    assert (llm.token_bos(), llm.token_eos(), llm.n_vocab()) == (1, 2, 32000)
