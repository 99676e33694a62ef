"""Single sign-on: "Sign in with <label>" for each `web.sso[]` provider.

    GET /sso/NAME/start?next=/path   makes a state, a nonce and a PKCE verifier, keeps them in the store
                                     under the SHA-256 of a one-time cookie (HttpOnly, SameSite=Lax,
                                     path /sso/, 10 minutes), and sends the browser to the provider
    GET /sso/NAME/callback           takes that record back (once), checks the browser's cookie and the
                                     state, exchanges the code with the verifier, verifies the ID token
                                     (`sso_client`), finds or makes the account (`sso_accounts`), and
                                     starts a session like a password sign-in

The cookie ties the callback to the browser that started the sign-in, so nobody can sign a victim in
to an attacker's account by sending them a callback link. Every outcome is in the audit log.
"""

from __future__ import annotations

import asyncio
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from llama2.serve.audit import AuditLog
from llama2.serve.config import WebSettings
from llama2.serve.web.security import SecureRoute, client_ip, is_tls, safe_next, set_session_cookie
from llama2.serve.web.sso_accounts import SSOAccount, resolve
from llama2.serve.web.sso_client import SSOError
from llama2.serve.web.sso_state import LOGIN_LIFETIME
from llama2.serve.web.state import web_state

router = APIRouter(prefix="/sso", route_class=SecureRoute, include_in_schema=False)
SSO_COOKIE = "llama2_sso"
COOKIE_PATH = "/sso/"


def redirect_uri(request: Request, settings: WebSettings, provider: str) -> str:
    """Where the provider sends the browser back: web.public_url's, else the address this request came to."""
    base = settings.public_url or str(request.base_url).rstrip("/")
    return f"{base}/sso/{provider}/callback"


@router.get("/{provider}/start")
async def start(request: Request, provider: str, next: str = "/") -> Response:
    web = web_state(request)
    client = web.sso.clients.get(provider)
    if client is None:
        return _failure(request, "There is no such sign-in provider.", 404)
    token, pending = await asyncio.to_thread(web.sso.begin, provider, safe_next(next))
    try:
        url = await client.authorization_url(redirect_uri(request, web.settings, provider), pending.state,
                                             pending.nonce, pending.code_verifier)
    except SSOError as exc:
        return _failure(request, str(exc), exc.status)
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(SSO_COOKIE, token, max_age=int(LOGIN_LIFETIME.total_seconds()), httponly=True,
                        samesite="lax", secure=is_tls(request), path=COOKIE_PATH)
    return response


@router.get("/{provider}/callback")
async def callback(request: Request, provider: str) -> Response:
    web = web_state(request)
    client = web.sso.clients.get(provider)
    if client is None:
        return _failure(request, "There is no such sign-in provider.", 404)
    label = client.provider.label
    pending = await asyncio.to_thread(web.sso.take, request.cookies.get(SSO_COOKIE))
    params = request.query_params
    try:
        if pending is None or pending.provider != provider:
            raise SSOError(f"This sign-in with {label} has expired or was started in another browser; start again.",
                           "no sign-in in progress for this browser")
        if params.get("error"):  # refused at the provider (nothing to sign in, so no state needed)
            raise SSOError(f"{label} did not sign you in ({params['error'][:60]}); start again.",
                           f"provider said {params['error'][:60]}", 403)
        if not secrets.compare_digest(params.get("state", "").encode(), pending.state.encode()):
            raise SSOError(f"This answer from {label} is not for the sign-in this browser started (the state does "
                           "not match); start again.", "state mismatch")
        if not params.get("code"):
            raise SSOError(f"{label} sent no authorization code; start again.", "no code")
        id_token = await client.exchange(params["code"], redirect_uri(request, web.settings, provider),
                                         pending.code_verifier)
        claims = await client.verify(id_token, pending.nonce)
        account = await asyncio.to_thread(resolve, web.gateway.store, client.provider, claims)
    except SSOError as exc:
        await asyncio.to_thread(web.audit.record, "signin.failed", actor=None, target=None,
                                detail=f"sso {provider}: {exc.reason}", ip=client_ip(request))
        return _failure(request, str(exc), exc.status)
    await asyncio.to_thread(_audit_success, web.audit, provider, account, client_ip(request))
    token, _ = await asyncio.to_thread(web.sessions.create, account.user_id)
    response = RedirectResponse(pending.next_path, status_code=303)
    set_session_cookie(response, request, token, web.settings.session_hours * 3600)
    response.delete_cookie(SSO_COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax", secure=is_tls(request))
    return response


def _audit_success(audit: AuditLog, provider: str, account: SSOAccount, ip: str) -> None:
    if account.created:
        audit.record("user.sso_created", actor=account.email, target=account.email,
                     detail=f"through {provider}, role {account.role}", ip=ip)
    if account.role_before is not None:
        audit.record("user.role", actor=f"sso:{provider}", target=account.email,
                     detail=f"{account.role_before} → {account.role} (from the provider's claims)", ip=ip)
    how = "linked to this account at its first use" if account.linked else ""
    audit.record("signin", actor=account.email, target=account.email,
                 detail=f"sso {provider}" + (f" ({how})" if how else ""), ip=ip)


def _failure(request: Request, message: str, status: int) -> Response:
    response = web_state(request).templates.TemplateResponse(
        request, "message.html", {"title": "Sign-in failed", "message": message, "link": ("/signin", "Back to sign-in")},
        status_code=status)
    response.delete_cookie(SSO_COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax", secure=is_tls(request))
    return response
