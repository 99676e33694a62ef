"""Single sign-on against a real OpenID Connect provider on loopback (`oidc-provider-mock`, built on
Authlib, in a thread): the whole authorization-code flow with PKCE; users created at their first
sign-in with the role their groups map to (and kept in step later), invited users linked by email;
a wrong state, a wrong nonce, an expired ID token, a disallowed domain, a replayed or foreign callback,
unknown and disabled users each refused with a clear message and an audit event; serve.yaml's
`web.sso` validated whole."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import oidc_provider_mock
import pytest
import yaml
from sqlalchemy import select

from llama2.errors import ConfigError
from llama2.providers.fake import FakeProvider
from llama2.serve.config import SSOProvider, WebSettings, load_config
from llama2.serve.store import AuditEvent, SSOLogin, Store

from .conftest import ARTIFACTS, PASSWORD, scripted, serve

SECRET_ENV = "LLAMA2_TEST_SSO_SECRET"


@dataclass
class SSOServer:
    url: str  # this server
    issuer: str  # the provider's
    store: Store
    app: object

    def audit(self, action: str | None = None) -> list[AuditEvent]:
        with self.store.reading() as session:
            events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        return [e for e in events if action is None or e.action == action]


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    with oidc_provider_mock.run_server_in_thread() as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture
def sso_server(provider, tmp_path) -> Iterator[SSOServer]:
    settings = WebSettings(sso=(
        SSOProvider(name="acme", label="Acme ID", issuer=provider, client_id="llama2-test", client_secret_env=SECRET_ENV,
                    allowed_domains=("example.com",), create_users=True, role_claim="groups",
                    role_map={"llama-admins": "admin", "staff": "user"}, default_role="user"),
        SSOProvider(name="partner", label="Partner", issuer=provider, client_id="llama2-partner",
                    client_secret_env=SECRET_ENV),  # no create_users: existing users only
    ))
    store = Store.open(tmp_path)
    store.add_user("invited@example.com", role="user")
    store.add_user("gone@example.com", role="user", password=PASSWORD)
    store.set_disabled("gone@example.com", True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SECRET_ENV, "client-secret-of-the-test")
        with serve(store, [scripted("echo", "local:echo", FakeProvider())], settings) as (url, app):
            yield SSOServer(url, provider, store, app)
    store.close()


def set_claims(issuer: str, sub: str, **claims) -> None:
    assert httpx.put(f"{issuer}/users/{sub}", json=claims).status_code == 204


def start(server: SSOServer, provider: str = "acme", next_path: str | None = None) -> tuple[httpx.Client, str]:
    """A browser-like client that has begun a sign-in: (client, the provider's authorization URL)."""
    client = httpx.Client(base_url=server.url, timeout=30)
    response = client.get(f"/sso/{provider}/start", params={"next": next_path} if next_path else None)
    assert response.status_code == 303, response.text
    return client, response.headers["location"]


def authorize(authorization_url: str, sub: str) -> str:
    """The provider's sign-in form, submitted as `sub`: the callback URL it sends the browser to."""
    response = httpx.post(authorization_url, data={"sub": sub})
    assert response.status_code == 302, response.text
    return response.headers["location"]


def sign_in_with_sso(server: SSOServer, sub: str, provider: str = "acme", **claims) -> tuple[httpx.Client, httpx.Response]:
    set_claims(server.issuer, sub, **claims)
    client, url = start(server, provider)
    return client, client.get(authorize(url, sub))


def signed_in_as(client: httpx.Client) -> str | None:
    page = client.get("/")
    found = re.search(r'class="who-email" title="([^"]+)"', page.text)
    return found.group(1) if page.status_code == 200 and found else None


def test_the_sign_in_page_offers_each_provider(sso_server):
    page = httpx.get(f"{sso_server.url}/signin?next=/c/7").text
    assert 'href="/sso/acme/start?next=/c/7">Sign in with Acme ID</a>' in page
    assert "Sign in with Partner" in page and 'name="password"' in page


def test_a_first_sign_in_creates_the_user_with_the_role_their_groups_map_to(sso_server):
    server = sso_server
    client, url = start(server, next_path="/c/42")
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(server.issuer + "/oauth2/authorize?")
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43  # PKCE
    assert query["client_id"] == ["llama2-test"] and query["scope"] == ["openid email profile"]
    assert query["redirect_uri"] == [f"{server.url}/sso/acme/callback"]
    assert len(query["state"][0]) >= 40 and len(query["nonce"][0]) >= 40
    set_claims(server.issuer, "u-123", email="Dana@Example.com", email_verified=True, groups=["staff", "llama-admins"])
    response = client.get(authorize(url, "u-123"))
    assert response.status_code == 303 and response.headers["location"] == "/c/42"
    assert "llama2_session" in response.cookies
    assert signed_in_as(client) == "dana@example.com"
    dana = server.store.get_user("dana@example.com")
    assert (dana.role, dana.auth_provider, dana.subject, dana.password_hash) == ("admin", "acme", "u-123", None)
    assert client.get("/admin/users").status_code == 200  # an admin now
    assert [(e.action, e.actor) for e in server.audit()[-2:]] == [("user.sso_created", "dana@example.com"),
                                                                  ("signin", "dana@example.com")]
    with server.store.reading() as session:
        assert session.scalar(select(SSOLogin)) is None  # the sign-in in progress is spent

    # Later the provider moves her out of the admins group: the next sign-in makes her a user.
    client, response = sign_in_with_sso(server, "u-123", email="dana@example.com", groups=["staff"])
    assert response.status_code == 303 and signed_in_as(client) == "dana@example.com"
    assert server.store.get_user("dana@example.com").role == "user"
    assert client.get("/admin/users").status_code == 404
    event = server.audit("user.role")[-1]
    assert (event.target, event.detail) == ("dana@example.com", "admin → user (from the provider's claims)")


def test_an_invited_user_signs_in_with_sso_and_is_linked_by_email(sso_server):
    server = sso_server
    client, response = sign_in_with_sso(server, "partner-7", "partner", email="invited@example.com", email_verified=True)
    assert response.status_code == 303 and signed_in_as(client) == "invited@example.com"
    user = server.store.get_user("invited@example.com")
    assert (user.auth_provider, user.subject, user.role) == ("partner", "partner-7", "user")
    assert "linked to this account" in server.audit("signin")[-1].detail
    # Another provider cannot take over the linked account by saying the same email.
    _, response = sign_in_with_sso(server, "someone-else", email="invited@example.com")
    assert response.status_code == 403 and "signs in another way here (through partner)" in response.text


def refused(response: httpx.Response, status: int, message: str, server: SSOServer, reason: str) -> None:
    assert response.status_code == status, response.text
    assert message in response.text.replace("&#39;", "'")
    assert "llama2_session" not in response.cookies
    event = server.audit()[-1]
    assert event.action == "signin.failed" and reason in event.detail, event.detail


def test_a_wrong_state_is_refused(sso_server):
    server = sso_server
    set_claims(server.issuer, "u-1", email="eve@example.com")
    client, url = start(server)
    callback = authorize(url, "u-1")
    state = parse_qs(urlsplit(callback).query)["state"][0]
    response = client.get(callback.replace(f"state={state}", "state=" + "A" * len(state)))
    refused(response, 400, "is not for the sign-in this browser started (the state does not match)", server,
            "state mismatch")
    assert server.store.get_user("eve@example.com") is None


def test_a_wrong_nonce_is_refused(sso_server):
    server = sso_server
    set_claims(server.issuer, "u-2", email="eve@example.com")
    client, url = start(server)
    nonce = parse_qs(urlsplit(url).query)["nonce"][0]
    callback = authorize(url.replace(f"nonce={nonce}", "nonce=replayed-from-another-sign-in"), "u-2")
    response = client.get(callback)
    refused(response, 400, "belongs to another sign-in (its nonce does not match)", server, "nonce mismatch")
    assert server.store.get_user("eve@example.com") is None


def test_an_expired_id_token_is_refused(sso_server):
    server = sso_server
    set_claims(server.issuer, "u-3", email="eve@example.com")
    client, url = start(server)
    server.app.state.web.sso.clients["acme"].clock = lambda: time.time() + 2 * 3600  # the token lives 1 h
    response = client.get(authorize(url, "u-3"))
    refused(response, 400, "has expired", server, "id token expired")
    assert server.store.get_user("eve@example.com") is None


def test_a_disallowed_domain_is_refused(sso_server):
    server = sso_server
    _, response = sign_in_with_sso(server, "u-4", email="mallory@example.org", email_verified=True)
    refused(response, 403, "Addresses at example.org may not sign in here with Acme ID (allowed: example.com)",
            server, "domain example.org not allowed")
    assert server.store.get_user("mallory@example.org") is None


@pytest.mark.parametrize("claims, status, message, reason", [
    ({"email": "eve@example.com", "email_verified": False}, 403, "has not verified eve@example.com", "not verified"),
    ({"name": "No Email"}, 403, "did not say your email address", "no email claim"),
    ({"email": "gone@example.com"}, 403, "This account is disabled", "account disabled"),
])
def test_unverified_emails_missing_emails_and_disabled_accounts_are_refused(sso_server, claims, status, message, reason):
    _, response = sign_in_with_sso(sso_server, "u-" + reason.replace(" ", "-"), **claims)
    refused(response, status, message, sso_server, reason)


def test_a_provider_without_create_users_signs_in_existing_users_only(sso_server):
    _, response = sign_in_with_sso(sso_server, "p-9", "partner", email="newcomer@example.com")
    refused(response, 403, "There is no account for newcomer@example.com on this server; ask an admin to invite you",
            sso_server, "create_users is off")


def test_a_callback_works_once_and_only_in_the_browser_that_started_it(sso_server):
    server = sso_server
    set_claims(server.issuer, "u-5", email="frank@example.com")
    client, url = start(server)
    callback = authorize(url, "u-5")
    stranger = httpx.Client(base_url=server.url)  # a victim sent the attacker's callback link
    refused(stranger.get(callback), 400, "expired or was started in another browser", server, "no sign-in in progress")
    client2, url2 = start(server)
    callback2 = authorize(url2, "u-5")
    assert client2.get(callback2).status_code == 303
    replay = client2.get(callback2, cookies={"llama2_sso": "x" * 43})
    refused(replay, 400, "expired or was started in another browser", server, "no sign-in in progress")
    assert client.get("/sso/nobody/start").status_code == 404


def test_the_provider_saying_no_is_refused(sso_server):
    client, url = start(sso_server)
    denied = httpx.post(url, data={"action": "deny"})
    refused(client.get(denied.headers["location"]), 403, "Acme ID did not sign you in (access_denied)", sso_server,
            "access_denied")


def test_a_missing_client_secret_stops_the_server_before_it_starts(provider, tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    settings = WebSettings(sso=(SSOProvider(name="acme", label="Acme", issuer=provider, client_id="x",
                                            client_secret_env=SECRET_ENV),))
    with Store.open(tmp_path) as store, pytest.raises(ConfigError, match=f"web.sso\\[acme\\]: the environment variable "
                                                                          f"{SECRET_ENV} \\(client_secret_env\\) is not set"):
        with serve(store, [], settings):
            pass


def test_sso_settings_are_read_from_serve_yaml(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"web": {"public_url": "https://chat.example.com/", "sso": [{
        "name": "entra", "label": "Microsoft", "issuer": "https://login.microsoftonline.com/tenant/v2.0/",
        "client_id": "app-id", "client_secret_env": "ENTRA_SECRET", "allowed_domains": ["Example.com"],
        "create_users": True, "role_claim": "roles", "role_map": {"Llama.Admin": "admin"}, "default_role": None}]}}))
    web = load_config(path, {}, []).web
    assert web.public_url == "https://chat.example.com"
    assert web.sso == (SSOProvider(name="entra", label="Microsoft", issuer="https://login.microsoftonline.com/tenant/v2.0",
                                   client_id="app-id", client_secret_env="ENTRA_SECRET", allowed_domains=("example.com",),
                                   create_users=True, role_claim="roles", role_map={"Llama.Admin": "admin"},
                                   default_role=None),)


def test_bad_sso_settings_are_all_named_at_once(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"web": {"public_url": "chat.example.com", "sso": [
        {"name": "Entra", "issuer": "http://login.example.com", "client_secret": "s3cret", "create_users": True,
         "role_map": {"g": "boss"}},
        {"name": "ok", "issuer": "http://localhost:9", "client_id": "c", "scopes": ["email"], "allowed_domains": ["@x"]},
        {"name": "ok", "issuer": "https://id.example.com", "client_id": "c", "client_secret_env": "no-such name"},
    ]}}))
    with pytest.raises(ConfigError) as error:
        load_config(path, {}, [])
    message = str(error.value)
    for expected in [
        "web.sso[Entra]: client_secret: secrets are never read from this file; put it in an environment variable",
        "web.sso[Entra]: name must be 1-32 lower-case letters",
        "web.sso[Entra]: issuer must be the provider's https URL (http only on localhost)",
        "web.sso[Entra]: client_id must be",
        "web.sso[Entra]: create_users: true needs allowed_domains",
        "web.sso[Entra]: role_map: 'boss' is not a role (valid: admin, user)",
        "web.sso[Entra]: role_map needs role_claim",
        "web.sso[ok]: scopes must be a list of scope names including openid",
        "web.sso[ok]: allowed_domains must be a list of email domains",
        "web.sso[ok]: client_secret_env must be the NAME of an environment variable",
        "web.public_url must be the server's address",
    ]:
        assert expected in message
    assert "s3cret" not in message
    assert message.count("problem(s)") == 1


def test_single_sign_on_in_the_browser(browser, sso_server):
    server = sso_server
    set_claims(server.issuer, "b-1", email="grace@example.com", email_verified=True, groups=["staff"])
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(server.url + "/signin")
    page.screenshot(path=str(ARTIFACTS / "web-signin-sso-desktop.png"))
    page.click("text=Sign in with Acme ID")
    page.wait_for_url(server.issuer + "/oauth2/authorize?*")
    page.fill('input[name="sub"]', "b-1")
    page.click('button:has-text("Authorize")')
    page.wait_for_url(server.url + "/")
    assert page.inner_text(".who-email") == "grace@example.com"
    assert server.store.get_user("grace@example.com").auth_provider == "acme"
    context.close()
