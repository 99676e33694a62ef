"""The models a server offers: each configured name bound to a loaded provider.

Everything is loaded before the port opens, so a bad checkpoint path or a missing Azure key is an
error at start-up rather than on some user's first request. A remote model's upstream key may also
come from the server's store (set on the admin page, `serve.upstream_keys`): it wins over the
environment's, and setting or removing it rebuilds that model's provider while the server runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llama2.errors import Llama2Error, ConfigError
from llama2.providers.base import Provider
from llama2.providers.local import LocalProvider
from llama2.providers.registry import load_provider, parse_spec
from llama2.providers.settings import STORED_KEY
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
        self._retired: list[Provider] = []  # replaced providers, closed with the pool (streams may still use them)

    @classmethod
    def load(cls, entries: tuple[ModelEntry, ...], api_keys: Mapping[str, str] | None = None) -> "ModelPool":
        """Load every model; `api_keys` maps model names to stored upstream keys."""
        return cls([ServedModel(entry, _provider(entry, (api_keys or {}).get(entry.name))) for entry in entries])

    def rebuild(self, name: str, api_key: str | None) -> None:
        """Serve `name` from a new provider with this upstream key (None: the environment's). The new
        provider is built first, so a failure (ConfigError) leaves the running one in place; requests
        under way finish on the old one."""
        served = self.get(name)
        provider = _provider(served.entry, api_key)
        self.models[name] = ServedModel(served.entry, provider)
        self._retired.append(served.provider)

    def get(self, name: str) -> ServedModel:
        try:
            return self.models[name]
        except KeyError:
            offered = ", ".join(self.models) or "none"
            raise ModelNotFoundError(f"The model '{name}' does not exist on this server (offered: {offered})") from None

    async def aclose(self) -> None:
        for provider in [*self._retired, *(m.provider for m in self.models.values())]:
            await provider.aclose()


def _provider(entry: ModelEntry, api_key: str | None) -> Provider:
    options = dict(entry.options)
    if entry.is_local:
        options.setdefault("max_queue", SERVED_MAX_QUEUE)
    if api_key is not None:
        options[STORED_KEY] = api_key
    try:
        return load_provider(entry.spec, **options)
    except Llama2Error as exc:
        message = str(exc).replace(api_key, "***") if api_key else str(exc)
        raise ConfigError(f"models.{entry.name}: {message}") from (None if api_key else exc)
