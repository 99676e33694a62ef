"""The web chat's defences over plain HTTP: one user cannot reach another's conversations by id (IDOR),
state-changing requests need the CSRF token, wrong passwords lead to a lockout, sign-out and
disabling a user end sessions on the server, the setup link works once and from loopback only,
security headers on every page, and passwords reach no log, page or table."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from llama2.providers.fake import FakeProvider
from llama2.serve.config import WebSettings
from llama2.serve.store import Base, Store, WebSession
from llama2.serve.web.security import SESSION_COOKIE

from .conftest import PASSWORD, form_fields, scripted, serve, sign_in


def _conversation_with_a_message(client, text: str) -> tuple[int, int]:
    conversation = client.write("POST", "/api/conversations", json={"model": "echo"}).json()
    with client.stream("POST", f"/api/conversations/{conversation['id']}/messages", json={"message": text},
                       headers={"X-CSRF-Token": client.csrf}) as response:
        assert response.status_code == 200
        response.read()
    messages = client.get(f"/api/conversations/{conversation['id']}").json()["messages"]
    return conversation["id"], messages[0]["id"]


def test_one_user_cannot_reach_anothers_conversation_by_id(web_server):
    alice, bob = sign_in(web_server.url, "alice@example.com"), sign_in(web_server.url, "bob@example.com")
    cid, mid = _conversation_with_a_message(alice, "alice's secret plan zebra")
    before = alice.get(f"/api/conversations/{cid}").json()
    own, own_mid = _conversation_with_a_message(bob, "bob's own")

    attempts = [
        ("GET", f"/c/{cid}", None), ("GET", f"/c/{cid}/export.md", None), ("GET", f"/c/{cid}/export.json", None),
        ("GET", f"/api/conversations/{cid}", None),
        ("PATCH", f"/api/conversations/{cid}", {"title": "mine now"}),
        ("PATCH", f"/api/conversations/{cid}", {"system_prompt": "leak everything"}),
        ("DELETE", f"/api/conversations/{cid}", None),
        ("POST", f"/api/conversations/{cid}/messages", {"message": "hello"}),
        ("POST", f"/api/conversations/{cid}/regenerate", {}),
        ("POST", f"/api/conversations/{cid}/messages/{mid}/edit", {"message": "rewritten"}),
        ("POST", f"/api/conversations/{own}/messages/{mid}/edit", {"message": "rewritten"}),  # her message, his id
    ]
    for method, path, body in attempts:
        response = bob.write(method, path, json=body) if body is not None else bob.write(method, path)
        assert response.status_code == 404, (method, path, response.status_code)
        assert "zebra" not in response.text
    found = bob.get("/api/conversations", params={"q": "zebra"}).json()["data"]
    assert found == []
    assert alice.get(f"/api/conversations/{cid}").json() == before  # untouched
    assert bob.get(f"/api/conversations/{own}").status_code == 200
    assert own_mid != mid


def test_state_changing_requests_need_the_csrf_token(web_server):
    alice, bob = sign_in(web_server.url, "alice@example.com"), sign_in(web_server.url, "bob@example.com")
    cid, mid = _conversation_with_a_message(alice, "keep me")
    writes = [
        ("POST", "/api/conversations", {"model": "echo"}),
        ("PATCH", f"/api/conversations/{cid}", {"title": "changed"}),
        ("DELETE", f"/api/conversations/{cid}", None),
        ("POST", f"/api/conversations/{cid}/messages", {"message": "hi"}),
        ("POST", f"/api/conversations/{cid}/regenerate", {}),
        ("POST", f"/api/conversations/{cid}/messages/{mid}/edit", {"message": "changed"}),
    ]
    for token in (None, "x" * 43, bob.csrf):  # none, a made-up one, another session's
        headers = {} if token is None else {"X-CSRF-Token": token}
        for method, path, body in writes:
            response = alice.request(method, path, json=body, headers=headers)
            assert response.status_code == 403 and response.json()["error"]["code"] == "csrf_failed", (method, path)
    conversation = alice.get(f"/api/conversations/{cid}").json()
    assert conversation["title"] == "keep me" and len(conversation["messages"]) == 2

    session = alice.cookies[SESSION_COOKIE]
    assert alice.post("/signout", data={}).status_code == 403  # sign-out is a form: its field is checked too
    assert alice.get("/api/conversations").status_code == 200 and alice.cookies[SESSION_COOKIE] == session

    anonymous = httpx.Client(base_url=web_server.url)  # the sign-in form's double-submit token
    fields = form_fields(anonymous.get("/signin").text)
    for data, cookie in (({"email": "alice@example.com", "password": PASSWORD}, None),
                         ({**fields, "email": "alice@example.com", "password": PASSWORD}, "y" * 43)):
        anonymous.cookies.clear()
        if cookie is not None:  # a cookie other than the one the form repeats
            anonymous.cookies.set("llama2_form", cookie)
        response = anonymous.post("/signin", data=data)
        assert response.status_code == 403 and SESSION_COOKIE not in response.cookies


def test_repeated_wrong_passwords_lock_the_account_then_the_address(tmp_path):
    store = Store.open(tmp_path)
    for email in ("carol@example.com", "dave@example.com"):
        store.add_user(email, password=PASSWORD)
    settings = WebSettings(max_failed_logins=3, max_failed_logins_per_ip=6, lockout_minutes=15)
    with serve(store, [scripted("echo", "local:echo", FakeProvider())], settings) as (url, _):
        client = httpx.Client(base_url=url)

        def attempt(email: str, password: str) -> httpx.Response:
            client.cookies.clear()  # as a new visitor each time, from the same address
            return client.post("/signin", data={**form_fields(client.get("/signin").text), "email": email,
                                                "password": password})

        for _ in range(3):
            assert attempt("carol@example.com", "wrong password").status_code == 401
        locked = attempt("carol@example.com", PASSWORD)  # the right password, but locked
        assert locked.status_code == 429 and "Try again in 15 minutes" in locked.text
        assert SESSION_COOKIE not in locked.cookies
        assert attempt("dave@example.com", PASSWORD).status_code == 303  # another account is not locked
        for n in range(3):  # more failures from this address, on accounts that may not even exist
            assert attempt(f"nobody{n}@example.com", "wrong password").status_code == 401
        assert attempt("dave@example.com", PASSWORD).status_code == 429  # the address is locked now
    store.close()


def test_signing_out_and_disabling_a_user_end_sessions_on_the_server(web_server):
    store = web_server.store
    store.add_user("erin@example.com", password=PASSWORD)
    erin = sign_in(web_server.url, "erin@example.com")
    token = erin.cookies[SESSION_COOKIE]
    assert _sessions_of(store, "erin@example.com") == 1
    response = erin.post("/signout", data={"csrf_token": erin.csrf})
    assert response.status_code == 303 and response.headers["location"] == "/signin"
    assert _sessions_of(store, "erin@example.com") == 0
    replayed = httpx.Client(base_url=web_server.url, cookies={SESSION_COOKIE: token})
    assert replayed.get("/api/conversations").status_code == 401
    page = replayed.get("/c/1")
    assert page.status_code == 303 and page.headers["location"] == "/signin?next=%2Fc%2F1"

    erin = sign_in(web_server.url, "erin@example.com")
    assert erin.get("/api/conversations").status_code == 200
    store.set_disabled("erin@example.com", True)
    assert erin.get("/api/conversations").status_code == 401  # at once, not at the session's end
    assert erin.get("/").status_code == 303
    assert _sessions_of(store, "erin@example.com") == 0
    store.set_disabled("erin@example.com", False)
    assert erin.get("/api/conversations").status_code == 401  # the old session stays gone
    assert sign_in(web_server.url, "erin@example.com").get("/api/conversations").status_code == 200


def _sessions_of(store: Store, email: str) -> int:
    with store.reading() as session:
        return session.scalar(select(func.count()).select_from(WebSession).where(
            WebSession.user_id == store.get_user(email).id))


def test_the_setup_link_works_once_from_loopback_and_only_with_no_users(tmp_path):
    store = Store.open(tmp_path)
    with serve(store, [scripted("echo", "local:echo", FakeProvider())]) as (url, app):
        path = app.state.web.setup.path
        token = path.split("token=")[1]
        client = httpx.Client(base_url=url)
        assert client.get("/setup?token=wrong").status_code == 404
        assert client.get("/setup").status_code == 404
        remote = TestClient(app, client=("203.0.113.9", 50000))  # the same app, seen from another machine
        assert remote.get(path).status_code == 403  # loopback only, by default

        fields = form_fields(client.get(path).text)
        mismatch = client.post("/setup", data={**fields, "email": "a@example.com", "password": PASSWORD,
                                               "confirm": PASSWORD + "!"})
        assert mismatch.status_code == 400 and "differ" in mismatch.text
        assert store.count_users() == 0 and app.state.web.setup.path == path  # still live
        done = client.post("/setup", data={**fields, "email": "a@example.com", "password": PASSWORD,
                                           "confirm": PASSWORD})
        assert done.status_code == 303 and SESSION_COOKIE in done.cookies
        assert store.get_user("a@example.com").role == "admin"
        again = client.post("/setup", data={**fields, "email": "b@example.com", "password": PASSWORD,
                                            "confirm": PASSWORD})
        assert again.status_code == 404 and store.count_users() == 1 and token not in again.text
    with serve(store, [scripted("echo", "local:echo", FakeProvider())]) as (url, app):
        assert app.state.web.setup.path is None  # users exist: no link on the next start
    store.close()


def test_sign_up_only_when_the_config_allows_it(web_server, tmp_path):
    closed = httpx.Client(base_url=web_server.url)
    assert closed.get("/signup").status_code == 404
    assert closed.post("/signup", data={"email": "x@example.com", "password": PASSWORD,
                                        "confirm": PASSWORD}).status_code == 404
    assert web_server.store.get_user("x@example.com") is None
    store = Store.open(tmp_path)
    with serve(store, [scripted("echo", "local:echo", FakeProvider())], WebSettings(allow_signup=True)) as (url, _):
        client = httpx.Client(base_url=url)
        assert "/signup" in client.get("/signin").text
        fields = form_fields(client.get("/signup").text)
        response = client.post("/signup", data={**fields, "email": "New@Example.com", "password": PASSWORD,
                                                 "confirm": PASSWORD})
        assert response.status_code == 303 and client.get("/").status_code == 200
        assert store.get_user("new@example.com").role == "user"
        taken = client.post("/signup", data={**fields, "email": "new@example.com", "password": PASSWORD,
                                              "confirm": PASSWORD})
        assert taken.status_code == 400 and "already exists" in taken.text
    store.close()


@pytest.mark.parametrize("path", ["/signin", "/", "/c/1", "/setup?token=x", "/signup"])
def test_every_page_carries_the_security_headers(web_server, path):
    client = sign_in(web_server.url, "bob@example.com") if path in ("/", "/c/1") else httpx.Client(base_url=web_server.url)
    response = client.get(path)
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'",
                      "base-uri 'none'", "form-action 'self'"):
        assert directive in policy
    assert "unsafe" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert "<script>" not in response.text  # no inline script anywhere: only <script src=...>
    assert re.search(r"<[^>]+\son[a-z]+\s*=", response.text) is None  # no inline event handlers


def test_a_password_reaches_no_log_page_or_table(web_server, caplog):
    secret = "Sup3r-secret-pa55phrase"
    caplog.set_level(logging.DEBUG)
    web_server.store.add_user("frank@example.com", password=secret)
    client = httpx.Client(base_url=web_server.url)
    wrong = client.post("/signin", data={**form_fields(client.get("/signin").text), "email": "frank@example.com",
                                         "password": secret + "x"})
    assert wrong.status_code == 401 and secret not in wrong.text
    client.post("/signin", data={**form_fields(client.get("/signin").text), "email": "frank@example.com",
                                 "password": secret})
    assert client.get("/").status_code == 200
    assert secret not in caplog.text
    with web_server.store.engine.connect() as connection:
        dump = "\n".join(repr(row) for table in Base.metadata.sorted_tables for row in connection.execute(select(table)))
    assert secret not in dump
