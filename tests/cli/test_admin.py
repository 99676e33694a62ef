"""`llama2 admin` end to end on a temporary data dir: users, keys shown once, listing, revoking,
usage sums, and one-line errors for bad input."""

from __future__ import annotations

import io
import json

import pytest

from llama2.cli.main import main
from llama2.serve.store import Store, UsageRecord


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("LLAMA2_SERVE_DIR", raising=False)
    return tmp_path / "data"


def admin(data_dir, *args: str) -> int:
    return main(["admin", *args, "--data-dir", str(data_dir)])


def add_user(data_dir, monkeypatch, email: str = "alice@example.com", password: str = "correct horse\n") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(password))
    return admin(data_dir, "add-user", email, "--password-stdin")


def test_users_keys_and_usage_end_to_end(data_dir, monkeypatch, capsys):
    assert add_user(data_dir, monkeypatch, "Alice@Example.com") == 0
    assert "added user alice@example.com" in capsys.readouterr().out

    assert admin(data_dir, "create-key", "alice@example.com", "--name", "ci", "--models", "llama,gpt-4o",
                 "--rpm", "60", "--tokens-per-day", "5000") == 0
    out = capsys.readouterr().out
    [secret] = [line for line in out.splitlines() if line.startswith("sk-l2-")]
    assert "will not be shown again" in out

    with Store.open(data_dir) as store:
        assert store.check_password("alice@example.com", "correct horse") is not None  # newline stripped
        key = store.find_key(secret)
        assert (key.name, key.models, key.rpm, key.tokens_per_day) == ("ci", ("llama", "gpt-4o"), 60, 5000)
        store.record_usage(UsageRecord(key.user_email, key.id, "llama", "/v1/chat/completions", 200, 12, 30, 80.0))
        store.record_usage(UsageRecord(key.user_email, key.id, "llama", "/v1/chat/completions", 500, 5, 0, 20.0))
    assert f"API key {key.id} for alice@example.com" in out

    assert admin(data_dir, "list-keys", "--json") == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["id"] == key.id and listed["models"] == ["llama", "gpt-4o"] and not listed["revoked"]
    assert secret not in json.dumps(listed)

    assert admin(data_dir, "list-keys", "alice@example.com") == 0
    table = capsys.readouterr().out
    assert key.id in table and "active" in table and secret not in table

    assert admin(data_dir, "usage", "--json") == 0
    assert json.loads(capsys.readouterr().out) == [{
        "user_email": "alice@example.com", "key_id": key.id, "model": "llama", "requests": 2, "errors": 1,
        "prompt_tokens": 17, "completion_tokens": 30, "mean_latency_ms": 50.0}]
    assert admin(data_dir, "usage") == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["user", "key", "model"] and row.split() == [
        "alice@example.com", key.id, "llama", "2", "1", "17", "30", "50.0"]

    assert admin(data_dir, "revoke-key", key.id) == 0
    assert f"revoked {key.id}" in capsys.readouterr().out
    assert admin(data_dir, "list-keys") == 0
    assert "revoked" in capsys.readouterr().out
    with Store.open(data_dir) as store:
        assert store.find_key(secret).revoked


def test_create_key_json_prints_the_key_once_for_scripts(data_dir, monkeypatch, capsys):
    add_user(data_dir, monkeypatch)
    capsys.readouterr()
    assert admin(data_dir, "create-key", "alice@example.com", "--json") == 0
    created = json.loads(capsys.readouterr().out)
    assert created["key"].startswith(created["id"]) and created["models"] is None


def test_usage_periods(data_dir, monkeypatch, capsys):
    add_user(data_dir, monkeypatch)
    with Store.open(data_dir) as store:
        store.record_usage(UsageRecord("alice@example.com", None, "m", "/v1/completions", 200, 1, 1))
    capsys.readouterr()
    assert admin(data_dir, "usage", "--since", "2000-01-01", "--until", "2000-12-31", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert admin(data_dir, "usage", "--since", "2000-01-01T00:00Z", "--json") == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    assert admin(data_dir, "usage", "--until", "2000-01-01") == 0
    assert capsys.readouterr().out.strip() == "no requests recorded in this period"


def test_password_prompt_asks_twice(data_dir, monkeypatch, capsys):
    answers = iter(["correct horse", "correct horse", "one password", "another one"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    assert admin(data_dir, "add-user", "alice@example.com", "--role", "admin") == 0
    assert admin(data_dir, "add-user", "bob@example.com") == 1
    assert capsys.readouterr().err == "llama2: error: the two passwords differ; run the command again\n"
    with Store.open(data_dir) as store:
        assert store.check_password("alice@example.com", "correct horse").role == "admin"
        assert store.get_user("bob@example.com") is None


def test_db_url_overrides_the_data_dir(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse"))
    assert main(["admin", "add-user", "alice@example.com", "--password-stdin", "--db", url]) == 0
    assert (tmp_path / "elsewhere.db").is_file()


@pytest.mark.parametrize("args, message", [
    (["add-user", "not-an-email", "--password-stdin"], "'not-an-email' is not an email address"),
    (["add-user", "alice@example.com", "--password-stdin"], "user alice@example.com already exists"),
    (["add-user", "bob@example.com", "--password-stdin"], "password is too short"),
    (["create-key", "bob@example.com"], "no user bob@example.com"),
    (["create-key", "alice@example.com", "--rpm", "0"], "rpm must be a positive integer"),
    (["revoke-key", "sk-l2-unknown1"], "no API key with id sk-l2-unknown1"),
    (["usage", "--since", "last tuesday"], "--since 'last tuesday' is not a date"),
    (["usage", "--until", "2024-13-01"], "--until '2024-13-01' is not a date"),
    (["list-keys", "--db", "mysql://u:p@localhost/db"], "unsupported database 'mysql'"),
])
def test_bad_input_is_one_line_and_exit_1(data_dir, monkeypatch, capsys, args, message):
    add_user(data_dir, monkeypatch)
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert admin(data_dir, *args) == 1
    err = capsys.readouterr().err
    assert err.startswith("llama2: error: ") and message in err and err.count("\n") == 1


def test_no_prompt_without_a_terminal(data_dir, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert admin(data_dir, "add-user", "alice@example.com") == 1
    assert "--password-stdin" in capsys.readouterr().err


def test_disable_and_enable_a_user(data_dir, monkeypatch, capsys):
    assert add_user(data_dir, monkeypatch) == 0
    assert admin(data_dir, "disable-user", "Alice@example.com") == 0
    assert "disabled alice@example.com" in capsys.readouterr().out
    with Store.open(data_dir) as store:
        assert store.get_user("alice@example.com").disabled
        assert store.check_password("alice@example.com", "correct horse") is None
    assert admin(data_dir, "enable-user", "alice@example.com") == 0
    with Store.open(data_dir) as store:
        assert store.check_password("alice@example.com", "correct horse") is not None
    assert admin(data_dir, "disable-user", "nobody@example.com") == 1
    assert "no user nobody@example.com" in capsys.readouterr().err
