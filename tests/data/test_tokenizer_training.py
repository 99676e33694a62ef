"""Tokenizer training: Llama's SentencePiece settings (LLAMA2.md §1.3), determinism, clear errors."""

from __future__ import annotations

import random

import pytest
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from llama2.data.corpus import DataError, Document
from llama2.data.tokenizer_training import train_tokenizer
from llama2.errors import TokenizerError
from llama2.model.tokenizer import Tokenizer

WORDS = "the king said unto him and there was a house of bread in the land where people read books at night".split()


def corpus(n_lines: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = [" ".join(rng.choices(WORDS, k=12)) + f" {rng.randrange(10**6)}." for _ in range(n_lines)]
    return ["\n".join(lines[i : i + 10]) for i in range(0, n_lines, 10)]  # documents of 10 lines


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    result = train_tokenizer([Document(t, "corpus") for t in corpus()], path, vocab_size=320)
    return result, Tokenizer(path)


def test_llama_trainer_and_normalizer_settings(trained):
    result, tokenizer = trained
    assert (result.vocab_size, result.sentences, tokenizer.n_words) == (320, 400, 320)
    model = sp_pb2.ModelProto.FromString(result.path.read_bytes())
    spec, normalizer = model.trainer_spec, model.normalizer_spec
    assert spec.model_type == sp_pb2.TrainerSpec.BPE
    assert spec.byte_fallback and spec.split_digits
    assert (spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id) == (0, 1, 2, -1)
    assert (normalizer.name, normalizer.add_dummy_prefix, normalizer.remove_extra_whitespaces) == ("identity", True, False)
    assert [tokenizer.sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]


def test_digits_split_and_byte_fallback(trained):
    _, tokenizer = trained
    pieces = [tokenizer.sp.id_to_piece(i) for i in tokenizer.encode("king 2024", bos=False, eos=False)]
    assert pieces[-4:] == ["2", "0", "2", "4"]
    ids = tokenizer.encode("Ω", bos=True, eos=True)  # never seen in training: falls back to its UTF-8 bytes
    assert [tokenizer.sp.id_to_piece(i) for i in ids] == ["<s>", "▁", "<0xCE>", "<0xA9>", "</s>"]
    assert tokenizer.decode(tokenizer.encode("the  king\tsaid", bos=False, eos=False)) == "the  king\tsaid"


def test_training_is_deterministic_including_the_sample(tmp_path):
    docs = corpus(600)
    for name in ("a", "b"):
        train_tokenizer(docs, tmp_path / f"{name}.model", vocab_size=300, max_sentences=200, seed=7)
    assert (tmp_path / "a.model").read_bytes() == (tmp_path / "b.model").read_bytes()


def test_vocabulary_too_big_for_the_corpus(tmp_path):
    with pytest.raises(TokenizerError, match=r"cannot train a 5000-piece tokenizer on 10 lines \(Vocabulary size too high") as error:
        train_tokenizer(corpus(10), tmp_path / "t.model", vocab_size=5000)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "t.model").exists()


def test_empty_corpus(tmp_path):
    with pytest.raises(DataError, match="the corpus is empty"):
        train_tokenizer(["", " \n "], tmp_path / "t.model", vocab_size=300)
