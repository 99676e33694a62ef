"""Web sessions in the store, on SQLite and PostgreSQL: tokens kept as hashes only, an end of life,
sign-out, disabled users, new passwords; and the first admin made once."""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from llama2.errors import ConfigError
from llama2.serve.sessions import WebSessions
from llama2.serve.store import WebSession


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def test_sessions_are_found_by_token_and_stored_as_hashes(store):
    user = store.add_user("a@example.com", role="admin")
    sessions = WebSessions(store, lifetime=timedelta(hours=1))
    token, created = sessions.create(user.id)
    found = sessions.find(token)
    assert found == created and (found.email, found.role, found.is_admin) == ("a@example.com", "admin", True)
    assert len(found.csrf_token) == 43 and found.csrf_token != token
    with store.reading() as session:
        [row] = session.scalars(select(WebSession))
    assert row.id == hashlib.sha256(token.encode()).hexdigest() and token not in repr(row.__dict__)
    assert sessions.find(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert sessions.find("") is None and sessions.find(None) is None and sessions.find("x" * 1000) is None
    other, _ = sessions.create(user.id)
    sessions.end(token)
    assert sessions.find(token) is None and sessions.find(other) is not None  # only that browser is signed out


def test_sessions_end_at_their_time_and_are_swept(store):
    user = store.add_user("a@example.com")
    clock = Clock()
    sessions = WebSessions(store, lifetime=timedelta(hours=1), now=clock)
    old, _ = sessions.create(user.id)
    clock.now += timedelta(minutes=59)
    assert sessions.find(old) is not None
    clock.now += timedelta(minutes=1)
    assert sessions.find(old) is None
    sessions.create(user.id)  # sweeps the expired one
    with store.reading() as session:
        assert len(list(session.scalars(select(WebSession)))) == 1


def test_disabling_a_user_or_setting_a_password_ends_their_sessions(store):
    store.add_user("a@example.com", password="first password")
    user = store.get_user("a@example.com")
    sessions = WebSessions(store, lifetime=timedelta(hours=1))
    token, _ = sessions.create(user.id)
    store.set_disabled("a@example.com", True)
    assert sessions.find(token) is None
    assert store.check_password("a@example.com", "first password") is None
    store.set_disabled("a@example.com", False)
    assert sessions.find(token) is None  # deleted, not just hidden
    token, _ = sessions.create(user.id)
    store.set_password("a@example.com", "second password")
    assert sessions.find(token) is None


def test_the_first_admin_is_made_once(store):
    results = []

    def setup(email: str) -> None:
        try:
            results.append(store.add_first_admin(email, "correct horse").email)
        except ConfigError as error:
            results.append(str(error))

    threads = [threading.Thread(target=setup, args=(f"admin{n}@example.com",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.count_users() == 1
    assert sorted(r.startswith("admin") for r in results) == [False, True]
    with pytest.raises(ConfigError, match="has an account already"):
        store.add_first_admin("late@example.com", "correct horse")
