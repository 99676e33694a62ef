"""Token shards: exact BOS + document + EOS round trips across shard boundaries, seeded shuffling,
whole-document validation split, dtype choice, manifest contents, atomic writes and clear errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from llama2.data.corpus import DataError, Document
from llama2.data.shards import FORMAT, Manifest, TokenSplit, dtype_for_vocab, write_shards
from llama2.errors import ConfigError, TokenizerError
from llama2.model.tokenizer import Tokenizer

DOCS = [f"document {i}: " + "word " * (i % 7) for i in range(40)]


class CharTokenizer:
    """One id per character: ids 3 .. n_words - 1, BOS 1, EOS 2 (a fake with Llama's interface)."""

    bos_id, eos_id = 1, 2

    def __init__(self, n_words: int = 300, offset: int = 0) -> None:
        self.n_words, self.offset = n_words, offset

    def encode(self, text: str, *, bos: bool, eos: bool) -> list[int]:
        ids = [3 + self.offset + ord(c) % (self.n_words - 3 - self.offset) for c in text]
        return [self.bos_id] * bos + ids + [self.eos_id] * eos


def split_documents(ids: np.ndarray, bos: int = 1, eos: int = 2) -> list[tuple[int, ...]]:
    """Cut a packed stream into its BOS ... EOS documents, checking that nothing lies between them."""
    docs, start = [], 0
    for end in np.flatnonzero(ids == eos):
        assert ids[start] == bos, f"document at {start} does not begin with BOS"
        docs.append(tuple(ids[start : end + 1].tolist()))
        start = end + 1
    assert start == len(ids), "stream does not end with EOS"
    return docs


def read_all(directory, split: str) -> np.ndarray:
    data = TokenSplit(directory, split)
    return data.read(0, data.num_tokens)


def test_round_trip_across_shard_boundaries(tmp_path):
    tokenizer = CharTokenizer()
    manifest = write_shards(DOCS, tokenizer, tmp_path / "out", val_fraction=0.1, seed=3, shard_tokens=7)
    train = TokenSplit(tmp_path / "out", "train")
    assert len(manifest.splits["train"].files) == -(-train.num_tokens // 7) > 10
    stream = train.read(0, train.num_tokens)
    assert stream.dtype == np.int64
    on_disk = np.concatenate([np.fromfile(tmp_path / "out" / f, dtype=np.uint16) for f in manifest.splits["train"].files])
    np.testing.assert_array_equal(stream, on_disk)
    for start, length in [(5, 4), (6, 1), (7, 0), (13, 20), (train.num_tokens - 3, 3)]:  # windows across files
        np.testing.assert_array_equal(train.read(start, length), stream[start : start + length])
    expected = sorted(tuple(tokenizer.encode(d, bos=True, eos=True)) for d in DOCS)
    assert sorted(split_documents(stream) + split_documents(read_all(tmp_path / "out", "val"))) == expected


def test_read_outside_the_split_raises(tmp_path):
    write_shards(DOCS, CharTokenizer(), tmp_path / "out", shard_tokens=50)
    train = TokenSplit(tmp_path / "out")
    with pytest.raises(IndexError, match="outside the train split"):
        train.read(train.num_tokens - 2, 3)
    with pytest.raises(IndexError):
        train.read(-1, 2)


def test_shuffle_is_deterministic_by_seed(tmp_path):
    runs = {name: write_shards(DOCS, CharTokenizer(), tmp_path / name, seed=seed, shard_tokens=100)
            for name, seed in (("a", 0), ("b", 0), ("c", 1))}
    a, b, c = (read_all(tmp_path / name, "train") for name in runs)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    originals = [tuple(CharTokenizer().encode(d, bos=True, eos=True)) for d in DOCS]
    assert split_documents(a) != [d for d in originals if d in split_documents(a)]  # not in input order


def test_validation_split_takes_whole_documents(tmp_path):
    manifest = write_shards(DOCS, CharTokenizer(), tmp_path / "out", val_fraction=0.25, shard_tokens=9)
    train, val = split_documents(read_all(tmp_path / "out", "train")), split_documents(read_all(tmp_path / "out", "val"))
    assert len(val) == manifest.splits["val"].documents == 10
    assert len(train) == manifest.splits["train"].documents == 30
    assert not set(train) & set(val)
    assert manifest.splits["val"].tokens == sum(map(len, val))


@pytest.mark.parametrize("n_docs, fraction, expected_val", [(1, 0.5, 0), (2, 0.01, 1), (10, 0.0, 0), (3, 0.99, 2)])
def test_validation_split_size_edges(tmp_path, n_docs, fraction, expected_val):
    manifest = write_shards(DOCS[:n_docs], CharTokenizer(), tmp_path / "out", val_fraction=fraction)
    assert manifest.splits["val"].documents == expected_val
    assert manifest.splits["train"].documents == n_docs - expected_val
    assert TokenSplit(tmp_path / "out", "val").num_tokens == manifest.splits["val"].tokens


def test_big_vocabulary_uses_uint32(tmp_path):
    tokenizer = CharTokenizer(n_words=70_000, offset=65_600)  # every text id is above 65535
    manifest = write_shards(DOCS, tokenizer, tmp_path / "out", val_fraction=0)
    train = TokenSplit(tmp_path / "out")
    assert manifest.dtype == "uint32" and train.dtype == np.uint32 and train.vocab_size == 70_000
    assert (tmp_path / "out" / "train-00000.bin").stat().st_size == 4 * train.num_tokens
    ids = train.read(0, train.num_tokens)
    assert ids.max() > 65_535
    assert sorted(split_documents(ids)) == sorted(tuple(tokenizer.encode(d, bos=True, eos=True)) for d in DOCS)
    assert (dtype_for_vocab(65_536), dtype_for_vocab(65_537)) == ("uint16", "uint32")


def test_manifest_contract_hashes_and_source_counts(tmp_path, tiny_tokenizer_path):
    sources = [tmp_path / "a.txt", tmp_path / "b.txt"]
    sources[0].write_text("alpha beta gamma")
    sources[1].write_text("delta 12345")
    documents = [Document(p.read_text(), str(p)) for p in sources] + [Document("more from a", str(sources[0]))]
    manifest = write_shards(documents, tiny_tokenizer_path, tmp_path / "out", val_fraction=0, sources=sources)

    data = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert list(data) == ["format", "dtype", "vocab_size", "bos_id", "eos_id", "tokenizer", "seed", "val_fraction", "splits", "sources"]
    assert (data["format"], data["dtype"], data["vocab_size"], data["bos_id"], data["eos_id"]) == (FORMAT, "uint16", 512, 1, 2)
    assert data["splits"]["val"] == {"files": [], "tokens": 0, "documents": 0}
    assert (tmp_path / "out" / data["tokenizer"]).read_bytes() == tiny_tokenizer_path.read_bytes()
    tokenizer = Tokenizer(tiny_tokenizer_path)
    for entry, path, texts in zip(data["sources"], sources, (["alpha beta gamma", "more from a"], ["delta 12345"])):
        assert entry == {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size,
                         "documents": len(texts), "tokens": sum(len(tokenizer.encode(t, bos=True, eos=True)) for t in texts)}
    assert Manifest.load(tmp_path / "out") == manifest


def test_sentencepiece_batch_encoding_matches_llama_encode(tmp_path, tiny_tokenizer_path):
    texts = ["Hello world!", "  two spaces\nand a newline", "digits 2024 and émojis 🙂"]
    write_shards(texts, tiny_tokenizer_path, tmp_path / "out", val_fraction=0, num_threads=2)
    tokenizer = Tokenizer(tiny_tokenizer_path)
    expected = sorted(tuple(tokenizer.encode(t, bos=True, eos=True)) for t in texts)
    assert sorted(split_documents(read_all(tmp_path / "out", "train"))) == expected


def test_empty_corpus_is_an_error_and_leaves_nothing_behind(tmp_path):
    with pytest.raises(DataError, match="the corpus is empty"):
        write_shards([], CharTokenizer(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    write_shards(DOCS[:5], CharTokenizer(), tmp_path / "out")
    with pytest.raises(DataError, match="exists and is not empty; choose another --out or pass --overwrite"):
        write_shards(DOCS, CharTokenizer(), tmp_path / "out")
    assert TokenSplit(tmp_path / "out").num_documents + TokenSplit(tmp_path / "out", "val").num_documents == 5
    write_shards(DOCS, CharTokenizer(), tmp_path / "out", overwrite=True)
    assert TokenSplit(tmp_path / "out").num_documents + TokenSplit(tmp_path / "out", "val").num_documents == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or old directory left


class OutOfRangeTokenizer(CharTokenizer):
    def encode(self, text: str, *, bos: bool, eos: bool) -> list[int]:
        return [self.bos_id, self.n_words, self.eos_id]


@pytest.mark.parametrize("tokenizer, error, message", [
    (OutOfRangeTokenizer(), TokenizerError, "tokenizer produced id 300, outside its 300-piece vocabulary"),
    (CharTokenizer(n_words=(1 << 32) + 1), TokenizerError, "does not fit in uint32 token shards"),
])
def test_tokenizer_that_does_not_fit_the_dtype(tmp_path, tokenizer, error, message):
    with pytest.raises(error, match=message) as caught:
        write_shards(DOCS, tokenizer, tmp_path / "out")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_tokenizer_without_bos_is_rejected(tmp_path):
    tokenizer = CharTokenizer()
    tokenizer.bos_id = -1
    with pytest.raises(TokenizerError, match="BOS id -1 is outside its 300-piece vocabulary"):
        write_shards(DOCS, tokenizer, tmp_path / "out")


@pytest.mark.parametrize("options", [{"val_fraction": 1.0}, {"val_fraction": -0.1}, {"shard_tokens": 0}])
def test_bad_options(tmp_path, options):
    with pytest.raises(ConfigError):
        write_shards(DOCS, CharTokenizer(), tmp_path / "out", **options)


def test_document_from_an_unlisted_source(tmp_path):
    with pytest.raises(DataError, match="is not among the sources"):
        write_shards([Document("x", "elsewhere.txt")], CharTokenizer(), tmp_path / "out", sources=[])


def test_damaged_shard_directories_are_reported(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataError, match="manifest.json: not found; build token shards with `llama2 data tokenize`"):
        TokenSplit(out)
    manifest = write_shards(DOCS, CharTokenizer(), out, shard_tokens=64)
    with pytest.raises(DataError, match="no split 'test' \\(splits: train, val\\)"):
        TokenSplit(out, "test")
    shard = out / manifest.splits["train"].files[-1]
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(DataError, match="train shards hold .* tokens but the manifest says"):
        TokenSplit(out)
    shard.write_bytes(b"\x00")
    with pytest.raises(DataError, match="not a whole, non-empty number of uint16 ids"):
        TokenSplit(out)
    shard.unlink()
    with pytest.raises(DataError, match="shard file missing"):
        TokenSplit(out)
    (out / "manifest.json").write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(DataError, match="format is 'other/9', expected 'llama2-shards/1'"):
        TokenSplit(out)


def test_progress_bar_reports_documents_tokens_and_rate(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich draws as on a terminal
    monkeypatch.setenv("COLUMNS", "200")
    docs = DOCS * 15  # three encode batches, so rich can measure a rate
    write_shards(docs, CharTokenizer(), tmp_path / "quiet", val_fraction=0)
    write_shards(docs, CharTokenizer(), tmp_path / "shown", val_fraction=0, progress=True, total_documents=len(docs))
    assert (tmp_path / "quiet/train-00000.bin").read_bytes() == (tmp_path / "shown/train-00000.bin").read_bytes()
    tokens = sum(len(d) + 2 for d in docs)
    err = capsys.readouterr().err
    assert "600/600" in err and f"{tokens:,} tokens" in err and "docs/s" in err
