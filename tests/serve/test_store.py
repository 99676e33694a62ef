"""The store on SQLite and PostgreSQL: migrations equal the models, users, keys (hashes only), usage
records (durable the moment record_usage returns) and their sums."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select

from llama2.errors import ConfigError
from llama2.serve.store import (DEFAULT_DB_FILE, Base, Store, Usage, UsageRecord, UsageRow, User, database_url,
                                default_data_dir)

UTC = timezone.utc


def _record(key_id: str | None, *, model: str = "m", status: int = 200, prompt: int = 0, completion: int = 0,
            latency: float = 0.0, email: str | None = "a@example.com") -> UsageRecord:
    return UsageRecord(user_email=email, key_id=key_id, model=model, endpoint="/v1/chat/completions", status=status,
                       prompt_tokens=prompt, completion_tokens=completion, latency_ms=latency)


# Migrations --------------------------------------------------------------------------------------


def test_migrations_build_exactly_the_models(store):
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        head = ScriptDirectory.from_config(store.alembic_config()).get_current_head()
        assert context.get_current_revision() == head


def test_migrate_again_is_a_no_op_that_keeps_the_data(store):
    store.add_user("a@example.com")
    store.migrate()
    assert store.get_user("a@example.com") is not None


def test_downgrade_to_base_removes_every_table(store):
    command.downgrade(store.alembic_config(), "base")  # through the URL: env.py's path without a connection
    assert set(inspect(store.engine).get_table_names()) == {"alembic_version"}


def test_concurrent_first_migrations_take_turns(store_url):
    """A server and `llama2 admin` opening a new database at once: both succeed, one schema results."""
    stores = [Store(store_url) for _ in range(3)]
    start, errors = threading.Barrier(len(stores)), []

    def migrate(store: Store) -> None:
        start.wait()
        try:
            store.migrate()
        except Exception as error:  # collected: a thread's exception would otherwise vanish
            errors.append(error)

    threads = [threading.Thread(target=migrate, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "migrations deadlocked"
    for store in stores:
        store.close()
    assert errors == []
    with Store(store_url) as store, store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


# URLs ---------------------------------------------------------------------------------------------


def test_database_url_defaults_to_a_sqlite_file_in_the_data_dir(tmp_path, monkeypatch):
    data_dir = tmp_path / "new" / "dir"
    assert database_url(data_dir, None) == f"sqlite:///{data_dir / DEFAULT_DB_FILE}"
    assert data_dir.is_dir()
    assert database_url(data_dir, "postgresql://u:p@h/db") == "postgresql://u:p@h/db"
    monkeypatch.setenv("LLAMA2_SERVE_DIR", str(tmp_path / "env"))
    assert default_data_dir() == tmp_path / "env"
    monkeypatch.delenv("LLAMA2_SERVE_DIR")
    assert str(default_data_dir()).endswith(".local/share/llama2")


def test_open_migrates_the_data_dir_store(tmp_path):
    with Store.open(tmp_path) as store:
        store.add_user("a@example.com")
    assert (tmp_path / DEFAULT_DB_FILE).is_file()


def test_plain_postgresql_urls_use_psycopg():
    for url in ("postgresql://u:p@localhost/db", "postgres://u:p@localhost/db"):
        store = Store(url)
        assert store.url.drivername == "postgresql+psycopg"
        store.close()


@pytest.mark.parametrize("url, message", [("not a url", "is not a database URL"),
                                           ("mysql://u:p@localhost/db", "unsupported database 'mysql'")])
def test_bad_urls_are_config_errors(url, message):
    with pytest.raises(ConfigError, match=message):
        Store(url)


def test_an_unreachable_database_is_a_config_error_without_the_password():
    with pytest.raises(ConfigError, match="cannot open the database") as error:
        Store.open(db="postgresql://u:secret-pw@127.0.0.1:9/db?connect_timeout=2")
    assert "secret-pw" not in str(error.value)


# Users --------------------------------------------------------------------------------------------


def test_users_have_lower_case_emails_roles_and_utc_times(store):
    user = store.add_user("  Alice@Example.COM ", role="admin")
    assert (user.email, user.role, user.disabled, user.password_hash) == ("alice@example.com", "admin", False, None)
    stored = store.get_user("ALICE@example.com")
    assert stored.id == user.id and stored.created_at.tzinfo == UTC
    assert abs(stored.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert store.get_user("bob@example.com") is None


@pytest.mark.parametrize("email, role, message", [
    ("not-an-email", "user", "is not an email address"),
    ("a b@example.com", "user", "is not an email address"),
    ("a@example.com", "root", "role 'root' is not one of: admin, user"),
])
def test_bad_users_are_config_errors(store, email, role, message):
    with pytest.raises(ConfigError, match=message):
        store.add_user(email, role=role)


def test_duplicate_users_are_config_errors(store):
    store.add_user("a@example.com")
    with pytest.raises(ConfigError, match="user a@example.com already exists"):
        store.add_user("A@example.com")


def test_passwords_verify_and_reject(store):
    store.add_user("a@example.com", password="correct horse")
    assert "correct horse" not in store.get_user("a@example.com").password_hash
    assert store.check_password("A@example.com", "correct horse").email == "a@example.com"
    assert store.check_password("a@example.com", "wrong horse") is None
    assert store.check_password("nobody@example.com", "correct horse") is None
    store.set_password("a@example.com", "battery staple")
    assert store.check_password("a@example.com", "correct horse") is None
    assert store.check_password("a@example.com", "battery staple") is not None
    with pytest.raises(ConfigError, match="no user nobody@example.com"):
        store.set_password("nobody@example.com", "battery staple")


def test_users_without_a_password_or_disabled_cannot_log_in(store):
    store.add_user("key-only@example.com")
    assert store.check_password("key-only@example.com", "anything at all") is None
    store.add_user("gone@example.com", password="correct horse")
    with store._sessions.begin() as session:
        session.get(User, store.get_user("gone@example.com").id).disabled = True
    assert store.check_password("gone@example.com", "correct horse") is None


# Keys ---------------------------------------------------------------------------------------------


def _all_rows_as_text(store: Store) -> str:
    with store.engine.connect() as connection:
        return "\n".join(repr(row) for table in Base.metadata.sorted_tables
                         for row in connection.execute(select(table)))


def test_keys_are_shown_once_and_stored_only_as_hashes(store):
    store.add_user("a@example.com")
    info, secret = store.create_key("a@example.com", name="ci", models=["llama", " gpt "], rpm=10, tokens_per_day=1000)
    assert secret.startswith(info.id) and len(secret) > len(info.id) + 32
    assert (info.user_email, info.user_role, info.name, info.models, info.rpm, info.tokens_per_day, info.revoked) == \
        ("a@example.com", "user", "ci", ("llama", "gpt"), 10, 1000, False)
    store.record_usage(_record(info.id))
    dump = _all_rows_as_text(store)
    assert info.id in dump and secret not in dump and secret[len(info.id):] not in dump
    assert store.find_key(secret) == info
    assert store.list_keys() == [info]


def test_find_key_rejects_what_is_not_a_key(store):
    store.add_user("a@example.com")
    info, secret = store.create_key("a@example.com")
    forged = secret[:-1] + ("A" if secret[-1] != "A" else "B")  # the right id, the wrong secret
    for presented in (forged, secret[:-1], "", "sk-l2-", "Bearer " + secret, secret.upper()):
        assert store.find_key(presented) is None


def test_revoked_keys_are_found_as_revoked(store):
    store.add_user("a@example.com")
    info, secret = store.create_key("a@example.com")
    store.revoke_key(info.id)
    store.revoke_key(info.id)
    assert store.find_key(secret).revoked
    assert [key.revoked for key in store.list_keys("a@example.com")] == [True]
    with pytest.raises(ConfigError, match="no API key with id sk-l2-unknown1"):
        store.revoke_key("sk-l2-unknown1")


def test_list_keys_per_user_oldest_first(store):
    store.add_user("a@example.com")
    store.add_user("b@example.com")
    first, _ = store.create_key("a@example.com", name="first")
    store.create_key("b@example.com")
    second, _ = store.create_key("A@example.com", name="second")
    assert [key.name for key in store.list_keys("a@example.com")] == ["first", "second"]
    assert len(store.list_keys()) == 3
    assert first.created_at.tzinfo == UTC
    with pytest.raises(ConfigError, match="no user c@example.com"):
        store.list_keys("c@example.com")


@pytest.mark.parametrize("kwargs, message", [
    ({"email": "nobody@example.com"}, "no user nobody@example.com; add one with `llama2 admin add-user"),
    ({"models": [" ", ""]}, "give at least one model name"),
    ({"rpm": 0}, "rpm must be a positive integer, got 0"),
    ({"tokens_per_day": -5}, "tokens_per_day must be a positive integer, got -5"),
])
def test_bad_keys_are_config_errors(store, kwargs, message):
    store.add_user("a@example.com")
    with pytest.raises(ConfigError, match=message):
        store.create_key(**({"email": "a@example.com"} | kwargs))
    assert store.list_keys() == []


# Usage --------------------------------------------------------------------------------------------


def test_usage_summary_sums_per_user_key_and_model(store):
    store.add_user("a@example.com")
    key, _ = store.create_key("a@example.com")
    store.record_usage(_record(key.id, model="m1", prompt=10, completion=5, latency=100.0))
    store.record_usage(_record(key.id, model="m1", prompt=20, completion=7, latency=300.0))
    store.record_usage(_record(key.id, model="m1", status=429, latency=2.0))
    store.record_usage(_record(key.id, model="m2", prompt=1, completion=1, latency=50.0))
    store.record_usage(_record(None, model="m1", status=401, email=None))
    assert store.usage_summary() == [
        UsageRow(None, None, "m1", 1, 1, 0, 0, 0.0),
        UsageRow("a@example.com", key.id, "m1", 3, 1, 30, 12, pytest.approx(134.0)),
        UsageRow("a@example.com", key.id, "m2", 1, 0, 1, 1, 50.0),
    ]
    assert store.tokens_used(key.id, datetime.now(UTC) - timedelta(minutes=1)) == 44
    assert store.tokens_used(key.id, datetime.now(UTC) + timedelta(minutes=1)) == 0
    assert store.tokens_used("sk-l2-nothing0", datetime.now(UTC) - timedelta(days=1)) == 0


def test_usage_summary_and_tokens_used_respect_the_period(store):
    store.add_user("a@example.com")
    key, _ = store.create_key("a@example.com")
    now = datetime.now(UTC)
    with store._sessions.begin() as session:  # records of other days, written as if back then
        for days_ago, tokens in ((3, 100), (1, 10)):
            session.add(Usage(created_at=now - timedelta(days=days_ago), key_id=key.id, model="m", endpoint="/v1/x",
                              status=200, prompt_tokens=tokens))
    store.record_usage(_record(key.id, prompt=1))
    assert store.tokens_used(key.id, now - timedelta(days=2)) == 11
    assert store.tokens_used(key.id, (now - timedelta(days=2)).replace(tzinfo=None)) == 11  # naive means UTC
    [row] = store.usage_summary(since=now - timedelta(days=4), until=now - timedelta(days=2))
    assert (row.requests, row.prompt_tokens) == (1, 100)
    assert store.usage_summary(until=now - timedelta(days=5)) == []
    assert [r.prompt_tokens for r in store.usage_summary(since=now - timedelta(hours=1))] == [1]


def test_content_is_kept_only_when_given(store):
    store.record_usage(_record(None))
    store.record_usage(UsageRecord(None, None, "m", "/v1/completions", 200, request_body='{"prompt": "hi"}',
                                   response_body='{"text": "yo"}', error=None))
    with store._sessions() as session:
        rows = session.scalars(select(Usage).order_by(Usage.id)).all()
    assert [(row.request_body, row.response_body) for row in rows] == [(None, None), ('{"prompt": "hi"}', '{"text": "yo"}')]


CHILD = """
import os, signal, sys
from llama2.serve.store import Store, UsageRecord
store = Store(sys.argv[1])
store.record_usage(UsageRecord("a@example.com", None, "m", "/v1/chat/completions", 200, 3, 4, 5.0))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_recorded_request_survives_the_process_being_killed(store):
    url = store.url.render_as_string(hide_password=False)
    child = subprocess.run([sys.executable, "-c", CHILD, url], capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    with Store(url) as fresh:
        assert fresh.usage_summary() == [UsageRow("a@example.com", None, "m", 1, 0, 3, 4, 5.0)]
