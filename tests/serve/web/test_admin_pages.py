"""The admin pages: only admins reach /admin (others get 404 on every route and change nothing), every
write needs the session's CSRF token and lands in the audit log, invitations give a one-time
set-password link, roles set here win over serve.yaml's for the web chat and the API alike, the usage
page's numbers are the usage rows' sums (costs from prices.yaml), the audit log pages; in Chromium an
admin disables a user who is then signed out at once, and screenshots of every page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import func, select

from llama2.errors import ConfigError
from llama2.providers.fake import FakeProvider
from llama2.providers.registry import load_provider
from llama2.serve.app import create_app
from llama2.serve.audit import AuditLog
from llama2.serve.auth import Authorizer
from llama2.serve.config import ModelEntry
from llama2.serve.gateway import Gateway
from llama2.serve.metrics import Metrics
from llama2.serve.model_access import ModelAccess
from llama2.serve.models import ModelPool, ServedModel
from llama2.serve.password_links import PasswordLinks
from llama2.serve.secrets import SecretBox
from llama2.serve.store import AuditEvent, Store, Usage, User
from llama2.serve.upstream_keys import UpstreamKeys
from llama2.serve.usage_report import usage_report
from llama2.serve.web import admin
from llama2.serve.web.sso_state import SingleSignOn

from ..running import running
from .conftest import ARTIFACTS, PASSWORD, form_fields, scripted, sign_in, signed_in_page

EXTERNAL = "http://127.0.0.1:9/v1#gpt-4o"  # an OpenAI-compatible server's gpt-4o: external, priced, takes a key
GPT4O_PRICE = (2.50, 10.00)  # USD per 1M input / output tokens in prices.yaml


@dataclass
class AdminServer:
    url: str
    store: Store
    app: object

    def audit(self) -> list[AuditEvent]:
        with self.store.reading() as session:
            return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))

    def user(self, email: str) -> User:
        return self.store.get_user(email)


def served_models() -> list[ServedModel]:
    return [
        scripted("echo", "local:echo", FakeProvider()),
        scripted("staff-only", "local:staff-only", FakeProvider(), roles=("admin",)),
        ServedModel(ModelEntry("gpt-4o", EXTERNAL), load_provider(EXTERNAL)),
    ]


@pytest.fixture
def admin_server(tmp_path) -> Iterator[AdminServer]:
    store = Store.open(tmp_path)
    for email, role in (("root@example.com", "admin"), ("alice@example.com", "user"), ("bob@example.com", "user")):
        store.add_user(email, role=role, password=PASSWORD)
    gateway = Gateway(store, Authorizer(store), ModelPool(served_models()), Metrics(lambda: {}),
                      upstream_keys=UpstreamKeys(store, SecretBox(tmp_path)))
    app = create_app(gateway, max_body_bytes=1 << 20)
    with running(app) as url:
        yield AdminServer(url, store, app)
    store.close()


def admin_form(client, path: str) -> dict[str, str]:
    """The CSRF field the admin pages' forms carry."""
    return {"csrf_token": form_fields(client.get(path).text)["csrf_token"]}


# ---- who may reach /admin ------------------------------------------------------------------------


def admin_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route the admin routers add to the app."""
    return sorted((method, route.path) for router in admin.routers() for route in router.routes
                  if isinstance(route, APIRoute) for method in route.methods)


def concrete(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)


def test_a_non_admin_reaches_no_admin_route_and_changes_nothing(admin_server):
    server = admin_server
    key, _ = server.store.create_key("bob@example.com")
    ids = {"user_id": str(server.user("bob@example.com").id), "key_id": key.id}
    alice = sign_in(server.url, "alice@example.com")
    csrf = alice.csrf  # her own session's valid token
    anonymous = httpx.Client(base_url=server.url)
    before = ([e.id for e in server.audit()], [(u.email, u.role, u.disabled) for u in server.store.list_users()],
              server.store.list_keys())
    routes = admin_routes(server.app)
    assert {path for _, path in routes} >= {"/admin/users", "/admin/keys", "/admin/models", "/admin/usage",
                                           "/admin/audit", "/admin/users/invite", "/admin/keys/{key_id}/revoke"}
    for method, path in routes:
        data = {"csrf_token": csrf, "email": "mallory@example.com", "role": "admin", "model": "staff-only",
                "role_user": "on", "api_key": "sk-mallory-0000000000000000"}
        url = concrete(path, ids)
        as_alice = alice.request(method, url, data=data if method == "POST" else None)
        assert as_alice.status_code == 404, (method, path, as_alice.status_code)
        assert "There is no such page" in as_alice.text
        as_nobody = anonymous.request(method, url, data=data if method == "POST" else None)
        assert as_nobody.status_code == 303 and as_nobody.headers["location"].startswith("/signin"), (method, path)
    after = ([e.id for e in server.audit()], [(u.email, u.role, u.disabled) for u in server.store.list_users()],
             server.store.list_keys())
    assert after == before  # no user, role, key or audit event changed
    assert 'href="/admin"' not in alice.get("/").text  # no Admin link for her
    root = sign_in(server.url, "root@example.com")
    assert 'href="/admin"' in root.get("/").text


# ---- writes: CSRF and the audit log ----------------------------------------------------------------


def test_every_admin_write_needs_the_csrf_token_and_lands_in_the_audit_log(admin_server):
    server = admin_server
    root = sign_in(server.url, "root@example.com")
    bob = server.user("bob@example.com")
    key, _ = server.store.create_key("bob@example.com", name="ci")
    writes = [  # path, fields, the audit action it records, how to see it happened
        ("/admin/users/invite", {"email": "carol@example.com", "role": "user"}, "user.invite",
         lambda: server.user("carol@example.com") is not None),
        (f"/admin/users/{bob.id}/role", {"role": "admin"}, "user.role", lambda: server.user("bob@example.com").role == "admin"),
        (f"/admin/users/{bob.id}/disable", {}, "user.disable", lambda: server.user("bob@example.com").disabled),
        (f"/admin/users/{bob.id}/enable", {}, "user.enable", lambda: not server.user("bob@example.com").disabled),
        (f"/admin/users/{bob.id}/password-link", {}, "user.password_link", lambda: "set-password?token=" in last_page),
        (f"/admin/keys/{key.id}/revoke", {}, "key.revoke", lambda: server.store.list_keys()[0].revoked),
        ("/admin/models/roles", {"model": "staff-only", "role_user": "on", "action": "save"}, "model.roles",
         lambda: server.app.state.gateway.models.get("staff-only").entry.roles == ("user",)),
        ("/admin/models/roles", {"model": "staff-only", "action": "reset"}, "model.roles",
         lambda: server.app.state.gateway.models.get("staff-only").entry.roles == ("admin",)),
        ("/admin/models/key", {"model": "gpt-4o", "api_key": "sk-test-0123456789abcdefWXYZ"}, "upstream_key.set",
         lambda: "…WXYZ" in root.get("/admin/models").text),
        ("/admin/models/key/clear", {"model": "gpt-4o"}, "upstream_key.clear",
         lambda: "…WXYZ" not in root.get("/admin/models").text),
    ]
    posted = {path for path, *_ in writes}
    every_post = {concrete(path, {"user_id": str(bob.id), "key_id": key.id})
                  for method, path in admin_routes(server.app) if method == "POST"}
    assert every_post == posted, "a new admin write needs a case here"
    for path, fields, action, happened in writes:
        events = len(server.audit())
        for refused in ({}, {"csrf_token": "forged-" + "x" * 36}):
            response = root.post(path, data={**fields, **refused})
            assert response.status_code == 403 and "reload it" in response.text, (path, response.status_code)
        as_json = root.post(path, json={**fields, **admin_form(root, "/admin/users")})  # not a form: refused too
        assert as_json.status_code == 403
        assert len(server.audit()) == events, f"{path} without its token still did something"
        response = root.post(path, data={**fields, **admin_form(root, "/admin/users")})
        last_page = response.text
        assert response.status_code in (201, 303), (path, response.status_code, response.text[:300])
        assert happened(), path
        event = server.audit()[-1]
        assert (event.action, event.actor, event.ip) == (action, "root@example.com", "127.0.0.1"), path
    assert all("sk-test" not in (e.detail or "") + (e.target or "") for e in server.audit())


def test_an_admin_cannot_lock_themselves_or_everyone_out(admin_server):
    server = admin_server
    root = sign_in(server.url, "root@example.com")
    me = server.user("root@example.com")
    for path, fields in ((f"/admin/users/{me.id}/disable", {}), (f"/admin/users/{me.id}/role", {"role": "user"})):
        response = root.post(path, data={**fields, **admin_form(root, "/admin/users")})
        assert response.status_code == 400 and "your own account" in response.text
    assert server.user("root@example.com").role == "admin" and not server.user("root@example.com").disabled
    response = root.post("/admin/users/invite", data={"email": "alice@example.com", **admin_form(root, "/admin/users")})
    assert response.status_code == 400 and "already exists" in response.text
    response = root.post("/admin/users/invite", data={"email": "not-an-email", **admin_form(root, "/admin/users")})
    assert response.status_code == 400 and "is not an email address" in response.text


def test_an_invitation_is_a_one_time_link_to_choose_a_password(admin_server):
    server = admin_server
    root = sign_in(server.url, "root@example.com")
    page = root.post("/admin/users/invite", data={"email": "Carol@Example.com", "role": "user",
                                                   **admin_form(root, "/admin/users")})
    assert page.status_code == 201 and "not shown again" in page.text
    link = re.search(r'value="(http://[^"]+/set-password\?token=[^"]+)"', page.text).group(1)
    assert link.startswith(server.url)
    assert server.user("carol@example.com").password_hash is None
    assert "invited" in root.get("/admin/users").text
    assert link not in root.get("/admin/users").text  # shown once

    carol = httpx.Client(base_url=server.url)
    form = carol.get(link)
    assert form.status_code == 200 and "carol@example.com" in form.text
    fields = form_fields(form.text)
    short = carol.post("/set-password", data={**fields, "password": "short", "confirm": "short"})
    assert short.status_code == 400 and "too short" in short.text
    done = carol.post("/set-password", data={**fields, "password": "carols password", "confirm": "carols password"})
    assert done.status_code == 303 and done.headers["location"] == "/"
    assert "carol@example.com" in carol.get("/").text  # signed in
    assert httpx.get(link).status_code == 404  # used up
    again = httpx.post(f"{server.url}/set-password", data={**fields, "password": "another one", "confirm": "another one"},
                       cookies={"llama2_form": fields["csrf_token"]})
    assert again.status_code == 404
    sign_in(server.url, "carol@example.com", "carols password")
    actions = [(e.action, e.actor, e.target) for e in server.audit()]
    assert ("user.invite", "root@example.com", "carol@example.com") in actions
    assert ("user.password_set", "carol@example.com", "carol@example.com") in actions


def test_roles_set_here_win_over_serve_yaml_for_the_chat_and_the_api(admin_server):
    server = admin_server
    root = sign_in(server.url, "root@example.com")
    alice = sign_in(server.url, "alice@example.com")
    _, secret = server.store.create_key("alice@example.com")
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {secret}"})
    ask = {"model": "staff-only", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

    def picker() -> list[str]:
        return re.findall(r'<option value="([^"]+)"', alice.get("/").text)

    assert "staff-only" not in picker() and api.post("/v1/chat/completions", json=ask).status_code == 403
    root.post("/admin/models/roles", data={"model": "staff-only", "role_admin": "on", "role_user": "on",
                                           "action": "save", **admin_form(root, "/admin/models")})
    assert "staff-only" in picker() and api.post("/v1/chat/completions", json=ask).status_code == 200
    page = root.get("/admin/models").text
    assert "Set by root@example.com" in page and "Back to serve.yaml" in page
    root.post("/admin/models/roles", data={"model": "echo", "action": "save", **admin_form(root, "/admin/models")})
    assert "echo" not in picker()  # no box ticked: nobody may use it
    root.post("/admin/models/roles", data={"model": "staff-only", "action": "reset", **admin_form(root, "/admin/models")})
    assert "staff-only" not in picker() and api.post("/v1/chat/completions", json=ask).status_code == 403

    # Stored in the database: a new server on the same store starts with them.
    gateway = Gateway(server.store, Authorizer(server.store), ModelPool(served_models()), Metrics(lambda: {}))
    create_app(gateway, max_body_bytes=1 << 20)
    assert gateway.models.get("echo").entry.roles == () and gateway.models.get("staff-only").entry.roles == ("admin",)


# ---- usage and the audit log ---------------------------------------------------------------------


def test_usage_page_numbers_are_the_usage_rows_sums(admin_server):
    server = admin_server
    now = datetime.now(timezone.utc)
    rows = [  # (days ago, user, model, status, prompt, completion)
        (0, "alice@example.com", "echo", 200, 10, 20), (0, "alice@example.com", "echo", 200, 5, 7),
        (0, "alice@example.com", "gpt-4o", 200, 1000, 2000), (2, "alice@example.com", "gpt-4o", 502, 300, 0),
        (3, "bob@example.com", "gpt-4o", 200, 40_000, 12_345), (3, "bob@example.com", "echo", 499, 8, 3),
        (29, "bob@example.com", "staff-only", 200, 1, 1), (None, "bob@example.com", "retired-model", 200, 50, 50),
        (31, "alice@example.com", "echo", 200, 999, 999),  # before the 30 days: left out
        (45, "bob@example.com", "gpt-4o", 200, 10**6, 10**6),
    ]
    with server.store.writing() as session:
        for days, email, model, status, prompt, completion in rows:
            at = now - timedelta(days=days if days is not None else 1, minutes=1 if days == 0 else 0)
            session.add(Usage(created_at=at, user_email=email, key_id=None, model=model, endpoint="web.chat",
                              status=status, prompt_tokens=prompt, completion_tokens=completion))
    page = sign_in(server.url, "root@example.com").get("/admin/usage?days=30").text

    first_day = (now - timedelta(days=29)).date()
    kept = [r for r in rows if (now - timedelta(days=r[0] if r[0] is not None else 1)).date() >= first_day]
    expected: dict[tuple[str, str], list[int]] = {}
    for _, email, model, status, prompt, completion in kept:
        line = expected.setdefault((email, model), [0, 0, 0, 0])
        line[0] += 1
        line[1] += status >= 400
        line[2] += prompt
        line[3] += completion
    shown = {}
    for user, model, body in re.findall(r'<tr data-user="([^"]*)" data-model="([^"]*)">(.*?)</tr>', page, re.S):
        numbers = [int(re.search(rf'data-{name}="(\d+)"', body).group(1))
                   for name in ("requests", "errors", "prompt-tokens", "completion-tokens")]
        shown[(user, model)] = numbers
        cost = re.search(r'data-cost="([^"]*)"', body).group(1)
        if model == "gpt-4o":
            assert float(cost) == pytest.approx((numbers[2] * GPT4O_PRICE[0] + numbers[3] * GPT4O_PRICE[1]) / 1e6, abs=1e-6)
        else:
            assert cost == "" and ("local" in body or model == "retired-model")
    assert shown == expected
    totals = {name: int(re.search(rf'data-total="{name}">([\d,]+)<', page).group(1).replace(",", ""))
              for name in ("requests", "errors", "tokens")}
    assert totals == {"requests": len(kept), "errors": sum(r[3] >= 400 for r in kept),
                      "tokens": sum(r[4] + r[5] for r in kept)}
    gpt = [v for (_, model), v in expected.items() if model == "gpt-4o"]
    cost = sum(p * GPT4O_PRICE[0] + c * GPT4O_PRICE[1] for _, _, p, c in gpt) / 1e6
    assert f'data-total="cost">${cost:.2f}<' in page

    bars: dict[tuple[str, str], int] = {}
    for day, model, tokens in re.findall(r'data-day="([\d-]+)" data-model="([^"]+)" data-tokens="(\d+)"', page):
        bars[(day, model)] = int(tokens)
    by_day: dict[tuple[str, str], int] = {}
    for days, _, model, _, prompt, completion in kept:
        day = (now - timedelta(days=days if days is not None else 1)).date().isoformat()
        by_day[(day, model)] = by_day.get((day, model), 0) + prompt + completion
    assert bars == by_day
    assert "<script" not in page.split("</head>")[1]  # the chart is SVG drawn on the server


def test_the_audit_log_shows_every_event_newest_first_a_page_at_a_time(admin_server):
    server = admin_server
    root = sign_in(server.url, "root@example.com")
    log = server.app.state.web.audit
    for i in range(120):
        log.record("user.enable", actor="root@example.com", target=f"user{i}@example.com", ip="10.0.0.1")
    total = len(server.audit())
    first = root.get("/admin/audit").text
    assert f"{total:,} events" in first and "Page 1 of 3" in first
    targets = re.findall(r'<td data-label="Target" class="cell-email">([^<]*)</td>', first)
    assert targets[:2] == ["user119@example.com", "user118@example.com"] and len(targets) == 50
    last = root.get("/admin/audit?page=3").text
    assert "Page 3 of 3" in last and 'data-action="signin"' in last  # root's sign-in came first
    assert "Page 3 of 3" in root.get("/admin/audit?page=99").text
    with server.store.reading() as session:
        failures = session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "signin.failed"))
    assert failures == 0
    httpx.post(f"{server.url}/signin", data={"email": "alice@example.com", "password": "wrong", "csrf_token": "t" * 43},
               cookies={"llama2_form": "t" * 43})
    event = server.audit()[-1]
    assert (event.action, event.target, event.detail) == ("signin.failed", "alice@example.com", "wrong email or password")
    assert "wrong" not in (event.detail or "").replace("wrong email or password", "")  # the password is not kept


# ---- in the browser ------------------------------------------------------------------------------


def test_an_admin_disables_a_user_who_is_signed_out_at_once(browser, admin_server):
    server = admin_server
    alice = signed_in_page(browser, server.url, "alice@example.com")
    root = signed_in_page(browser, server.url, "root@example.com")
    root.click('a.side-link[href="/admin"]')
    root.wait_for_url(server.url + "/admin/users")
    root.click('tr[data-user="alice@example.com"] button:has-text("Disable")')
    root.wait_for_selector(".notice")
    assert "alice@example.com is disabled" in root.inner_text(".notice")
    assert root.inner_text('tr[data-user="alice@example.com"] .badge') == "disabled"

    assert alice.evaluate("fetch('/api/conversations').then(r => r.status)") == 401
    alice.reload()
    assert alice.url.startswith(server.url + "/signin")
    alice.fill('input[name="email"]', "alice@example.com")
    alice.fill('input[name="password"]', PASSWORD)
    alice.click('button[type="submit"]')
    assert "Wrong email or password" in alice.inner_text(".alert")

    root.click('tr[data-user="alice@example.com"] button:has-text("Enable")')
    root.wait_for_selector(".notice")
    assert "can sign in again" in root.inner_text(".notice")
    alice.context.close()
    root.context.close()


def test_screenshots_of_the_admin_pages(browser, admin_server):
    server = admin_server
    server.store.create_key("alice@example.com", name="notebook", rpm=60)
    server.store.create_key("bob@example.com", name="ci", models=["echo"], tokens_per_day=200_000)
    gateway = server.app.state.gateway
    gateway.upstream_keys.apply(gateway.models, "gpt-4o", "sk-test-0123456789abcdefWXYZ", actor="root@example.com")
    now = datetime.now(timezone.utc)
    with server.store.writing() as session:
        for day in range(30):
            for model, email, scale in (("echo", "alice@example.com", 900), ("gpt-4o", "bob@example.com", 1400),
                                        ("staff-only", "root@example.com", 300)):
                tokens = scale * (1 + (day * 7 + len(model)) % 5)
                session.add(Usage(created_at=now - timedelta(days=day), user_email=email, key_id=None, model=model,
                                  endpoint="web.chat", status=200, prompt_tokens=tokens // 3, completion_tokens=tokens))
    for width, height in ((1280, 800), (390, 844)):
        name = "desktop" if width > 800 else "phone"
        page = signed_in_page(browser, server.url, "root@example.com", viewport=(width, height))
        page.goto(server.url + "/admin/users")
        page.fill('input[name="email"]', f"dana-{name}@example.com")
        page.click('form.invite-form button[type="submit"]')
        page.wait_for_selector(".link-card")
        page.screenshot(path=str(ARTIFACTS / f"web-admin-users-{name}.png"), full_page=True)
        for tab in ("keys", "models", "usage", "audit"):
            page.goto(f"{server.url}/admin/{tab}")
            page.screenshot(path=str(ARTIFACTS / f"web-admin-{tab}-{name}.png"), full_page=True)
        page.emulate_media(color_scheme="dark")
        page.goto(server.url + "/admin/usage")
        page.screenshot(path=str(ARTIFACTS / f"web-admin-usage-{name}-dark.png"), full_page=True)
        page.context.close()


# ---- the records behind the pages, on SQLite and PostgreSQL ---------------------------------------


def test_the_records_behind_the_admin_pages_on_both_databases(store):
    """Days are UTC days whatever the database session's time zone (PostgreSQL's is set to Tokyo here)."""
    url = store.url
    if url.get_backend_name() == "postgresql":
        url = url.update_query_dict({"options": url.query["options"] + " -cTimeZone=Asia/Tokyo"})
    with Store(url.render_as_string(hide_password=False)) as tokyo:
        late = datetime(2024, 5, 10, 23, 30, tzinfo=timezone.utc)  # May 11 in Tokyo
        with tokyo.writing() as session:
            for at, model, tokens in ((late, "a", 10), (late - timedelta(hours=23, minutes=20), "a", 5),
                                      (late - timedelta(days=1), "b", 7), (late - timedelta(days=9), "a", 1000)):
                session.add(Usage(created_at=at, user_email="x@example.com", key_id=None, model=model,
                                  endpoint="web.chat", status=200, prompt_tokens=tokens, completion_tokens=0))
        since = datetime(2024, 5, 8, tzinfo=timezone.utc)
        report = usage_report(tokyo, since, since + timedelta(days=3), lambda model: None, lambda model: False)
        assert [d.isoformat() for d in report.days] == ["2024-05-08", "2024-05-09", "2024-05-10"]
        assert report.daily_tokens == {"a": [0, 0, 15], "b": [0, 7, 0]}
        assert [(line.model, line.requests, line.prompt_tokens) for line in report.lines] == [("a", 2, 15), ("b", 1, 7)]

        log = AuditLog(tokyo)
        for i in range(5):
            log.record("user.enable", actor="root@example.com", target=f"u{i}@example.com")
        page = log.page(2, per_page=2)
        assert (page.page, page.pages, page.total, [e.target for e in page.entries]) == (
            2, 3, 5, ["u2@example.com", "u1@example.com"])

        user = tokyo.add_user("new@example.com")
        links = PasswordLinks(tokyo, lifetime=timedelta(hours=1))
        old, token = links.create(user.id, actor="root@example.com"), links.create(user.id, actor="root@example.com")
        assert links.email_for(old) is None and links.email_for(token) == "new@example.com"  # the newer one only
        assert links.redeem(token, "a long password").email == "new@example.com"
        assert tokyo.check_password("new@example.com", "a long password") is not None
        with pytest.raises(ConfigError, match="not valid"):
            links.redeem(token, "another password")

        sso = SingleSignOn(tokyo, {})
        cookie, pending = sso.begin("acme", "/c/1")
        assert sso.take(cookie) == pending and sso.take(cookie) is None  # once
        assert sso.take("forged") is None

        pool = ModelPool(served_models())
        access = ModelAccess(tokyo, pool)
        access.set("echo", ["admin"], actor="root@example.com")
        fresh = ModelPool(served_models())
        ModelAccess(tokyo, fresh).apply()
        assert fresh.get("echo").entry.roles == ("admin",) and fresh.get("staff-only").entry.roles == ("admin",)
        access.set("echo", None, actor="root@example.com")
        assert pool.get("echo").entry.roles is None and ModelAccess(tokyo, fresh).stored() == {}
