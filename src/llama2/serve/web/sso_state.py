"""The single sign-ons of a server: each `web.sso[]` provider's OpenID client, and the sign-ins in
progress, kept in the store (`sso_logins`) under the SHA-256 of the browser's one-time cookie so that
any server process can finish them and each finishes once (`web.sso` has the routes).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete

from llama2.errors import ConfigError
from llama2.serve.config import SSOProvider
from llama2.serve.store import SSOLogin, Store, utcnow
from llama2.serve.web.sso_client import OIDCClient, new_secrets

LOGIN_LIFETIME = timedelta(minutes=10)


@dataclass(frozen=True)
class PendingLogin:
    provider: str
    state: str
    nonce: str
    code_verifier: str
    next_path: str


class SingleSignOn:
    """The configured providers' clients and the sign-ins in progress (in the store)."""

    def __init__(self, store: Store, clients: Mapping[str, OIDCClient]) -> None:
        self._store = store
        self.clients = dict(clients)

    @classmethod
    def create(cls, store: Store, providers: tuple[SSOProvider, ...],
               environ: Mapping[str, str] | None = None) -> SingleSignOn:
        """Clients for `providers`, their secrets read from the environment now (ConfigError, before the
        port opens, for a variable that is not set)."""
        environ = os.environ if environ is None else environ
        missing = [f"web.sso[{p.name}]: the environment variable {p.client_secret_env} (client_secret_env) is not set"
                   for p in providers if p.client_secret_env and not environ.get(p.client_secret_env)]
        if missing:
            raise ConfigError("; ".join(missing))
        return cls(store, {p.name: OIDCClient(p, environ.get(p.client_secret_env) if p.client_secret_env else None)
                           for p in providers})

    @property
    def buttons(self) -> list[tuple[str, str]]:
        """(name, label) of each provider, in the configured order."""
        return [(name, client.provider.label) for name, client in self.clients.items()]

    def begin(self, provider: str, next_path: str) -> tuple[str, PendingLogin]:
        """Record a new sign-in: (the browser's one-time cookie token, what the callback will check)."""
        token = secrets.token_urlsafe(32)
        state, nonce, verifier = new_secrets()
        now = utcnow()
        with self._store.writing() as session:
            session.execute(delete(SSOLogin).where(SSOLogin.expires_at <= now))
            session.add(SSOLogin(id=_login_id(token), provider=provider, state=state, nonce=nonce,
                                 code_verifier=verifier, next_path=next_path, created_at=now,
                                 expires_at=now + LOGIN_LIFETIME))
        return token, PendingLogin(provider, state, nonce, verifier, next_path)

    def take(self, token: str | None) -> PendingLogin | None:
        """The sign-in a cookie started, deleted as it is read (a callback works once); None when there
        is none or it expired."""
        if not token:
            return None
        with self._store.writing() as session:
            row = session.get(SSOLogin, _login_id(token))
            if row is None:
                return None
            session.delete(row)
            if row.expires_at <= utcnow():
                return None
            return PendingLogin(row.provider, row.state, row.nonce, row.code_verifier, row.next_path)


def _login_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
