"""What every benchmark does with its files: read JSON/JSONL (plain or gzipped) with errors that name
the file and line, say how to get missing data, and apply `--limit` fairly across groups."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from llama2.errors import DataError
from llama2.providers.base import Capabilities
from llama2.types import SamplingParams

T = TypeVar("T")


def missing_data(name: str, data_dir: Path, expected: str) -> DataError:
    """The one message for absent data: what was looked for, and the two ways to provide it."""
    return DataError(f"{data_dir}: no {name} data ({expected} not found); "
                     f"run `llama2 data fetch {name}` or pass --data-dir")


def read_text(path: Path) -> str:
    """UTF-8 text of a plain or `.gz` file."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                return handle.read()
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as error:
        raise DataError(f"{path}: cannot read ({error}); fetch the file again") from error


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: not valid JSON ({error.msg}); fetch the file again") from error


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON Lines file (blank lines skipped); each must be a JSON object."""
    records = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{lineno}: not valid JSON ({error.msg}); fix or remove the line") from error
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def require_fields(record: Mapping[str, Any], fields: Iterable[str], where: str) -> None:
    """Fail with the file:line `where` if a string field is missing."""
    for name in fields:
        if not isinstance(record.get(name), str):
            raise DataError(f"{where}: missing string field {name!r}")


def take_first(items: list[T], limit: int | None) -> list[T]:
    """The first `limit` items (all when None)."""
    return take_per_group({"": items}, limit).get("", [])


def take_per_group(groups: Mapping[str, list[T]], limit: int | None) -> dict[str, list[T]]:
    """The first `limit` items of the groups taken in turn (item 0 of every group, then item 1, ...),
    kept group by group. A small `--limit` on MMLU then touches every subject instead of only the
    first, while the total stays `limit` as the Task contract promises."""
    if limit is None:
        return {name: list(items) for name, items in groups.items()}
    if limit < 0:
        raise DataError(f"--limit must be at least 0, got {limit}")
    counts = dict.fromkeys(groups, 0)
    left, depth = limit, 0
    while left > 0 and any(len(items) > depth for items in groups.values()):
        for name, items in groups.items():
            if left > 0 and len(items) > depth:
                counts[name] += 1
                left -= 1
        depth += 1
    return {name: list(items[: counts[name]]) for name, items in groups.items() if counts[name]}


def use_chat(capabilities: Capabilities) -> bool:
    """Dialogs only for providers that cannot continue raw text (chat APIs)."""
    return not capabilities.text_completion


def greedy(max_new_tokens: int, stop: tuple[str, ...] = ()) -> SamplingParams:
    """Greedy decoding, as every benchmark here is scored (a single sample: maj@1 / pass@1)."""
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0, stop=stop)
