"""`llama2 data train-tokenizer` and `llama2 data tokenize` end to end through the CLI entry point."""

from __future__ import annotations

import json

import numpy as np

from llama2.cli.main import main
from llama2.data.shards import TokenSplit
from llama2.model.tokenizer import Tokenizer


def write_corpus(tmp_path):
    """30 documents of 10 lines each, as JSONL with the text under "body"."""
    words = "the king said unto him and there was a house of bread in the land 42".split()
    lines = [" ".join(words[(i + j) % len(words)] for j in range(i % 9 + 3)) for i in range(300)]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"body": "\n".join(lines[i : i + 10])}) + "\n" for i in range(0, 300, 10)))
    return path


def test_train_tokenizer_then_tokenize(tmp_path, capsys):
    data = write_corpus(tmp_path)
    tokenizer_path = tmp_path / "tokenizer.model"
    assert main(["data", "train-tokenizer", str(data), "--text-field", "body", "--vocab-size", "300",
                 "--out", str(tokenizer_path), "--json"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert (trained["vocab_size"], trained["lines"], trained["lines_sampled"]) == (300, 300, 300)
    assert Tokenizer(tokenizer_path).n_words == 300

    out = tmp_path / "shards"
    assert main(["data", "tokenize", str(data), "--text-field", "body", "--tokenizer", str(tokenizer_path),
                 "--out", str(out), "--val-fraction", "0.1", "--seed", "5", "--shard-tokens", "1000", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert (manifest["seed"], manifest["val_fraction"], manifest["dtype"]) == (5, 0.1, "uint16")
    assert (manifest["splits"]["train"]["documents"], manifest["splits"]["val"]["documents"]) == (27, 3)
    assert manifest["sources"][0]["path"] == str(data) and manifest["sources"][0]["documents"] == 30
    train = TokenSplit(out, "train")
    assert len(manifest["splits"]["train"]["files"]) > 1
    ids = train.read(0, train.num_tokens)
    assert ids[0] == 1 and ids[-1] == 2 and np.count_nonzero(ids == 1) == 27


def test_tokenize_prints_a_summary(tmp_path, capsys, tiny_tokenizer_path):
    text = tmp_path / "book.txt"
    text.write_text("Chapter one.\n\nChapter two.\n\nChapter three.\n")
    assert main(["data", "tokenize", str(text), "--split-blank-lines", "--tokenizer", str(tiny_tokenizer_path),
                 "--out", str(tmp_path / "out"), "--val-fraction", "0"]) == 0
    out = capsys.readouterr().out
    assert "train: " in out and "in 3 documents" in out and "val: 0 tokens in 0 documents" in out


def test_errors_are_one_line(tmp_path, capsys, tiny_tokenizer_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n')
    cases = [
        (["data", "tokenize", str(tmp_path / "none.txt"), "--tokenizer", str(tiny_tokenizer_path), "--out", str(tmp_path / "o")],
         "none.txt: input not found"),
        (["data", "tokenize", str(bad), "--tokenizer", str(tiny_tokenizer_path), "--out", str(tmp_path / "o")],
         "bad.jsonl:2: not valid JSON"),
        (["data", "tokenize", str(bad), "--tokenizer", str(tmp_path / "missing.model"), "--out", str(tmp_path / "o")],
         "missing.model: tokenizer file not found"),
        (["data", "train-tokenizer", str(bad), "--vocab-size", "300", "--out", str(tmp_path / "t.model")],
         "bad.jsonl:2: not valid JSON"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("llama2: error: ") and message in err[0], err
    assert not (tmp_path / "o").exists()
