"""Corpus readers: text, JSONL, Parquet; directories and globs; clear one-line errors; the shipped sample."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llama2.data.corpus import DataError, count_documents, read_documents, resolve_inputs, sample_corpus_path


def texts(files, **kwargs) -> list[str]:
    return [d.text for d in read_documents(files, **kwargs)]


def test_text_file_is_one_document_or_blank_line_blocks(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("First block\nstill first.\n\n  \n\nSecond block.\r\n\r\nThird.\n")
    assert texts([path]) == ["First block\nstill first.\n\n  \n\nSecond block.\r\n\r\nThird.\n"]
    assert texts([path], split_blank_lines=True) == ["First block\nstill first.", "Second block.", "Third."]
    assert count_documents([path], split_blank_lines=True) == 3


def test_blank_documents_are_skipped_and_source_is_recorded(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\n")
    (tmp_path / "b.txt").write_text("hello")
    docs = list(read_documents(resolve_inputs([tmp_path])))
    assert [(d.text, d.source) for d in docs] == [("hello", str(tmp_path / "b.txt"))]


def test_directories_globs_and_order(tmp_path):
    for name in ("b.txt", "a.md", "sub/c.jsonl", ".hidden/d.txt", "notes.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text('{"text": "x"}\n' if name.endswith("jsonl") else "x")
    assert resolve_inputs([tmp_path]) == [tmp_path / "a.md", tmp_path / "b.txt", tmp_path / "sub/c.jsonl"]
    assert resolve_inputs([str(tmp_path / "*.txt"), tmp_path / "b.txt"]) == [tmp_path / "b.txt"]
    assert resolve_inputs([str(tmp_path / "**/*.jsonl")]) == [tmp_path / "sub/c.jsonl"]
    # An explicitly named file is read whatever its suffix.
    assert resolve_inputs([tmp_path / "notes.csv"]) == [tmp_path / "notes.csv"]


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing.txt", "missing.txt: input not found"),
    (lambda tmp: str(tmp / "*.jsonl"), "glob matches no files"),
    (lambda tmp: tmp, "directory holds no"),
])
def test_missing_inputs_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(DataError, match=message) as error:
        resolve_inputs([make(tmp_path)])
    assert "\n" not in str(error.value)


def test_no_inputs():
    with pytest.raises(DataError, match="no input files"):
        resolve_inputs([])


def test_jsonl_custom_field_and_gzip(tmp_path):
    lines = [{"body": "one", "id": 1}, {"body": "   "}, {"body": "two\nlines"}]
    plain = tmp_path / "a.jsonl"
    plain.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    packed = tmp_path / "b.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert texts([plain, packed], text_field="body") == ["one", "two\nlines"] * 2
    assert count_documents([plain, packed]) == 6  # an estimate: blank texts are counted


@pytest.mark.parametrize("line, message", [
    ('{"text": "ok"', r"bad\.jsonl:2: not valid JSON"),
    ('["text"]', r"bad\.jsonl:2: expected a JSON object, got list"),
    ('{"body": "x", "id": 3}', r"bad\.jsonl:2: no 'text' field \(fields: body, id\); choose the text field with --text-field"),
    ('{"text": 5}', r"bad\.jsonl:2: field 'text' is int, expected a string"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(DataError, match=message) as error:
        list(read_documents([path]))
    assert "\n" not in str(error.value)


def test_non_utf8_text_is_reported(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt: not UTF-8 text \(bad byte at offset 3\)"):
        list(read_documents([path]))
    jsonl = tmp_path / "latin1.jsonl"
    jsonl.write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl:1: not UTF-8"):
        list(read_documents([jsonl]))


def test_parquet_text_column(tmp_path):
    path = tmp_path / "part.parquet"
    pq.write_table(pa.table({"content": ["alpha", None, "", "beta"], "n": [1, 2, 3, 4]}), path)
    assert texts([path], text_field="content") == ["alpha", "beta"]
    assert count_documents([path]) == 4
    with pytest.raises(DataError, match=r"part\.parquet: no 'text' column \(columns: content, n\)"):
        list(read_documents([path]))
    with pytest.raises(DataError, match=r"column 'n' has type int64, expected string"):
        list(read_documents([path], text_field="n"))


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"broken\.parquet: not a readable Parquet file"):
        list(read_documents([path]))


def test_shipped_sample_is_small_public_domain_jsonl():
    path = sample_corpus_path()
    assert path.is_file() and path.stat().st_size <= 1_000_000
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) > 100
    assert {r["source"] for r in records} <= {"kjv", "devil"}  # public-domain sources only
    assert records[0]["text"].startswith("Genesis 1\n\nIn the beginning God created the heaven and the earth.")
    assert (path.parent / "README.md").is_file()
