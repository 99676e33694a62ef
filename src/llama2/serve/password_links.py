"""One-time set-password links: how an invited user gets a password (and how an admin helps someone
who forgot theirs) without anyone sending a password around.

The link carries 256 random bits; the store keeps only their SHA-256, whose user it is for and when it
stops working (`web.invite_hours`). Making a new link for a user voids their older ones; using one sets
the password, ends the user's other sessions and deletes the link, in one transaction, so a link works
once. A disabled user's link does not work.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from llama2.errors import ConfigError
from llama2.serve.passwords import check_new_password, hash_password
from llama2.serve.store import PasswordLink, Store, User, WebSession, utcnow

TOKEN_LENGTH = 43  # token_urlsafe(32)
INVALID = "this set-password link is not valid: it was used, has expired, or was replaced by a newer one; ask an admin for a new one"


def _link_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class PasswordLinks:
    def __init__(self, store: Store, *, lifetime: timedelta, now: Callable[[], datetime] = utcnow) -> None:
        self._store = store
        self._lifetime = lifetime
        self._now = now

    def create(self, user_id: int, *, actor: str | None) -> str:
        """A new link's token for a user (shown once); the user's older links stop working."""
        token = secrets.token_urlsafe(32)
        now = self._now()
        with self._store.writing() as session:
            session.execute(delete(PasswordLink).where(
                (PasswordLink.user_id == user_id) | (PasswordLink.expires_at <= now)))
            session.add(PasswordLink(id=_link_id(token), user_id=user_id, created_by=actor, created_at=now,
                                     expires_at=now + self._lifetime))
        return token

    def email_for(self, token: str | None) -> str | None:
        """The email of the user a live link is for, or None."""
        if not token or len(token) != TOKEN_LENGTH:
            return None
        query = select(User).join(PasswordLink, PasswordLink.user_id == User.id).where(
            PasswordLink.id == _link_id(token), PasswordLink.expires_at > self._now(), User.disabled.is_(False))
        with self._store.reading() as session:
            user = session.scalar(query)
        return user.email if user is not None else None

    def redeem(self, token: str | None, password: str) -> User:
        """Set the password of the link's user and spend the link; ConfigError when the link is not live
        or the password too weak (the link then stays live)."""
        check_new_password(password)
        email = self.email_for(token)
        if email is None:
            raise ConfigError(INVALID)
        password_hash = hash_password(password)
        with self._store.writing() as session:
            spent = session.execute(delete(PasswordLink).where(
                PasswordLink.id == _link_id(token), PasswordLink.expires_at > self._now()))
            user = session.scalar(select(User).where(User.email == email))
            if spent.rowcount != 1 or user is None or user.disabled:
                raise ConfigError(INVALID)  # used by a concurrent request meanwhile: the transaction rolls back
            user.password_hash = password_hash
            session.execute(delete(WebSession).where(WebSession.user_id == user.id))
        return user
