"""Remote models' upstream API keys kept by the server (set on the admin page or with `llama2 admin
set-upstream-key`), so a team need not put the company's Azure OpenAI key into every machine's
environment.

A key is sealed with the server's secret key (`serve.secrets`, bound to the model's name) before it
reaches the store, and opened only to build the model's provider, where it takes the place of the
environment variable. What the rest of the server may see of it is `KeyStatus`: whether one is set,
its last four characters (for keys long enough that four reveal nothing useful), when and by whom.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select

from llama2.errors import ConfigError
from llama2.providers.registry import parse_spec
from llama2.serve.config import ModelEntry
from llama2.serve.models import ModelPool
from llama2.serve.secrets import SecretBox
from llama2.serve.store import Store, UpstreamKey, utcnow

KEYED_SCHEMES = ("openai", "azure", "anthropic", "openai-compatible")  # the providers that take an API key
MAX_KEY_CHARS = 4096
MIN_CHARS_TO_SHOW_TAIL = 16


@dataclass(frozen=True)
class KeyStatus:
    """What may be shown of a stored key: never the key."""

    model: str
    tail: str | None  # its last 4 characters, or None for a short key
    updated_at: datetime
    updated_by: str | None
    problem: str | None = None  # why it cannot be opened (another secret key, damage), if it cannot


def takes_key(entry: ModelEntry) -> bool:
    return parse_spec(entry.spec)[0] in KEYED_SCHEMES


def check_key(entry: ModelEntry, key: str) -> str:
    """The key as it will be stored (surrounding space removed); ConfigError for a model that takes no
    key or a value that cannot be one. Messages never repeat the value."""
    if not takes_key(entry):
        raise ConfigError(f"model {entry.name} runs on this server ({entry.spec}) and takes no upstream key")
    key = key.strip()
    if not key:
        raise ConfigError(f"the key for {entry.name} is empty; paste the API key from the provider's portal")
    if len(key) > MAX_KEY_CHARS or any(c.isspace() or not c.isprintable() for c in key):
        raise ConfigError(f"that is not an API key for {entry.name} (keys are one line of printable characters, "
                          "no spaces)")
    return key


def purpose(model: str) -> str:
    return f"upstream key of model {model}"


class UpstreamKeys:
    def __init__(self, store: Store, box: SecretBox) -> None:
        self._store = store
        self._box = box

    @property
    def key_source(self) -> str:
        return self._box.source

    def opened(self, models: list[str] | None = None) -> dict[str, str]:
        """model -> key, for building providers (of `models` only, when given)."""
        return {row.model: self._open(row) for row in self._rows(models)}

    def statuses(self) -> dict[str, KeyStatus]:
        """model -> what the admin page shows of its stored key."""
        statuses = {}
        for row in self._rows(None):
            try:
                key = self._open(row)
            except ConfigError as exc:
                statuses[row.model] = KeyStatus(row.model, None, row.updated_at, row.updated_by, str(exc))
                continue
            tail = key[-4:] if len(key) >= MIN_CHARS_TO_SHOW_TAIL else None
            statuses[row.model] = KeyStatus(row.model, tail, row.updated_at, row.updated_by)
        return statuses

    def apply(self, pool: ModelPool, model: str, key: str | None, *, actor: str | None) -> None:
        """Set (`key`) or remove (None) the stored key of a served model. The provider is rebuilt with it
        first, so a key the provider cannot take — or a removal that leaves no key in the environment —
        is a ConfigError that changes nothing."""
        entry = pool.get(model).entry
        if key is not None:
            key = check_key(entry, key)
        elif not takes_key(entry):
            raise ConfigError(f"model {model} runs on this server ({entry.spec}) and takes no upstream key")
        try:
            previous = self.opened([model]).get(model)
        except ConfigError:  # sealed under another secret key: the new value replaces it
            previous = None
        try:
            pool.rebuild(model, key)
        except ConfigError as exc:
            reason = str(exc).removeprefix(f"models.{model}: ")
            raise ConfigError(f"cannot use this key for {model}: {reason}" if key is not None else
                              f"cannot remove the stored key of {model}, it would have none: {reason}") from None
        try:
            if key is None:
                self.remove(model)
            else:
                self.save(model, key, actor=actor)
        except BaseException:
            with contextlib.suppress(ConfigError):
                pool.rebuild(model, previous)  # the store did not change; neither does the model
            raise

    def save(self, model: str, key: str, *, actor: str | None) -> None:
        """Store a key (checked) for `model`, sealed, as it is: a running server uses it from its next start
        (`apply` is the way to change a running server's model)."""
        sealed = self._box.seal(key, purpose=purpose(model))
        with self._store.writing() as session:
            row = session.get(UpstreamKey, model)
            if row is None:
                session.add(UpstreamKey(model=model, ciphertext=sealed, updated_by=actor))
            else:
                row.ciphertext, row.updated_at, row.updated_by = sealed, utcnow(), actor

    def remove(self, model: str) -> bool:
        """Forget the stored key of `model` (from the next start on); False when there was none."""
        with self._store.writing() as session:
            return session.execute(delete(UpstreamKey).where(UpstreamKey.model == model)).rowcount > 0

    def _rows(self, models: list[str] | None) -> list[UpstreamKey]:
        query = select(UpstreamKey).order_by(UpstreamKey.model)
        if models is not None:
            query = query.where(UpstreamKey.model.in_(models))
        with self._store.reading() as session:
            return list(session.scalars(query))

    def _open(self, row: UpstreamKey) -> str:
        return self._box.open(row.ciphertext, purpose=purpose(row.model))
