"""The models a server offers: each configured name bound to a loaded provider.

Everything is loaded before the port opens, so a bad checkpoint path or a missing Azure key is an
error at start-up rather than on some user's first request.
"""

from __future__ import annotations

from dataclasses import dataclass

from llama2.errors import Llama2Error, ConfigError
from llama2.providers.base import Provider
from llama2.providers.local import LocalProvider
from llama2.providers.registry import load_provider, parse_spec
from llama2.serve.config import SERVED_MAX_QUEUE, ModelEntry
from llama2.serve.protocol import ModelNotFoundError


@dataclass
class ServedModel:
    entry: ModelEntry
    provider: Provider

    @property
    def owned_by(self) -> str:
        return parse_spec(self.entry.spec)[0]

    @property
    def queue_depth(self) -> int | None:
        """Requests waiting for a decode row (local models; remote ones queue upstream)."""
        return self.provider.scheduler.queue_depth if isinstance(self.provider, LocalProvider) else None

    @property
    def active(self) -> int | None:
        return self.provider.scheduler.active if isinstance(self.provider, LocalProvider) else None


class ModelPool:
    """Name -> served model, in the configured order."""

    def __init__(self, models: list[ServedModel]) -> None:
        self.models = {m.entry.name: m for m in models}

    @classmethod
    def load(cls, entries: tuple[ModelEntry, ...]) -> "ModelPool":
        loaded: list[ServedModel] = []
        for entry in entries:
            options = dict(entry.options)
            if entry.is_local:
                options.setdefault("max_queue", SERVED_MAX_QUEUE)
            try:
                loaded.append(ServedModel(entry, load_provider(entry.spec, **options)))
            except Llama2Error as exc:
                raise ConfigError(f"models.{entry.name}: {exc}") from exc
        return cls(loaded)

    def get(self, name: str) -> ServedModel:
        try:
            return self.models[name]
        except KeyError:
            offered = ", ".join(self.models) or "none"
            raise ModelNotFoundError(f"The model '{name}' does not exist on this server (offered: {offered})") from None

    async def aclose(self) -> None:
        for model in self.models.values():
            await model.provider.aclose()
