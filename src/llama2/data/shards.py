"""Packed token shards: documents -> BOS + tokens + EOS, shuffled, split, written as flat binary files.

Llama pretrains on a stream of documents packed back to back, each wrapped as
`encode(text, bos=True, eos=True)` (LLAMA2.md §1.3, §2). A shard directory holds that stream:

    DIR/manifest.json       {"format": "llama2-shards/1", "dtype", "vocab_size", "bos_id", "eos_id",
                             "tokenizer", "seed", "val_fraction", "splits": {"train": {"files",
                             "tokens", "documents"}, "val": {...}}, "sources": [{"path", "sha256",
                             "bytes", "documents", "tokens"}]}
    DIR/tokenizer.model     the tokenizer the ids came from
    DIR/train-00000.bin ... raw little-endian uint16 (vocab <= 65536) or uint32 ids, no header
    DIR/val-00000.bin ...

A split's files concatenated in order are its token stream; documents may cross file boundaries.
Documents are shuffled by `seed` and the validation split takes whole documents. `TokenSplit` reads
any window of a split through memory maps, so no split is ever loaded whole.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import numpy as np

from llama2.atomic import replace_folder
from llama2.data.corpus import Document
from llama2.errors import ConfigError, DataError, TokenizerError
from llama2.model.tokenizer import Tokenizer
from llama2.progress import ProgressBar

FORMAT = "llama2-shards/1"
MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.model"
SPLITS = ("train", "val")
DEFAULT_SHARD_TOKENS = 1 << 27  # 256 MiB per uint16 shard
_ENCODE_BATCH_DOCUMENTS = 256
_COPY_BATCH_DOCUMENTS = 4096


class TextTokenizer(Protocol):
    """What `write_shards` needs of a tokenizer (`llama2.model.tokenizer.Tokenizer` has it)."""

    bos_id: int
    eos_id: int
    n_words: int

    def encode(self, text: str, *, bos: bool, eos: bool) -> list[int]: ...


@dataclass(frozen=True)
class SplitInfo:
    """One split: its shard files in stream order, and how many tokens and documents they hold."""

    files: tuple[str, ...]
    tokens: int
    documents: int


@dataclass(frozen=True)
class SourceInfo:
    """One input file: its identity (sha256, size) and what it contributed (both splits together)."""

    path: str
    sha256: str
    bytes: int
    documents: int
    tokens: int


@dataclass(frozen=True)
class Manifest:
    """The contents of `manifest.json` (format `llama2-shards/1`)."""

    dtype: str
    vocab_size: int
    bos_id: int
    eos_id: int
    tokenizer: str | None
    seed: int
    val_fraction: float
    splits: dict[str, SplitInfo]
    sources: tuple[SourceInfo, ...]
    format: str = FORMAT

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "dtype": self.dtype,
            "vocab_size": self.vocab_size,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "tokenizer": self.tokenizer,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "splits": {name: {"files": list(s.files), "tokens": s.tokens, "documents": s.documents} for name, s in self.splits.items()},
            "sources": [vars(s).copy() for s in self.sources],
        }

    @classmethod
    def from_dict(cls, data: dict, where: str) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise DataError(f"{where}: format is {found!r}, expected {FORMAT!r}; rebuild it with `llama2 data tokenize`")
        try:
            manifest = cls(
                dtype=str(data["dtype"]),
                vocab_size=int(data["vocab_size"]),
                bos_id=int(data["bos_id"]),
                eos_id=int(data["eos_id"]),
                tokenizer=data["tokenizer"],
                seed=int(data["seed"]),
                val_fraction=float(data["val_fraction"]),
                splits={name: SplitInfo(tuple(s["files"]), int(s["tokens"]), int(s["documents"])) for name, s in data["splits"].items()},
                sources=tuple(SourceInfo(**s) for s in data["sources"]),
            )
        except KeyError as exc:
            raise DataError(f"{where}: missing key {exc.args[0]!r}; rebuild it with `llama2 data tokenize`") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"{where}: malformed manifest ({exc}); rebuild it with `llama2 data tokenize`") from exc
        if manifest.dtype not in ("uint16", "uint32"):
            raise DataError(f"{where}: dtype {manifest.dtype!r} is not 'uint16' or 'uint32'")
        return manifest

    def save(self, directory: Path) -> None:
        (Path(directory) / MANIFEST).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Manifest:
        path = Path(directory) / MANIFEST
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise DataError(f"{path}: not found; build token shards with `llama2 data tokenize`") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: unreadable manifest ({exc})") from exc
        return cls.from_dict(data, str(path))


def dtype_for_vocab(vocab_size: int) -> str:
    """The narrowest unsigned dtype that holds every id of a `vocab_size`-piece vocabulary."""
    if vocab_size <= 1 << 16:
        return "uint16"
    if vocab_size <= 1 << 32:
        return "uint32"
    raise TokenizerError(f"a vocabulary of {vocab_size} pieces does not fit in uint32 token shards (at most {1 << 32})")


class TokenSplit:
    """Random access to one split's token stream, memory-mapped across its shard files.

    `read(start, length)` returns ids `[start, start + length)` of the concatenated stream as int64,
    reading only the pages it touches.
    """

    def __init__(self, directory: str | os.PathLike[str], split: str = "train") -> None:
        self.directory = Path(directory)
        self.manifest = Manifest.load(self.directory)
        if split not in self.manifest.splits:
            raise DataError(f"{self.directory}: no split {split!r} (splits: {', '.join(self.manifest.splits)})")
        self.split = split
        info = self.manifest.splits[split]
        self.dtype = np.dtype(self.manifest.dtype)
        self._shards = [self._map(name) for name in info.files]
        self._starts = list(itertools.accumulate((len(s) for s in self._shards), initial=0))
        if self._starts[-1] != info.tokens:
            raise DataError(f"{self.directory}: {split} shards hold {self._starts[-1]} tokens but the manifest says {info.tokens}; rebuild them")

    def _map(self, name: str) -> np.memmap:
        path = self.directory / name
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise DataError(f"{path}: shard file missing; rebuild the shards with `llama2 data tokenize`") from exc
        if size == 0 or size % self.dtype.itemsize:
            raise DataError(f"{path}: {size} bytes is not a whole, non-empty number of {self.dtype} ids; rebuild the shards")
        return np.memmap(path, dtype=self.dtype, mode="r")

    @property
    def num_tokens(self) -> int:
        return self._starts[-1]

    @property
    def num_documents(self) -> int:
        return self.manifest.splits[self.split].documents

    @property
    def vocab_size(self) -> int:
        return self.manifest.vocab_size

    def __len__(self) -> int:
        return self.num_tokens

    def read(self, start: int, length: int) -> np.ndarray:
        """Ids `[start, start + length)` of the split, shape (length,), dtype int64."""
        if start < 0 or length < 0 or start + length > self.num_tokens:
            raise IndexError(f"window [{start}, {start + length}) is outside the {self.split} split's {self.num_tokens} tokens")
        out = np.empty(length, dtype=np.int64)
        shard = bisect.bisect_right(self._starts, start) - 1
        done = 0
        while done < length:
            offset = start + done - self._starts[shard]
            take = min(length - done, len(self._shards[shard]) - offset)
            out[done : done + take] = self._shards[shard][offset : offset + take]
            done += take
            shard += 1
        return out


def write_shards(
    documents: Iterable[str | Document],
    tokenizer: str | os.PathLike[str] | TextTokenizer,
    out_dir: str | os.PathLike[str],
    *,
    val_fraction: float = 0.01,
    seed: int = 0,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    sources: Sequence[str | os.PathLike[str]] = (),
    overwrite: bool = False,
    total_documents: int | None = None,
    progress: bool = False,
    num_threads: int | None = None,
) -> Manifest:
    """Tokenize `documents` into a shard directory at `out_dir`, atomically; returns its manifest.

    `tokenizer` is a `tokenizer.model` path (copied into `out_dir`) or a tokenizer object (its
    `model_proto`, if it has one, is saved). A `Document`'s `source` must be one of `sources`, whose
    hashes and per-file counts go into the manifest. The validation split is `round(n * val_fraction)`
    whole documents (at least one when `val_fraction > 0` and there are two or more documents).
    Tokens are first staged in `out_dir`'s temporary sibling, so memory holds only one batch of
    documents and one int64 length per document.
    """
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if shard_tokens < 1:
        raise ConfigError(f"shard_tokens must be positive, got {shard_tokens}")
    tokenizer_path = Path(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else None
    if tokenizer_path is not None:
        tokenizer = Tokenizer(tokenizer_path)
    vocab_size, bos_id, eos_id = _check_vocabulary(tokenizer)
    dtype = dtype_for_vocab(vocab_size)
    out_dir = Path(out_dir)
    _check_destination(out_dir, overwrite)
    counts = {str(path): [0, 0] for path in sources}  # documents, tokens

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp's 0700 would make the finished directory private
    try:
        staging = tmp / "staging.bin"
        encode = _batch_encoder(tokenizer, num_threads or os.cpu_count() or 1)
        with staging.open("wb") as f, _progress_bar(progress, total_documents) as advance:
            lengths = _stage_tokens(documents, encode, f, np.dtype(dtype), vocab_size, counts, advance)
        if not lengths:
            raise DataError("the corpus is empty: the inputs hold no non-blank documents")
        splits = _shuffle_into_splits(staging, np.dtype(dtype), lengths, seed=seed, val_fraction=val_fraction, shard_tokens=shard_tokens)
        staging.unlink()
        manifest = Manifest(
            dtype=dtype, vocab_size=vocab_size, bos_id=bos_id, eos_id=eos_id,
            tokenizer=_save_tokenizer(tokenizer, tokenizer_path, tmp), seed=seed, val_fraction=val_fraction,
            splits=splits, sources=tuple(_describe_source(Path(p), *counts[str(p)]) for p in sources),
        )
        manifest.save(tmp)
        replace_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _check_vocabulary(tokenizer: TextTokenizer) -> tuple[int, int, int]:
    vocab_size, bos_id, eos_id = int(tokenizer.n_words), int(tokenizer.bos_id), int(tokenizer.eos_id)
    for name, token_id in (("BOS", bos_id), ("EOS", eos_id)):
        if not 0 <= token_id < vocab_size:
            raise TokenizerError(f"tokenizer's {name} id {token_id} is outside its {vocab_size}-piece vocabulary; "
                                 "train it with bos_id=1 eos_id=2 (`llama2 data train-tokenizer`)")
    return vocab_size, bos_id, eos_id


def _check_destination(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a directory; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise DataError(f"{out_dir}: exists and is not empty; choose another --out or pass --overwrite")


def _batch_encoder(tokenizer: TextTokenizer, num_threads: int) -> Callable[[list[str]], list[list[int]]]:
    """`texts -> [[BOS, *ids, EOS], ...]`; SentencePiece's batched encode runs on `num_threads` threads."""
    sp = getattr(tokenizer, "sp", None)
    if sp is None:
        return lambda texts: [tokenizer.encode(text, bos=True, eos=True) for text in texts]
    bos, eos = [tokenizer.bos_id], [tokenizer.eos_id]
    return lambda texts: [bos + ids + eos for ids in sp.encode(texts, num_threads=num_threads)]


def _stage_tokens(documents: Iterable[str | Document], encode: Callable[[list[str]], list[list[int]]], out: IO[bytes],
                  dtype: np.dtype, vocab_size: int, counts: dict[str, list[int]], advance: Callable[[int, int], None]) -> list[int]:
    """Encode documents in batches and append their ids to `out`; returns each document's length."""
    lengths: list[int] = []
    for batch in _batches(documents, _ENCODE_BATCH_DOCUMENTS):
        texts = [d.text if isinstance(d, Document) else d for d in batch]
        encoded = encode(texts)
        batch_lengths = [len(ids) for ids in encoded]
        ids = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64, count=sum(batch_lengths))
        if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
            bad = int(ids.max()) if ids.max() >= vocab_size else int(ids.min())
            raise TokenizerError(f"tokenizer produced id {bad}, outside its {vocab_size}-piece vocabulary ({dtype} shards)")
        out.write(ids.astype(dtype).tobytes())
        for document, length in zip(batch, batch_lengths):
            if isinstance(document, Document):
                if document.source not in counts:
                    raise DataError(f"document source {document.source!r} is not among the sources given to write_shards")
                counts[document.source][0] += 1
                counts[document.source][1] += length
        lengths.extend(batch_lengths)
        advance(len(batch), len(ids))
    return lengths


def _batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _shuffle_into_splits(staging: Path, dtype: np.dtype, lengths: list[int], *, seed: int, val_fraction: float,
                         shard_tokens: int) -> dict[str, SplitInfo]:
    """Permute the staged documents by `seed`; the first `_val_documents` of them become "val"."""
    order = np.random.default_rng(seed).permutation(len(lengths))
    n_val = _val_documents(len(lengths), val_fraction)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    tokens = np.memmap(staging, dtype=dtype, mode="r")
    return {name: _write_split(staging.parent, name, tokens, offsets, picked, shard_tokens)
            for name, picked in (("train", order[n_val:]), ("val", order[:n_val]))}


def _val_documents(n_documents: int, val_fraction: float) -> int:
    if val_fraction == 0 or n_documents < 2:
        return 0
    return min(max(round(n_documents * val_fraction), 1), n_documents - 1)


def _write_split(directory: Path, name: str, tokens: np.ndarray, offsets: np.ndarray, picked: np.ndarray, shard_tokens: int) -> SplitInfo:
    """Copy the documents `picked` (in that order) from the staged stream into `name-NNNNN.bin` files."""
    files: list[str] = []
    room = 0  # ids the open shard can still take
    f: IO[bytes] | None = None
    try:
        for start in range(0, len(picked), _COPY_BATCH_DOCUMENTS):
            chunk = picked[start : start + _COPY_BATCH_DOCUMENTS]
            ids = np.concatenate([tokens[offsets[i] : offsets[i + 1]] for i in chunk])
            while len(ids):
                if room == 0:
                    if f is not None:
                        f.close()
                    files.append(f"{name}-{len(files):05d}.bin")
                    f, room = (directory / files[-1]).open("wb"), shard_tokens
                f.write(ids[:room].tobytes())
                taken = min(room, len(ids))
                ids, room = ids[taken:], room - taken
    finally:
        if f is not None:
            f.close()
    return SplitInfo(tuple(files), int(offsets[picked + 1].sum() - offsets[picked].sum()), len(picked))


def _save_tokenizer(tokenizer: TextTokenizer, path: Path | None, directory: Path) -> str | None:
    """Copy the tokenizer file (or write the object's `model_proto`) into the shard directory."""
    if path is not None:
        shutil.copyfile(path, directory / TOKENIZER_FILE)
    elif getattr(tokenizer, "model_proto", None) is not None:
        (directory / TOKENIZER_FILE).write_bytes(tokenizer.model_proto)
    else:
        return None
    return TOKENIZER_FILE


def _describe_source(path: Path, documents: int, tokens: int) -> SourceInfo:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return SourceInfo(str(path), digest.hexdigest(), path.stat().st_size, documents, tokens)


@contextlib.contextmanager
def _progress_bar(enabled: bool, total_documents: int | None) -> Iterator[Callable[[int, int], None]]:
    """Yields `advance(documents, tokens)`: a bar of documents (rate, ETA) and the tokens so far."""
    tokens = 0
    with ProgressBar("tokenize", total_documents, unit="docs", enabled=enabled, fields=("tokens",),
                     transient=True) as bar:

        def advance(documents: int, more_tokens: int) -> None:
            nonlocal tokens
            tokens += more_tokens
            bar.advance(documents, tokens=f"{tokens:,} tokens")

        yield advance
