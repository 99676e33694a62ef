"""Server-side sessions of the web chat: who a browser's cookie belongs to, and its CSRF token.

The cookie holds 256 random bits; the store keeps only their SHA-256 (like API keys), the user, a
per-session CSRF token and the end of the session's life. Every lookup joins the user, so a
disabled account's sessions stop working at its next request, and sign-out deletes the row: a
copied cookie is worthless afterwards.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from llama2.serve.store import Store, User, WebSession, utcnow

TOKEN_LENGTH = 43  # token_urlsafe(32)


@dataclass(frozen=True)
class SignedIn:
    """A live session and its user, as every web request sees them."""

    session_id: str
    user_id: int
    email: str
    role: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _session_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class WebSessions:
    """Create, find and end sessions in the store; sessions last `lifetime` from sign-in."""

    def __init__(self, store: Store, *, lifetime: timedelta, now: Callable[[], datetime] = utcnow) -> None:
        self._store = store
        self._lifetime = lifetime
        self._now = now

    def create(self, user_id: int) -> tuple[str, SignedIn]:
        """A new session for a user: (the cookie's token, the session). Expired sessions are swept here."""
        token = secrets.token_urlsafe(32)
        now = self._now()
        row = WebSession(id=_session_id(token), user_id=user_id, csrf_token=secrets.token_urlsafe(32),
                         created_at=now, expires_at=now + self._lifetime)
        with self._store.writing() as session:
            session.execute(delete(WebSession).where(WebSession.expires_at <= now))
            session.add(row)
            user = session.get(User, user_id)
            user.last_sign_in_at = now  # shown on the admin pages
            signed_in = _signed_in(row, user)
        return token, signed_in

    def find(self, token: str | None) -> SignedIn | None:
        """The session of a cookie's token; None when unknown, expired, or its user is disabled."""
        if not token or len(token) != TOKEN_LENGTH:
            return None
        query = select(WebSession, User).join(User, User.id == WebSession.user_id).where(
            WebSession.id == _session_id(token))
        with self._store.reading() as session:
            row = session.execute(query).first()
        if row is None or row.User.disabled or row.WebSession.expires_at <= self._now():
            return None
        return _signed_in(row.WebSession, row.User)

    def end(self, token: str | None) -> None:
        """Sign-out: the session is deleted, so its cookie no longer works anywhere."""
        if token:
            with self._store.writing() as session:
                session.execute(delete(WebSession).where(WebSession.id == _session_id(token)))


def _signed_in(row: WebSession, user: User) -> SignedIn:
    return SignedIn(session_id=row.id, user_id=user.id, email=user.email, role=user.role,
                    csrf_token=row.csrf_token, created_at=row.created_at, expires_at=row.expires_at)
