"""Tokenizer: round trips, special ids, errors, GGUF round trip; the real Llama 2 vocabulary's test vectors."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
from sentencepiece import sentencepiece_model_pb2 as sp_pb2
from real_vocab import read_test_vectors

from llama2.errors import TokenizerError
from llama2.model.tokenizer import Tokenizer

TEXTS = [
    "Hello world!",
    "  two leading spaces, two trailing  ",
    "tabs\tand\nnew\n\nlines\n",
    "Grüße aus München! Ça va?",
    "日本語のテキストも少し。",
    "Emoji: 🙂 🦙 👩‍👩‍👧 and a rare one 𝄞",
    "digits 1234567890 split one by one",
    "[INST] <<SYS>>\nsys\n<</SYS>>\n\nq [/INST] a ",
    "",
]


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_path: Path) -> Tokenizer:
    return Tokenizer(tiny_tokenizer_path)


def write_vocab_gguf(tokenizer: Tokenizer, path: Path, model: str = "llama") -> Path:
    """A vocab-only GGUF of `tokenizer`, written the way a checkpoint converter writes one."""
    pieces, scores, types = tokenizer.gguf_vocab()
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tokenizer_model(model)
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(tokenizer.bos_id)
    writer.add_eos_token_id(tokenizer.eos_id)
    writer.add_unk_token_id(tokenizer.sp.unk_id())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


def test_special_ids_are_llamas(tok: Tokenizer) -> None:
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.n_words) == (1, 2, -1, 512)


@pytest.mark.parametrize("text", TEXTS)
def test_decode_inverts_encode(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text, bos=False, eos=False)
    assert tok.sp.unk_id() not in ids
    assert tok.decode(ids) == text


def test_unseen_characters_fall_back_to_bytes(tok: Tokenizer) -> None:
    ids = tok.encode("𝄞", bos=False, eos=False)  # U+1D11E: 4 UTF-8 bytes, not in the training text
    assert [tok.sp.id_to_piece(i) for i in ids[-4:]] == ["<0xF0>", "<0x9D>", "<0x84>", "<0x9E>"]


def test_bos_and_eos_are_added_only_when_asked(tok: Tokenizer) -> None:
    plain = tok.encode("Hello world!", bos=False, eos=False)
    assert plain and 1 not in plain and 2 not in plain
    assert tok.encode("Hello world!", bos=True, eos=False) == [1, *plain]
    assert tok.encode("Hello world!", bos=False, eos=True) == [*plain, 2]
    assert tok.encode("", bos=True, eos=True) == [1, 2]
    assert tok.decode([1, *plain, 2]) == "Hello world!"


@pytest.mark.parametrize("bad", [512, -1, 10**9])
def test_decode_rejects_ids_outside_the_vocabulary(tok: Tokenizer, bad: int) -> None:
    with pytest.raises(TokenizerError, match=rf"token id {bad} is out of range for a vocabulary of 512"):
        tok.decode([5, bad])


def test_encode_rejects_non_text(tok: Tokenizer) -> None:
    with pytest.raises(TokenizerError, match="encode expects a str, got bytes"):
        tok.encode(b"hi", bos=True, eos=False)


def test_missing_and_corrupt_files_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.model"
    for load in (Tokenizer, Tokenizer.from_file, Tokenizer.from_gguf):
        with pytest.raises(TokenizerError, match=f"{missing}: tokenizer file not found"):
            load(missing)
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"\x00not a sentencepiece model\xff" * 10)
    with pytest.raises(TokenizerError, match=f"{junk}: not a valid SentencePiece model"):
        Tokenizer(junk)
    bad_gguf = tmp_path / "bad.gguf"
    bad_gguf.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 7)
    with pytest.raises(TokenizerError, match=f"{bad_gguf}: not a readable GGUF file"):
        Tokenizer(bad_gguf)
    with pytest.raises(TokenizerError, match="<serialized model proto>: not a valid SentencePiece model"):
        Tokenizer.from_proto(b"")


def test_a_vocabulary_without_bos_is_refused(tok: Tokenizer) -> None:
    model = sp_pb2.ModelProto.FromString(tok.model_proto)
    model.pieces[1].type = sp_pb2.ModelProto.SentencePiece.NORMAL  # "<s>" no longer a control piece
    with pytest.raises(TokenizerError, match="defines no BOS or EOS piece"):
        Tokenizer.from_proto(model.SerializeToString())


def test_save_writes_a_loadable_model_atomically(tok: Tokenizer, tmp_path: Path) -> None:
    written = tok.save(tmp_path)
    assert written == tmp_path / "tokenizer.model"
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.model"]  # no temporary file left
    assert written.read_bytes() == tok.model_proto
    again = Tokenizer.from_file(written)
    assert again.encode(TEXTS[3], bos=True, eos=True) == tok.encode(TEXTS[3], bos=True, eos=True)
    assert Tokenizer.from_proto(tok.model_proto).model_proto == tok.model_proto


def test_gguf_vocab_lists_pieces_scores_and_types_in_id_order(tok: Tokenizer) -> None:
    pieces, scores, types = tok.gguf_vocab()
    assert len(pieces) == len(scores) == len(types) == 512
    assert pieces[:4] == [b"<unk>", b"<s>", b"</s>", b"<0x00>"]
    assert types[:4] == [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL, gguf.TokenType.BYTE]
    assert types.count(gguf.TokenType.BYTE) == 256
    assert all(t == gguf.TokenType.NORMAL for t in types[259:])
    assert scores[300] == tok.sp.get_score(300)
    assert pieces[300] == tok.sp.id_to_piece(300).encode("utf-8")


def test_gguf_round_trip_gives_the_same_ids(tok: Tokenizer, tmp_path: Path) -> None:
    path = write_vocab_gguf(tok, tmp_path / "vocab.gguf")
    for loaded in (Tokenizer(path), Tokenizer.from_gguf(path)):
        assert (loaded.bos_id, loaded.eos_id, loaded.pad_id, loaded.n_words) == (1, 2, -1, 512)
        assert loaded.gguf_vocab() == tok.gguf_vocab()
        for text in TEXTS:
            assert loaded.encode(text, bos=True, eos=True) == tok.encode(text, bos=True, eos=True)


def test_gguf_with_a_non_sentencepiece_vocabulary_is_refused(tok: Tokenizer, tmp_path: Path) -> None:
    path = write_vocab_gguf(tok, tmp_path / "gpt2.gguf", model="gpt2")
    with pytest.raises(TokenizerError, match="tokenizer.ggml.model is 'gpt2', expected 'llama'"):
        Tokenizer(path)


def test_real_vocab_encodes_every_llama_cpp_test_vector(llama_tokenizer: Tokenizer, llama_vocab: Path) -> None:
    vectors = read_test_vectors(llama_vocab)
    assert len(vectors) == 46
    for text, expected in vectors:
        assert llama_tokenizer.encode(text, bos=False, eos=False) == expected, repr(text)


def test_real_vocab_has_llamas_special_ids(llama_tokenizer: Tokenizer) -> None:
    tok = llama_tokenizer
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.n_words) == (1, 2, -1, 32000)
    assert tok.encode("Hello world!", bos=True, eos=False) == [1, 15043, 3186, 29991]
    assert tok.decode([1, 15043, 3186, 29991, 2]) == "Hello world!"
