"""Conformance with Hugging Face transformers' `LlamaForCausalLM`, fp32, seeded random weights:
the same logits (from an HF folder and from a 2-shard Meta folder), the same greedy tokens, and a
tokenizer folder transformers' `LlamaTokenizer` reads the way SentencePiece does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llama2.model.checkpoint import load_transformer, save_hf, save_meta
from llama2.model.config import get_preset
from llama2.model.kv_cache import KVCache
from llama2.model.tokenizer import Tokenizer
from llama2.model.transformer import Transformer

transformers = pytest.importorskip("transformers", reason="transformers is in the [test] extra")

PRESETS = ["tiny", "tiny-mha"]


def random_model(preset: str, seed: int = 0) -> Transformer:
    model = Transformer(get_preset(preset))
    model.init_weights(torch.Generator().manual_seed(seed))
    return model


@pytest.fixture(scope="module", params=PRESETS)
def checkpoints(request, tmp_path_factory, tiny_tokenizer_path) -> dict:
    """One seeded model per preset, saved as an HF folder and as a 2-shard Meta folder, plus the
    transformers model loaded from the HF folder."""
    folder = tmp_path_factory.mktemp(request.param)
    model = random_model(request.param, seed=PRESETS.index(request.param))
    save_hf(model, model.args, folder / "hf", tokenizer=tiny_tokenizer_path)
    save_meta(model, model.args, folder / "meta", tokenizer=tiny_tokenizer_path, num_shards=2)
    reference = transformers.LlamaForCausalLM.from_pretrained(folder / "hf", dtype=torch.float32).eval()
    return {"model": model, "hf": folder / "hf", "meta": folder / "meta", "reference": reference}


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 512, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layout", ["hf", "meta"])
def test_logits_match_transformers(checkpoints, layout):
    ours = load_transformer(checkpoints[layout])
    ids = tokens(2, 24)
    with torch.no_grad():
        expected = checkpoints["reference"](ids).logits
        found = ours(ids)
    assert expected.shape == found.shape == (2, 24, 512)
    assert (found - expected).abs().max().item() < 1e-4
    assert expected.std() > 0.05  # the logits carry signal: a permutation slip would show


def greedy(model: Transformer, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Plain greedy decoding with a KV cache: prefill once, then one token per step."""
    batch, length = prompt.shape
    cache = KVCache(model.args, batch, length + new_tokens)
    out, start, step = [], 0, prompt
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(step, start, cache=cache)
            start += step.shape[1]
            step = logits[:, -1].argmax(-1, keepdim=True)
            out.append(step)
    return torch.cat(out, dim=1)


def test_greedy_tokens_match_transformers_generate(checkpoints):
    reference = checkpoints["reference"]
    prompt = tokens(2, 8, seed=5)
    reference.generation_config.eos_token_id = None  # run all 20 steps, as our loop does
    reference.generation_config.pad_token_id = 0
    with torch.no_grad():
        expected = reference.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=20)
    found = greedy(load_transformer(checkpoints["hf"]), prompt, 20)
    assert torch.equal(found, expected[:, 8:])
    assert torch.equal(found, greedy(checkpoints["model"], prompt, 20))


def test_transformers_reads_our_tokenizer_folder(checkpoints, tiny_tokenizer_path: Path):
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoints["hf"])
    ours = Tokenizer(tiny_tokenizer_path)
    # Ordinary text only: transformers' converted BPE splits leading runs of spaces differently
    # from SentencePiece (an HF-side difference, not a property of the saved files).
    for text in ["Once upon a time there was a robot.", "Grüße 1234 [INST] hi [/INST]", "def add(a, b):\n    return a"]:
        assert hf_tokenizer(text).input_ids == ours.encode(text, bos=True, eos=False)
    assert (hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id) == (ours.bos_id, ours.eos_id)
