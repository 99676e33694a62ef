"""A SQLite cache of model responses, so a killed evaluation resumes without repeating finished work.

Every response is stored under a key that hashes (provider identity, request kind, the request as
canonical JSON including its sampling settings). Entries are written as each batch of responses
arrives, one transaction per batch, so whatever finished before a crash is on disk; WAL mode lets a
second process (another run sharing the cache) read while one writes.

Random draws. A request sampled with `temperature > 0` and no seed is a draw, not a function of its
text: two samples asking the same prompt (pass@k, maj@k, or two tasks that happen to share one) must
get independent answers, so such requests are keyed with a `draw` label as well — the task, the
sample id and the request's position in the sample. Consequences: resuming reuses exactly the draws
already made (a resumed run equals an uninterrupted one), identical random requests are never
merged, and a re-run over the same cache returns the same draws rather than fresh ones; use another
cache file for fresh draws. A seeded or greedy request is deterministic and is shared by every sample
and task that asks it.

Failures are never stored: a request that errored is asked again on the next run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from llama2.errors import DataError
from llama2.evaluate.benchmarks.base import Request, Response
from llama2.providers.base import Completion, GenerateRequest, Loglikelihood, LoglikelihoodRequest

DEFAULT_CACHE_PATH = Path("~/.cache/llama2/eval-cache.sqlite")
SCHEMA_VERSION = 1
_LOOKUP_CHUNK = 500  # keys per SELECT ... IN (...), well under SQLite's variable limit

_RESPONSE_TYPES: dict[str, type] = {"generate": Completion, "loglikelihood": Loglikelihood}


def request_kind(request: Request) -> str:
    """"generate" or "loglikelihood": which provider call answers `request`."""
    if isinstance(request, GenerateRequest):
        return "generate"
    if isinstance(request, LoglikelihoodRequest):
        return "loglikelihood"
    raise TypeError(f"not a provider request: {type(request).__name__}")


def is_random_draw(request: Request) -> bool:
    """True for a sampled (temperature > 0) generate request without a seed: its answer is a draw."""
    return isinstance(request, GenerateRequest) and request.params.temperature > 0 and request.params.seed is None


def request_key(identity: str, request: Request, draw: str | None = None) -> str:
    """The cache key: sha256 hex of the canonical JSON of (identity, kind, request, draw)."""
    payload = {"identity": identity, "kind": request_kind(request), "request": _normalize(dataclasses.asdict(request)),
               "draw": draw}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _normalize(value: Any) -> Any:
    """Make equal requests serialize equally: integral floats become ints (temperature 0 == 0.0)."""
    if isinstance(value, dict):
        return {key: _normalize(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalize(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class ResponseCache:
    """Responses by key in one SQLite file. One connection, guarded by a lock, so coroutines (and
    threads) of one process share it safely; each `put_many` is one committed transaction."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        except sqlite3.Error as error:
            raise DataError(f"{self.path}: cannot open the evaluation cache ({error}); choose another cache file") from None
        try:
            self._setup()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise DataError(f"{self.path}: not a usable evaluation cache ({error}); delete it or choose another cache file") from None
        except DataError:
            self._db.close()
            raise

    def _setup(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise DataError(f"{self.path}: evaluation cache of schema {version}, this llama2 reads {SCHEMA_VERSION}; "
                            "delete it or choose another cache file")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: durable across a killed process
        with self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, kind TEXT NOT NULL, "
                             "identity TEXT NOT NULL, response TEXT NOT NULL, created REAL NOT NULL)")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def get_many(self, keys: Iterable[str]) -> dict[str, Response]:
        """The cached responses among `keys` (missing keys are simply absent)."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Response] = {}
        with self._lock:
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = keys[start:start + _LOOKUP_CHUNK]
                rows = self._db.execute(f"SELECT key, kind, response FROM responses WHERE key IN ({','.join('?' * len(chunk))})",
                                        chunk).fetchall()
                for key, kind, text in rows:
                    found[key] = _RESPONSE_TYPES[kind](**json.loads(text))
        return found

    def put_many(self, identity: str, entries: Sequence[tuple[str, Request, Response]]) -> None:
        """Store (key, request, response) triples in one transaction."""
        now = time.time()
        rows = [(key, request_kind(request), identity, json.dumps(dataclasses.asdict(response)), now)
                for key, request, response in entries]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
