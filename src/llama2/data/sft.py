"""Supervised fine-tuning data: records from JSONL, Parquet or `datasets`, turned into checked dialogs.

Llama 2-Chat's SFT trains on dialogs (LLAMA2.md §3); this module reads the forms such data comes in
and turns each record into a `Dialog` that the chat format accepts for training. Three record forms,
told apart per record (or forced with `format=`):

- `messages`: `{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`; an
  assistant message may carry `"train": false` (as axolotl and TRL datasets do): it stays in the
  context but gets no loss (Ghost Attention's earlier turns, LLAMA2.md §6.1). It defaults to true;
  a dialog needs at least one trained answer;
- `prompt_completion`: `{"prompt": str | messages, "completion": str | messages}`; a string prompt
  is one user turn and a string completion one assistant turn;
- `alpaca`: `{"instruction": str, "input": str (optional), "output": str}`; a non-blank `input` is
  appended to the instruction after a blank line, as in Alpaca's own prompt.

Sources are `.jsonl`/`.ndjson` files (optionally `.gz`), `.parquet` files with the same columns,
and (when `datasets` is installed) a `datasets.Dataset`/`DatasetDict` object or a directory written
by `save_to_disk` — never a hub download. Every problem is a `DataError` naming `file:line` (the
1-based line of a JSONL file, the 1-based row of a Parquet file or dataset) and the field, found
before any training starts.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Union

import numpy as np

from llama2.data.corpus import jsonl_records
from llama2.errors import DataError, DialogError
from llama2.model.chat_format import SPECIAL_TAGS, validate_dialog
from llama2.types import Dialog, Message

__all__ = [
    "SFT_FORMATS",
    "ON_ERROR",
    "SFTDialog",
    "Source",
    "read_records",
    "dialog_from_record",
    "read_sft",
    "source_name",
    "parse_mixture",
    "mix_sft",
    "mix_sources",
]

SFT_FORMATS = ("messages", "prompt_completion", "alpaca")
ON_ERROR = ("raise", "skip")

# A file path, or a `datasets.Dataset` / `DatasetDict` / `IterableDataset` already in memory.
Source = Union[str, os.PathLike, Any]
T = TypeVar("T")

_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_PARQUET_SUFFIX = ".parquet"
_SAVED_DATASET_FILES = ("dataset_dict.json", "state.json")
_PARQUET_BATCH_ROWS = 1024


@dataclass(frozen=True)
class SFTDialog:
    """A training dialog and where it came from (`file:line`), so later errors can point at it."""

    messages: Dialog
    source: str


def read_records(source: Source, *, split: str = "train") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every record of `source` as `(where, record)`, `where` being `file:line` (1-based).

    Null columns of Parquet and `datasets` rows are left out of the record, so a file mixing record
    forms in one table reads like the JSONL it came from. `split` picks the split of a DatasetDict.
    """
    if not isinstance(source, (str, os.PathLike)):
        yield from _dataset_records(source, split, name="<dataset>")
        return
    path = Path(source).expanduser()
    if path.is_dir():
        yield from _dataset_records(_load_saved_dataset(path), split, name=str(path))
    elif not path.is_file():
        raise DataError(f"{path}: no such file or directory; pass a .jsonl or .parquet file or a saved datasets folder")
    elif path.name.lower().removesuffix(".gz").endswith(_JSONL_SUFFIXES):
        yield from jsonl_records(path)
    elif path.name.lower().endswith(_PARQUET_SUFFIX):
        yield from _parquet_records(path)
    else:
        raise DataError(
            f"{path}: unknown file type; use .jsonl/.ndjson (optionally .gz), .parquet, or a folder from datasets' save_to_disk"
        )


def dialog_from_record(record: Mapping[str, Any], *, where: str, format: str | None = None) -> Dialog:
    """The training dialog a record holds, checked: it ends with a non-empty assistant turn, roles
    alternate after an optional system message, and no text holds a chat-format tag."""
    fmt = format or _detect_format(record, where)
    if fmt not in SFT_FORMATS:
        raise DataError(f"unknown SFT format {fmt!r}; use one of {', '.join(SFT_FORMATS)} (or None to detect)")
    return _BUILDERS[fmt](record, where)


def read_sft(
    source: Source, *, format: str | None = None, split: str = "train", on_error: str = "raise"
) -> list[SFTDialog]:
    """All dialogs of one source, in file order.

    `on_error="skip"` leaves out bad records instead of raising, with one warning that counts them
    and names the first (for large third-party sets with a few broken rows; never silent).
    """
    return parse_records(
        source, lambda record, where: SFTDialog(dialog_from_record(record, where=where, format=format), where),
        split=split, on_error=on_error, bad=f"SFT records of {source_name(source)}",
        empty="SFT records; it needs at least one dialog",
    )


def parse_records(
    source: Source, parse: Callable[[dict[str, Any], str], T], *, split: str, on_error: str, bad: str, empty: str
) -> list[T]:
    """`parse(record, "file:line")` for every record of a source. A record that fails raises, or with
    `on_error="skip"` is left out and counted in one warning ("skipped N bad {bad}"); a source left
    with nothing is an error ("holds no {empty}")."""
    if on_error not in ON_ERROR:
        raise DataError(f"unknown on_error {on_error!r}; use one of {', '.join(ON_ERROR)}")
    items, problems = [], []
    for where, record in read_records(source, split=split):
        try:
            items.append(parse(record, where))
        except DataError as exc:
            if on_error == "raise":
                raise
            problems.append(str(exc))
    if problems:
        warnings.warn(f"skipped {len(problems)} bad {bad}; first: {problems[0]}", stacklevel=3)
    if not items:
        raise DataError(f"{source_name(source)}: holds no {empty}")
    return items


def parse_mixture(data: Any) -> list[tuple[Source, float]]:
    """`(source, weight)` pairs from the forms a recipe's `data` key takes.

    A single source (weight 1); a list whose items are a source, a `(source, weight)` pair or a
    `{"path": ..., "weight": ...}` mapping; or a `{source: weight}` mapping. Weights are positive
    finite numbers.
    """
    if isinstance(data, (str, os.PathLike)) or _is_dataset(data):
        items: list[Any] = [(data, 1.0)]
    elif isinstance(data, Mapping):
        items = list(data.items())
    elif isinstance(data, Sequence) and data:
        items = list(data)
    else:
        raise DataError(f"data: expected a file, a list of files or a {{file: weight}} mapping, got {data!r:.80}")
    return [_mixture_item(item) for item in items]


def mix_sft(
    data: Any, *, seed: int = 0, format: str | None = None, split: str = "train", shuffle: bool = True,
    on_error: str = "raise",
) -> list[SFTDialog]:
    """One epoch of a weighted mixture of sources, deterministic for a given `seed`.

    Weights are sampling proportions of each source's own size: a source of n dialogs with weight w
    contributes round(w * n) dialogs — every dialog floor(w) times, plus a seeded sample without
    replacement for the fraction. So 0.3 takes 30% of a file and 2 repeats it twice; weights need
    not sum to 1. The result is shuffled with `seed` (unless `shuffle=False`, which keeps source
    order). Training for several epochs means calling this once per epoch with `seed + epoch`, so a
    fractional weight sees a fresh sample each time.
    """
    return mix_sources(data, lambda source: read_sft(source, format=format, split=split, on_error=on_error),
                       seed=seed, shuffle=shuffle, what="dialogs")


def mix_sources(data: Any, read: Callable[[Source], list[T]], *, seed: int = 0, shuffle: bool = True,
                what: str = "records") -> list[T]:
    """`mix_sft` for any record type: `read(source)` gives a source's items, weighted and shuffled alike."""
    mixed: list[T] = []
    for index, (source, weight) in enumerate(parse_mixture(data)):
        mixed += _take(read(source), weight, np.random.default_rng([seed, index]))
    if not mixed:
        raise DataError(f"data: the weights select no {what} at all; raise them (weight w takes round(w * n) of n)")
    if shuffle:
        mixed = [mixed[i] for i in np.random.default_rng(seed).permutation(len(mixed))]
    return mixed


# --- record forms -----------------------------------------------------------------------------


def _detect_format(record: Mapping[str, Any], where: str) -> str:
    if "messages" in record:
        return "messages"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    if "instruction" in record and "output" in record:
        return "alpaca"
    keys = ", ".join(sorted(record)) or "none"
    raise DataError(
        f"{where}: unknown SFT record (fields: {keys}); expected 'messages', 'prompt'+'completion', "
        "or 'instruction'+'output' (Alpaca)"
    )


def _from_messages(record: Mapping[str, Any], where: str) -> Dialog:
    dialog = _messages(record, "messages", where)
    return _checked(dialog, where, "messages")


def _from_prompt_completion(record: Mapping[str, Any], where: str) -> Dialog:
    prompt = _turns(record, "prompt", "user", where)
    try:
        validate_dialog(prompt)
    except DialogError as exc:
        raise DataError(f"{where}: field 'prompt': {exc}") from exc
    return _checked(prompt + _turns(record, "completion", "assistant", where), where, "completion")


def _from_alpaca(record: Mapping[str, Any], where: str) -> Dialog:
    instruction = _text(record, "instruction", where)
    extra = _text(record, "input", where, required=False)
    output = _text(record, "output", where)
    if not output.strip():
        raise DataError(f"{where}: field 'output' is empty; write the answer or remove the record")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return _checked([{"role": "user", "content": user}, {"role": "assistant", "content": output}], where, "instruction")


_BUILDERS = {"messages": _from_messages, "prompt_completion": _from_prompt_completion, "alpaca": _from_alpaca}


def _turns(record: Mapping[str, Any], field: str, role: str, where: str) -> Dialog:
    """A field that is either one turn's text (of `role`) or a list of messages."""
    value = record.get(field)
    if isinstance(value, str):
        return [{"role": role, "content": _text(record, field, where)}]  # type: ignore[list-item]
    return _messages(record, field, where)


def _messages(record: Mapping[str, Any], field: str, where: str) -> Dialog:
    if field not in record:
        raise DataError(f"{where}: no {field!r} field; add it")
    value = record[field]
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise DataError(f"{where}: field {field!r} must be a non-empty list of {{'role', 'content'}} messages, got {value!r:.60}")
    for i, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise DataError(f"{where}: field {field!r}: message {i} is {type(message).__name__}; write {{'role': ..., 'content': ...}}")
        for key in ("role", "content"):
            if message.get(key) is None:
                raise DataError(f"{where}: field {field!r}: message {i} has no {key!r}; every message needs 'role' and 'content'")
    return [_message(m, f"{where}: field {field!r}: message {i}") for i, m in enumerate(value)]


def _message(message: Mapping[str, Any], where: str) -> Message:
    """Role and content, plus `"train": False` when the record says so (true is the default, so
    dropped; null, as Parquet fills the field in messages without it, means absent)."""
    out: Message = {"role": message["role"], "content": message["content"]}
    flag = message.get("train")
    if flag is None:
        return out
    if not isinstance(flag, bool):
        raise DataError(f"{where}: 'train' must be true or false, got {flag!r:.40}")
    if message["role"] != "assistant":
        raise DataError(f"{where}: 'train' applies to assistant messages only (role is {message['role']!r}); remove it")
    if not flag:
        out["train"] = False  # type: ignore[typeddict-unknown-key]
    return out


def _text(record: Mapping[str, Any], field: str, where: str, *, required: bool = True) -> str:
    value = record.get(field)
    if value is None:
        if required:
            raise DataError(f"{where}: no {field!r} field; add it")
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    for tag in SPECIAL_TAGS:
        if tag in value:
            raise DataError(f"{where}: field {field!r} contains the special tag {tag!r}, reserved by the chat format; remove it")
    return value


def _checked(dialog: Dialog, where: str, field: str) -> Dialog:
    """Apply the chat format's training rules, plus one of SFT's own: no empty answer to learn."""
    try:
        validate_dialog(dialog, for_training=True)
    except DialogError as exc:
        raise DataError(f"{where}: field {field!r}: {exc}") from exc
    for i, message in enumerate(dialog):
        if message["role"] == "assistant" and not message["content"].strip():
            raise DataError(f"{where}: field {field!r}: message {i} is an empty assistant reply; write the answer or remove the record")
    if all(m.get("train", True) is False for m in dialog if m["role"] == "assistant"):
        raise DataError(f"{where}: field {field!r}: every assistant reply has \"train\": false, so nothing is left to learn; "
                        "train at least one or remove the record")
    return dialog


# --- sources ----------------------------------------------------------------------------------


def _parquet_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        row = 0
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            for record in batch.to_pylist():
                row += 1
                yield f"{path}:{row}", _without_nulls(record)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc


def _dataset_records(dataset: Any, split: str, name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if not _is_dataset(dataset):
        raise DataError(f"data source must be a file path or a datasets.Dataset, got {type(dataset).__name__}")
    if hasattr(dataset, "keys"):  # DatasetDict / IterableDatasetDict
        if split not in dataset:
            raise DataError(f"{name}: no split {split!r} (splits: {', '.join(dataset)}); pick one with split=")
        dataset, name = dataset[split], f"{name}[{split}]"
    for row, record in enumerate(dataset, start=1):
        yield f"{name}:{row}", _without_nulls(record)


def _load_saved_dataset(path: Path) -> Any:
    if not any((path / name).is_file() for name in _SAVED_DATASET_FILES):
        raise DataError(f"{path}: a folder, but not one written by datasets' save_to_disk; pass a .jsonl or .parquet file")
    try:
        import datasets
    except ImportError as exc:
        raise DataError(f"{path}: reading a saved dataset needs the 'datasets' package; pip install 'llama2[datasets]'") from exc
    try:
        return datasets.load_from_disk(str(path))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot load the saved dataset ({exc})") from exc


def _is_dataset(value: Any) -> bool:
    """Whether `value` comes from the `datasets` package (checked without importing it)."""
    return type(value).__module__.split(".")[0] == "datasets"


def _without_nulls(record: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if value is not None}


def source_name(source: Source) -> str:
    """How error messages name a source: its path, or "<dataset>" for an object in memory."""
    return str(source) if isinstance(source, (str, os.PathLike)) else "<dataset>"


# --- mixing -----------------------------------------------------------------------------------


def _mixture_item(item: Any) -> tuple[Source, float]:
    if isinstance(item, Mapping):
        unknown = set(item) - {"path", "weight"}
        if "path" not in item or unknown:
            raise DataError(f"data: a mapping item needs 'path' and optionally 'weight', got {dict(item)!r:.80}")
        source, weight = item["path"], item.get("weight", 1.0)
    elif isinstance(item, tuple) or (isinstance(item, list) and len(item) == 2):
        if len(item) != 2:
            raise DataError(f"data: expected a (path, weight) pair, got {item!r:.80}")
        source, weight = item
    else:
        source, weight = item, 1.0
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        raise DataError(f"data: weight of {source_name(source)} is {weight!r}; use a positive number (0.5 = half the file, 2 = twice)")
    return source, float(weight)


def _take(items: list[T], weight: float, rng: np.random.Generator) -> list[T]:
    whole = int(weight)
    extra = round((weight - whole) * len(items))
    picked = np.sort(rng.choice(len(items), size=extra, replace=False))
    return items * whole + [items[i] for i in picked]
