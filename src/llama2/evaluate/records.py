"""Rows of the small tables people bring to an evaluation (human ratings, pairwise votes), from CSV
with a header row or from JSONL, each with its "file:line" so a bad row is reported where it is."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from llama2.data.corpus import jsonl_records
from llama2.errors import DataError

DELIMITERS = {".csv": ",", ".tsv": "\t"}
JSONL_SUFFIXES = (".jsonl", ".json")


def table_records(path: Path | str, columns: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """`("file:line", row)` for each row of a CSV/TSV file (header row first) or a JSONL file
    (one object per line), chosen by the file's suffix. Every row has all of `columns`; other
    columns are passed through. CSV values are strings, JSONL values whatever the JSON holds."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix in DELIMITERS:
        yield from _csv_records(path, columns, DELIMITERS[suffix])
    elif suffix in JSONL_SUFFIXES:
        for where, record in jsonl_records(path):
            missing = [column for column in columns if column not in record]
            if missing:
                raise DataError(f"{where}: no field {missing[0]!r}; each line needs {', '.join(columns)}")
            yield where, record
    else:
        raise DataError(f"{path}: unknown file type {suffix or '(none)'}; give a .csv, .tsv or .jsonl file "
                        f"with the columns {','.join(columns)}")


def _csv_records(path: Path, columns: Sequence[str], delimiter: str) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            header = [name.strip() for name in reader.fieldnames or []]
            missing = [column for column in columns if column not in header]
            if missing:
                raise DataError(f"{path}:1: no column {missing[0]!r} in the header ({','.join(header) or 'empty'}); "
                                f"the first row must name the columns {','.join(columns)}")
            reader.fieldnames = header
            for row in reader:  # DictReader skips blank lines itself
                extra, short = row.pop(None, None), [name for name in header if row[name] is None]
                if extra is not None or short:
                    fields = len(header) - len(short) + len(extra or [])
                    raise DataError(f"{path}:{reader.line_num}: {fields} fields where the header has {len(header)} "
                                    f"({','.join(header)}); quote values that contain {delimiter!r}")
                yield f"{path}:{reader.line_num}", row
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text; save the file as UTF-8") from error
    except csv.Error as error:
        raise DataError(f"{path}: not a valid CSV file ({error})") from error
