"""Store fixtures: each test gets a fresh, empty, migrated database, on SQLite and on PostgreSQL.

PostgreSQL comes from $LLAMA2_TEST_POSTGRES_URL (e.g. postgresql+psycopg://llama2:llama2@127.0.0.1/llama2_test);
each test gets its own schema in that database, dropped afterwards. Without the variable or the
server the PostgreSQL cases are skipped, except under CI (env CI set), where they fail: CI must run them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from llama2.serve.store import Store

POSTGRES_URL_ENV = "LLAMA2_TEST_POSTGRES_URL"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the PostgreSQL store tests (.ci/run installs and starts PostgreSQL)",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test server's URL (psycopg 3 driver), checked to be reachable once per session."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        _unavailable(f"PostgreSQL store tests need ${POSTGRES_URL_ENV} "
                     "(e.g. postgresql+psycopg://llama2:llama2@127.0.0.1/llama2_test)")
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = create_engine(parsed)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as error:
        _unavailable(f"PostgreSQL at {parsed.render_as_string(hide_password=True)} is unreachable: "
                     f"{str(error.orig).strip().splitlines()[0]}")
    finally:
        engine.dispose()
    return parsed.render_as_string(hide_password=False)


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A URL whose connections see only a new, empty schema (through search_path)."""
    schema = f"test_{secrets.token_hex(6)}"
    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    yield make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False)
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'llama2.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    """A URL of a fresh, empty database on each backend (not migrated)."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_schema_url")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A fresh, migrated store on SQLite and on PostgreSQL."""
    with Store(store_url) as store:
        store.migrate()
        yield store


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    with Store(sqlite_url) as store:
        store.migrate()
        yield store
