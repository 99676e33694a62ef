"""The audit log: who changed what, when — every admin action (web or `llama2 admin`) and every sign-in
event — in the store's `audit_log` table, read back newest first, a page at a time.

Callers pass words, never secrets: an upstream key's event names the model, a sign-in's names the
email and how, a failure the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from llama2.serve.store import AuditEvent, Store

MAX_DETAIL_CHARS = 500

# action -> what it means (the admin page's legend, and the list of actions that exist)
ACTIONS = {
    "signin": "signed in (password, or single sign-on through a provider)",
    "signin.failed": "a sign-in was refused",
    "signout": "signed out",
    "setup": "created the first admin on the setup page",
    "user.add": "a user was added (`llama2 admin add-user`, or a sign-up where allowed)",
    "user.invite": "invited a user (with a one-time set-password link)",
    "user.sso_created": "a user was created at their first single sign-on",
    "user.password_link": "made a new set-password link for a user",
    "user.password_set": "set their password with a one-time link",
    "user.role": "changed a user's role",
    "user.disable": "disabled a user (their sessions ended)",
    "user.enable": "enabled a user again",
    "key.create": "created an API key",
    "key.revoke": "revoked an API key",
    "model.roles": "changed which roles may use a model",
    "upstream_key.set": "set a remote model's upstream API key",
    "upstream_key.clear": "removed a remote model's stored upstream key",
}


@dataclass(frozen=True)
class AuditEntry:
    id: int
    created_at: datetime
    actor: str | None
    action: str
    target: str | None
    detail: str | None
    ip: str | None


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    page: int
    pages: int
    total: int


class AuditLog:
    def __init__(self, store: Store) -> None:
        self._store = store

    def record(self, action: str, *, actor: str | None, target: str | None = None, detail: str | None = None,
               ip: str | None = None) -> None:
        """Write one event in its own committed transaction."""
        assert action in ACTIONS, f"unknown audit action {action}"
        with self._store.writing() as session:
            session.add(AuditEvent(actor=actor, action=action, target=target, ip=ip,
                                   detail=detail[:MAX_DETAIL_CHARS] if detail else None))

    def page(self, page: int = 1, *, per_page: int = 50) -> AuditPage:
        """Events newest first; `page` counts from 1 and is clamped to the pages there are."""
        with self._store.reading() as session:
            total = int(session.scalar(select(func.count()).select_from(AuditEvent)))
            pages = max(1, -(-total // per_page))
            page = min(max(1, page), pages)
            rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())
                                   .offset((page - 1) * per_page).limit(per_page))
            entries = [AuditEntry(r.id, r.created_at, r.actor, r.action, r.target, r.detail, r.ip) for r in rows]
        return AuditPage(entries, page, pages, total)
