"""Which roles may use each model. serve.yaml's `roles:` is the default; roles an admin sets on the
admin page are stored and win over it until reset ("back to serve.yaml").

The served models carry the roles in force (`ModelEntry.roles`), so the gateway (`/v1`) and the web
chat check them with no lookup per request: `apply` puts the stored roles on the models at start-up
and `set` changes them in this process at once. Another server process sharing the database sees a
change at its next start.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select

from llama2.errors import ConfigError
from llama2.serve.auth import ROLES
from llama2.serve.models import ModelPool
from llama2.serve.store import ModelRoles, Store, utcnow


@dataclass(frozen=True)
class StoredRoles:
    roles: tuple[str, ...]
    updated_at: datetime
    updated_by: str | None


class ModelAccess:
    def __init__(self, store: Store, pool: ModelPool) -> None:
        self._store = store
        self._pool = pool
        # serve.yaml's roles, taken before any stored ones are applied (None: every role)
        self.configured = {name: served.entry.roles for name, served in pool.models.items()}

    def stored(self) -> dict[str, StoredRoles]:
        """model -> the roles an admin set for it (models no longer served included)."""
        with self._store.reading() as session:
            rows = list(session.scalars(select(ModelRoles)))
        return {row.model: StoredRoles(tuple(row.roles), row.updated_at, row.updated_by) for row in rows}

    def apply(self) -> None:
        """Put the stored roles on the served models (start-up)."""
        for model, stored in self.stored().items():
            if model in self._pool.models:
                self._put(model, stored.roles)

    def set(self, model: str, roles: list[str] | None, *, actor: str | None) -> None:
        """Let exactly `roles` use `model` (an empty list: nobody), or None to go back to serve.yaml's."""
        self._pool.get(model)  # ModelNotFoundError for a model this server does not offer
        if roles is not None:
            unknown = [role for role in roles if role not in ROLES]
            if unknown:
                raise ConfigError(f"unknown role(s) {', '.join(unknown)} (valid: {', '.join(ROLES)})")
            roles = [role for role in ROLES if role in roles]
        with self._store.writing() as session:
            row = session.get(ModelRoles, model)
            if roles is None:
                session.execute(delete(ModelRoles).where(ModelRoles.model == model))
            elif row is None:
                session.add(ModelRoles(model=model, roles=roles, updated_by=actor))
            else:
                row.roles, row.updated_at, row.updated_by = roles, utcnow(), actor
        self._put(model, tuple(roles) if roles is not None else self.configured.get(model))

    def _put(self, model: str, roles: tuple[str, ...] | None) -> None:
        served = self._pool.models[model]
        served.entry = dataclasses.replace(served.entry, roles=roles)
