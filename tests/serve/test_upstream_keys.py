"""Upstream keys set on the admin page: sealed with AES-256-GCM (key from $LLAMA2_SECRET_KEY or a 0600 key
file in the data dir) so the database holds only ciphertext, used by the provider in place of the
environment's key — at once and after a restart — and never seen again: not in a response, a page, a
log line or an error, even when the upstream echoes it back."""

from __future__ import annotations

import base64
import getpass
import io
import json
import logging
import os
import re
import stat
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from llama2.errors import ConfigError
from llama2.serve.app import build_gateway, create_app
from llama2.serve.config import ModelEntry, ServeConfig
from llama2.serve.models import ModelPool
from llama2.serve.secrets import KEY_FILE, SECRET_KEY_ENV, SecretBox
from llama2.serve.store import Store, UpstreamKey
from llama2.serve.upstream_keys import UpstreamKeys
from providers.test_openai_wire import chat_chunks, chat_completion, openai_error
from providers.wire import Reply, WireServer

from .running import running
from .web.conftest import PASSWORD, form_fields, sign_in

ENV_KEY = "env-key-0123456789abcdef0000"
STORED = "stored-azure-key-9f8e7d6c5b4a3210SKEY"  # what the admin pastes
QUESTION = [{"role": "user", "content": "Capital of France?"}]


# ---- the secret box --------------------------------------------------------------------------------


def test_a_key_file_is_made_on_first_use_readable_by_its_owner_only(tmp_path):
    box = SecretBox(tmp_path, environ={})
    assert not (tmp_path / KEY_FILE).exists()
    sealed = box.seal("sk-abc", purpose="upstream key of model m")
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert sealed.startswith("v1.") and "sk-abc" not in sealed
    assert SecretBox(tmp_path, environ={}).open(sealed, purpose="upstream key of model m") == "sk-abc"
    assert box.seal("sk-abc", purpose="upstream key of model m") != sealed  # a fresh nonce each time
    (tmp_path / KEY_FILE).chmod(0o644)
    with pytest.raises(ConfigError, match=rf"may be read by other users \(mode 644\); run: chmod 600"):
        SecretBox(tmp_path, environ={}).open(sealed, purpose="upstream key of model m")


def test_a_sealed_value_opens_only_with_its_key_and_purpose(tmp_path):
    key = base64.b64encode(os.urandom(32)).decode()
    box = SecretBox(tmp_path, environ={SECRET_KEY_ENV: key})
    sealed = box.seal("sk-secret-value", purpose="upstream key of model a")
    assert not (tmp_path / KEY_FILE).exists()  # the environment's key is used, no file made
    assert box.open(sealed, purpose="upstream key of model a") == "sk-secret-value"
    with pytest.raises(ConfigError, match="damaged") as moved:  # a ciphertext copied to another model's row
        box.open(sealed, purpose="upstream key of model b")
    other = SecretBox(tmp_path, environ={SECRET_KEY_ENV: base64.b64encode(os.urandom(32)).decode()})
    with pytest.raises(ConfigError, match="encrypted with another secret key") as wrong:
        other.open(sealed, purpose="upstream key of model a")
    with pytest.raises(ConfigError, match="no secret key"):
        SecretBox(tmp_path / "empty", environ={}).open(sealed, purpose="upstream key of model a")
    tampered = sealed[:-6] + ("AAAAAA" if not sealed.endswith("AAAAAA") else "BBBBBB")
    with pytest.raises(ConfigError, match="damaged"):
        box.open(tampered, purpose="upstream key of model a")
    for error in (moved, wrong):
        assert "sk-secret-value" not in str(error.value) and key not in str(error.value)
    with pytest.raises(ConfigError, match=f"\\${SECRET_KEY_ENV} must hold 32 random bytes in base64"):
        SecretBox(tmp_path, environ={SECRET_KEY_ENV: "too-short"}).seal("x", purpose="p")


def test_the_database_holds_only_ciphertext(store, tmp_path):
    """On SQLite and PostgreSQL."""
    azure = ModelEntry("company-gpt", "azure:gpt-4o", {"endpoint": "https://example.openai.azure.com"})
    pool = ModelPool.load((azure,), {"company-gpt": "placeholder-key-000000"})
    keys = UpstreamKeys(store, SecretBox(tmp_path, environ={}))
    keys.apply(pool, "company-gpt", STORED, actor="root@example.com")
    with store.reading() as session:
        dump = " ".join(str(value) for table in ("upstream_keys", "audit_log", "users")
                        for row in session.execute(text(f"SELECT * FROM {table}")) for value in row)
        row = session.scalar(select(UpstreamKey))
    assert STORED not in dump and STORED[-12:] not in dump and base64.b64encode(STORED.encode()).decode()[:16] not in dump
    assert row.ciphertext.startswith("v1.") and row.updated_by == "root@example.com"
    assert keys.opened() == {"company-gpt": STORED}
    status = keys.statuses()["company-gpt"]
    assert (status.tail, status.problem) == ("SKEY", None) and STORED not in repr(status)
    assert pool.get("company-gpt").provider.settings.api_key == STORED
    with pytest.raises(ConfigError, match="takes no upstream key"):
        keys.apply(ModelPool.load((ModelEntry("local", "local:tiny"),)), "local", "sk-x", actor=None)
    with pytest.raises(ConfigError, match="that is not an API key") as bad:
        keys.apply(pool, "company-gpt", "two words-secretish", actor=None)
    assert "secretish" not in str(bad.value)


# ---- through the admin page ----------------------------------------------------------------------


def azure_entry(url: str) -> ModelEntry:
    return ModelEntry("company-gpt", "azure:gpt-4o", {"endpoint": url, "api_version": "2024-10-21",
                                                      "api_key_env": "LLAMA2_TEST_AZURE_KEY", "max_retries": 0})


def start(tmp_path: Path, upstream_url: str):
    store = Store.open(tmp_path)
    config = ServeConfig(data_dir=tmp_path, models=(azure_entry(upstream_url),))
    return store, create_app(build_gateway(config, store), max_body_bytes=1 << 20)


def test_an_upstream_key_set_on_the_admin_page_is_used_and_never_shown(tmp_path, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("LLAMA2_TEST_AZURE_KEY", ENV_KEY)
    replies = {"now": Reply(body=chat_completion("Paris.", model="gpt-4o"))}
    with WireServer(lambda seen: replies["now"]) as upstream:
        store, app = start(tmp_path, upstream.url)
        store.add_user("root@example.com", role="admin", password=PASSWORD)
        store.add_user("alice@example.com", password=PASSWORD)
        _, api_key = store.create_key("alice@example.com")
        api = httpx.Client(headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
        with running(app) as url:
            ask = {"model": "company-gpt", "messages": QUESTION, "max_tokens": 5}
            assert api.post(f"{url}/v1/chat/completions", json=ask).status_code == 200
            assert upstream.seen[-1].headers["api-key"] == ENV_KEY

            root = sign_in(url, "root@example.com")
            csrf = form_fields(root.get("/admin/models").text)["csrf_token"]
            bad = root.post("/admin/models/key", data={"model": "company-gpt", "api_key": "not a key" + STORED,
                                                       "csrf_token": csrf})
            assert bad.status_code == 400 and "That is not an API key for company-gpt" in bad.text
            saved = root.post("/admin/models/key", data={"model": "company-gpt", "api_key": f"  {STORED}\n",
                                                         "csrf_token": csrf})
            assert saved.status_code == 303
            answers = [api.post(f"{url}/v1/chat/completions", json=ask)]
            assert answers[0].status_code == 200 and upstream.seen[-1].headers["api-key"] == STORED

            # The upstream rejects it and echoes it back: our answers say what to check, not the key.
            replies["now"] = openai_error(401, f"Incorrect API key provided: {STORED}.")
            answers.append(api.post(f"{url}/v1/chat/completions", json=ask))
            assert answers[-1].status_code == 502  # the gateway's upstream failed, not the client
            assert "check the upstream key stored on the server (admin pages)" in answers[-1].text
            replies["now"] = openai_error(400, f"Your key {STORED} may not use this deployment")
            answers.append(api.post(f"{url}/v1/chat/completions", json=ask))
            answers.append(api.post(f"{url}/v1/chat/completions", json={**ask, "stream": True}))
            alice = sign_in(url, "alice@example.com")
            chat = alice.write("POST", "/api/conversations", json={"model": "company-gpt"}).json()
            answers.append(alice.write("POST", f"/api/conversations/{chat['id']}/messages", json={"message": "Hi"}))
            answers.append(alice.get(f"/api/conversations/{chat['id']}"))
            assert "***" in answers[-3].text and "***" in answers[-1].text  # the echoed key, masked
            replies["now"] = Reply(events=chat_chunks(["Par", "is."], model="gpt-4o"))
            answers.append(alice.write("POST", f"/api/conversations/{chat['id']}/regenerate", json={}))
            assert "Paris." in answers[-1].text and upstream.seen[-1].headers["api-key"] == STORED

            pages = [root.get(path) for path in ("/admin/models", "/admin/users", "/admin/keys", "/admin/usage",
                                                 "/admin/audit", "/", "/signin")]
            pages += [alice.get("/"), api.get(f"{url}/v1/models"), httpx.get(f"{url}/metrics")]
            models_page = pages[0].text
            assert "…SKEY" in models_page and "by root@example.com" in models_page
            for response in answers + pages:
                assert STORED not in response.text and STORED[:-4] not in response.text, response.url
                assert STORED not in str(response.headers)

            cleared = root.post("/admin/models/key/clear", data={"model": "company-gpt", "csrf_token": csrf})
            assert cleared.status_code == 303
            replies["now"] = Reply(body=chat_completion("Paris.", model="gpt-4o"))
            assert api.post(f"{url}/v1/chat/completions", json=ask).status_code == 200
            assert upstream.seen[-1].headers["api-key"] == ENV_KEY  # back to the environment's
            root.post("/admin/models/key", data={"model": "company-gpt", "api_key": STORED, "csrf_token": csrf})
        store.close()

        # A restart with no key in the environment: the stored one is used from the start.
        monkeypatch.delenv("LLAMA2_TEST_AZURE_KEY")
        replies["now"] = Reply(body=chat_completion("Paris.", model="gpt-4o"))
        store, app = start(tmp_path, upstream.url)
        with running(app) as url:
            assert api.post(f"{url}/v1/chat/completions", json=ask).status_code == 200
            assert upstream.seen[-1].headers["api-key"] == STORED
            root = sign_in(url, "root@example.com")
            csrf = form_fields(root.get("/admin/models").text)["csrf_token"]
            refused = root.post("/admin/models/key/clear", data={"model": "company-gpt", "csrf_token": csrf})
            assert refused.status_code == 400
            assert "Cannot remove the stored key of company-gpt, it would have none" in refused.text
            assert "no Azure credentials; set LLAMA2_TEST_AZURE_KEY" in refused.text
            assert STORED not in refused.text
            assert api.post(f"{url}/v1/chat/completions", json=ask).status_code == 200  # still served, same key
            assert upstream.seen[-1].headers["api-key"] == STORED
        store.close()

    logged = caplog.text + "".join(capfd.readouterr())
    assert "company-gpt" in logged or caplog.records  # the logs were captured at all
    assert STORED not in logged and STORED[:-4] not in logged
    on_disk = b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.name.startswith("llama2.db"))
    assert STORED.encode() not in on_disk and STORED[:12].encode() not in on_disk
    assert re.search(rb"v1\.[0-9a-f]{8}\.", on_disk)  # the sealed value is there


def test_a_stored_key_sealed_under_another_secret_key_stops_the_start_with_a_clear_message(tmp_path, monkeypatch):
    store = Store.open(tmp_path)
    pool = ModelPool.load((azure_entry("https://example.openai.azure.com"),), {"company-gpt": "x" * 20})
    UpstreamKeys(store, SecretBox(tmp_path)).apply(pool, "company-gpt", STORED, actor=None)
    (tmp_path / KEY_FILE).unlink()
    monkeypatch.setenv(SECRET_KEY_ENV, base64.b64encode(os.urandom(32)).decode())
    config = ServeConfig(data_dir=tmp_path, models=(azure_entry("https://example.openai.azure.com"),))
    with pytest.raises(ConfigError, match="upstream key of model company-gpt: it was encrypted with another secret key"):
        build_gateway(config, store)


def test_llama2_admin_stores_a_key_for_the_next_start_and_keeps_the_audit_log(tmp_path, monkeypatch, capsys):
    from llama2.cli.main import main

    monkeypatch.delenv("LLAMA2_TEST_AZURE_KEY", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(STORED + "\n"))
    assert main(["admin", "set-upstream-key", "company-gpt", "--key-stdin", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"encrypted with the key in {tmp_path / KEY_FILE}" in out and STORED not in out
    config = ServeConfig(data_dir=tmp_path, models=(azure_entry("https://example.openai.azure.com"),))
    gateway = build_gateway(config)  # no key in the environment: the stored one is there from the start
    assert gateway.models.get("company-gpt").provider.settings.api_key == STORED
    gateway.store.close()
    assert main(["admin", "audit", "--json", "--data-dir", str(tmp_path)]) == 0
    [event] = json.loads(capsys.readouterr().out)
    assert (event["action"], event["target"], event["actor"]) == ("upstream_key.set", "company-gpt",
                                                                  f"cli:{getpass.getuser()}")
    assert main(["admin", "clear-upstream-key", "company-gpt", "--data-dir", str(tmp_path)]) == 0
    assert main(["admin", "clear-upstream-key", "company-gpt", "--data-dir", str(tmp_path)]) == 1
    assert "no upstream key is stored for company-gpt" in capsys.readouterr().err
