"""Read pretraining documents from plain text, JSONL and Parquet files.

A document is the unit Llama's pretraining wraps in BOS ... EOS (LLAMA2.md §1.3, §2). Inputs are
files, directories (searched recursively for the known suffixes) or glob patterns; the format is
told by the suffix:

- `.jsonl`, `.ndjson` (optionally `.gz`): one JSON object per line, its text under `text_field`;
- `.parquet`: the string column `text_field`;
- anything else (`.txt`, `.md`, ..., optionally `.gz`): UTF-8 text, one document per file, or one per
  blank-line-separated block with `split_blank_lines=True`.

Blank documents (empty or whitespace only) are skipped everywhere; text is otherwise kept as is.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

from llama2.errors import DataError  # re-exported: callers catch it from here too

JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
TEXT_SUFFIXES = (".txt", ".text", ".md")
# Suffixes picked up when a directory is given (explicitly named files may have any suffix).
DIRECTORY_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES + TEXT_SUFFIXES + tuple(s + ".gz" for s in JSONL_SUFFIXES + TEXT_SUFFIXES)

_BLANK_LINES = re.compile(r"\n[ \t\r]*\n(?:[ \t\r]*\n)*")
_PARQUET_BATCH_ROWS = 1024
_SAMPLE_CORPUS = "assets/corpus/sample.jsonl"


@dataclass(frozen=True)
class Document:
    """One document's text and the file it came from (as the input named it)."""

    text: str
    source: str


def sample_corpus_path() -> Path:
    """The small public-domain corpus shipped with the package (JSONL, `text` field; see its README)."""
    return Path(str(resources.files("llama2").joinpath(_SAMPLE_CORPUS)))


def resolve_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files named by `inputs` (files, directories, globs), in a stable order and without repeats."""
    if not inputs:
        raise DataError("no input files given; pass text, JSONL or Parquet files, directories or globs")
    files: dict[Path, None] = {}
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _listed_in_directory(p, path))
            if not found:
                raise DataError(f"{path}: directory holds no {', '.join(DIRECTORY_SUFFIXES)} files")
        elif any(c in str(path) for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not found:
                raise DataError(f"{path}: glob matches no files")
        else:
            raise DataError(f"{path}: input not found (no such file, directory or glob match)")
        files.update(dict.fromkeys(found))
    return list(files)


def read_documents(files: Iterable[Path], *, text_field: str = "text", split_blank_lines: bool = False) -> Iterator[Document]:
    """Every non-blank document of `files`, file by file, in file order."""
    for path in files:
        kind = file_kind(path)
        if kind == "jsonl":
            yield from _read_jsonl(path, text_field)
        elif kind == "parquet":
            yield from _read_parquet(path, text_field)
        else:
            yield from _read_text(path, split_blank_lines)


def count_documents(files: Iterable[Path], *, split_blank_lines: bool = False) -> int:
    """A fast estimate of how many documents `read_documents` yields (for progress bars).

    Exact for text files; JSONL counts non-blank lines and Parquet counts rows, so documents with a
    blank text field are counted although they are skipped.
    """
    total = 0
    for path in files:
        kind = file_kind(path)
        if kind == "jsonl":
            with open_binary(path) as f:
                total += sum(1 for line in f if line.strip())
        elif kind == "parquet":
            total += _parquet_file(path).metadata.num_rows
        else:
            total += sum(1 for _ in _read_text(path, split_blank_lines))
    return total


def file_kind(path: Path) -> str:
    """'jsonl', 'parquet' or 'text', by suffix (a trailing `.gz` is looked through)."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES) and not path.name.lower().endswith(".gz"):
        return "parquet"
    return "text"


def _listed_in_directory(path: Path, root: Path) -> bool:
    hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
    return not hidden and path.name.lower().endswith(DIRECTORY_SUFFIXES)


def open_binary(path: Path) -> IO[bytes]:
    try:
        return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({exc.strerror or exc})") from exc


def _read_text(path: Path, split_blank_lines: bool) -> Iterator[Document]:
    with open_binary(path) as f:
        try:
            raw = f.read()
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: cannot read ({exc})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {exc.start}); convert the file to UTF-8") from exc
    blocks = (b.strip("\r\n") for b in _BLANK_LINES.split(text)) if split_blank_lines else (text,)
    for block in blocks:
        if block.strip():
            yield Document(block, str(path))


def jsonl_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """`("file:line", object)` for each non-blank line of a JSONL file (gzip when named .gz); a
    line that is not a JSON object is a DataError naming the file and line."""
    with open_binary(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except UnicodeDecodeError as exc:
                raise DataError(f"{where}: not UTF-8 text; convert the file to UTF-8") from exc
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object") from exc
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield where, record


def _read_jsonl(path: Path, text_field: str) -> Iterator[Document]:
    for where, record in jsonl_records(path):
        if text_field not in record:
            keys = ", ".join(sorted(record)) or "none"
            raise DataError(f"{where}: no {text_field!r} field (fields: {keys}); choose the text field with --text-field")
        text = record[text_field]
        if not isinstance(text, str):
            raise DataError(f"{where}: field {text_field!r} is {type(text).__name__}, expected a string")
        if text.strip():
            yield Document(text, str(path))


def _parquet_file(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc


def _read_parquet(path: Path, text_field: str) -> Iterator[Document]:
    import pyarrow as pa

    parquet = _parquet_file(path)
    schema = parquet.schema_arrow
    if text_field not in schema.names:
        raise DataError(f"{path}: no {text_field!r} column (columns: {', '.join(schema.names)}); choose it with --text-field")
    column_type = schema.field(text_field).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise DataError(f"{path}: column {text_field!r} has type {column_type}, expected string")
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[text_field]):
        for text in batch.column(0).to_pylist():
            if text is not None and text.strip():
                yield Document(text, str(path))
