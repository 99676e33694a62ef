"""The admin pages' users and API keys, and the `/admin` router that the other admin pages join.

Users: invite (a user with no password and a one-time set-password link, shown once), change role,
disable (their sessions end at once, their keys stop working) and enable, and a new set-password link.
An admin cannot disable or demote themselves, and the last enabled admin stays one. API keys: every
user's, revoke. Each change lands in the audit log; after a change the browser is redirected (so a
reload does not repeat it), except where a link must be shown once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from llama2.errors import ConfigError
from llama2.serve.auth import ROLES
from llama2.serve.sessions import SignedIn
from llama2.serve.store import PasswordLink, User, utcnow
from llama2.serve.web import admin_models, admin_usage
from llama2.serve.web.admin_access import (AdminForm, FormExpired, NotAnAdmin, admin_form, admin_user, form_expired,
                                           not_found, render)
from llama2.serve.web.security import SecureRoute
from llama2.serve.web.state import WebState, web_state

router = APIRouter(prefix="/admin", route_class=SecureRoute, include_in_schema=False)
UserId = Path(ge=1, le=2**31 - 1)


def install(app: FastAPI) -> None:
    """Add every admin page, and the answers for non-admins and expired forms."""
    for admin_router in routers():
        app.include_router(admin_router)
    app.add_exception_handler(NotAnAdmin, not_found)
    app.add_exception_handler(FormExpired, form_expired)


def routers() -> tuple[APIRouter, ...]:
    """Every router under /admin (the tests walk them all)."""
    return router, admin_models.router, admin_usage.router


@router.get("")
def home(user: SignedIn = Depends(admin_user)) -> Response:
    return RedirectResponse("/admin/users", status_code=303)


# ---- users -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserRow:
    id: int
    email: str
    role: str
    disabled: bool
    created_at: datetime
    last_sign_in_at: datetime | None
    sign_in: str  # how they sign in: "password", "SSO (entra)", both, "invited", or "API keys only"


@router.get("/users")
def users_page(request: Request, done: str = "", target: int = 0, user: SignedIn = Depends(admin_user)) -> Response:
    return _users_page(request, user, notice=_users_notice(web_state(request), done, target))


@router.post("/users/invite")
def invite(request: Request, form: AdminForm = Depends(admin_form)) -> Response:
    web = web_state(request)
    email, role = form.get("email").lower(), form.get("role") or "user"
    try:
        invited = web.gateway.store.add_user(email, role=role)
    except ConfigError as exc:
        return _users_page(request, form.user, error=_sentence(str(exc)), status=400, invite={"email": email, "role": role})
    token = web.password_links.create(invited.id, actor=form.user.email)
    web.audit.record("user.invite", actor=form.user.email, target=invited.email, detail=f"role {role}", ip=form.ip)
    return _users_page(request, form.user, link=_link(request, web, invited.email, token), status=201)


@router.post("/users/{user_id}/role")
def change_role(request: Request, user_id: int = UserId, form: AdminForm = Depends(admin_form)) -> Response:
    web = web_state(request)
    target, role = _target(web, user_id), form.get("role")
    if role not in ROLES:
        return _users_page(request, form.user, error=f"Pick a role: {', '.join(ROLES)}.", status=400)
    if role != "admin" and target.role == "admin":
        refusal = _refuse_losing_admin(web, form.user, target, "demote")
        if refusal:
            return _users_page(request, form.user, error=refusal, status=400)
    if role != target.role:
        web.gateway.store.set_role(target.email, role)
        web.audit.record("user.role", actor=form.user.email, target=target.email, detail=f"{target.role} → {role}",
                         ip=form.ip)
    return RedirectResponse(f"/admin/users?done=role&target={target.id}", status_code=303)


@router.post("/users/{user_id}/disable")
def disable(request: Request, user_id: int = UserId, form: AdminForm = Depends(admin_form)) -> Response:
    web = web_state(request)
    target = _target(web, user_id)
    refusal = _refuse_losing_admin(web, form.user, target, "disable") if target.role == "admin" else None
    if refusal:
        return _users_page(request, form.user, error=refusal, status=400)
    if not target.disabled:
        web.gateway.store.set_disabled(target.email, True)  # ends their sessions now
        web.audit.record("user.disable", actor=form.user.email, target=target.email, ip=form.ip)
    return RedirectResponse(f"/admin/users?done=disabled&target={target.id}", status_code=303)


@router.post("/users/{user_id}/enable")
def enable(request: Request, user_id: int = UserId, form: AdminForm = Depends(admin_form)) -> Response:
    web = web_state(request)
    target = _target(web, user_id)
    if target.disabled:
        web.gateway.store.set_disabled(target.email, False)
        web.audit.record("user.enable", actor=form.user.email, target=target.email, ip=form.ip)
    return RedirectResponse(f"/admin/users?done=enabled&target={target.id}", status_code=303)


@router.post("/users/{user_id}/password-link")
def password_link(request: Request, user_id: int = UserId, form: AdminForm = Depends(admin_form)) -> Response:
    web = web_state(request)
    target = _target(web, user_id)
    if target.disabled:
        return _users_page(request, form.user, error=f"{target.email} is disabled; enable the account first.", status=400)
    token = web.password_links.create(target.id, actor=form.user.email)
    web.audit.record("user.password_link", actor=form.user.email, target=target.email, ip=form.ip)
    return _users_page(request, form.user, link=_link(request, web, target.email, token), status=201)


def _users_page(request: Request, user: SignedIn, *, notice: str | None = None, error: str | None = None,
                link: dict[str, str] | None = None, invite: dict[str, str] | None = None, status: int = 200) -> Response:
    web = web_state(request)
    users, pending = web.gateway.store.list_users(), _pending_links(web)
    context: dict[str, Any] = {
        "users": [_row(u, pending) for u in users], "roles": ROLES, "link": link,
        "invite": invite or {"email": "", "role": "user"}, "invite_hours": web.settings.invite_hours,
        "admins": sum(1 for u in users if u.role == "admin" and not u.disabled),
    }
    return render(request, user, "admin_users.html", "users", context, status=status, notice=notice, error=error)


def _row(user: User, pending: set[int]) -> UserRow:
    ways = (["password"] if user.password_hash else []) + ([f"SSO ({user.auth_provider})"] if user.auth_provider else [])
    if not ways:
        ways = ["invited"] if user.id in pending else ["API keys only"]
    return UserRow(user.id, user.email, user.role, user.disabled, user.created_at, user.last_sign_in_at,
                   " + ".join(ways))


def _pending_links(web: WebState) -> set[int]:
    with web.gateway.store.reading() as session:
        return set(session.scalars(select(PasswordLink.user_id).where(PasswordLink.expires_at > utcnow())))


def _target(web: WebState, user_id: int) -> User:
    with web.gateway.store.reading() as session:
        target = session.get(User, user_id)
    if target is None:
        raise NotAnAdmin()  # the same 404 as any page that is not there
    return target


def _refuse_losing_admin(web: WebState, actor: SignedIn, target: User, verb: str) -> str | None:
    """Why this admin may not be disabled or demoted, or None: not oneself, and not the last admin."""
    if target.id == actor.user_id:
        return f"You cannot {verb} your own account; another admin can."
    admins = [u for u in web.gateway.store.list_users() if u.role == "admin" and not u.disabled]
    if len(admins) <= 1:
        return f"{target.email} is the last enabled admin; make another admin first."
    return None


def _users_notice(web: WebState, done: str, target: int) -> str | None:
    messages = {"role": "{email} is now {role}.", "disabled": "{email} is disabled; their sessions have ended and "
                "their API keys no longer work.", "enabled": "{email} can sign in again."}
    if done not in messages or target < 1:
        return None
    with web.gateway.store.reading() as session:
        user = session.get(User, target)
    return messages[done].format(email=user.email, role=user.role) if user else None


def _link(request: Request, web: WebState, email: str, token: str) -> dict[str, str]:
    base = web.settings.public_url or str(request.base_url).rstrip("/")
    return {"email": email, "url": f"{base}/set-password?token={token}"}


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


# ---- API keys ------------------------------------------------------------------------------------------


@router.get("/keys")
def keys_page(request: Request, done: str = "", target: str = "", user: SignedIn = Depends(admin_user)) -> Response:
    keys = web_state(request).gateway.store.list_keys()
    notice = f"Key {target} is revoked." if done == "revoked" and any(k.id == target for k in keys) else None
    active = sum(1 for k in keys if not k.revoked)
    return render(request, user, "admin_keys.html", "keys", {"keys": keys[::-1], "active": active}, notice=notice)


@router.post("/keys/{key_id}/revoke")
def revoke_key(request: Request, key_id: str = Path(max_length=32), form: AdminForm = Depends(admin_form)) -> Response:
    web = web_state(request)
    key = next((k for k in web.gateway.store.list_keys() if k.id == key_id), None)
    if key is None:
        raise NotAnAdmin()
    if not key.revoked:
        web.gateway.store.revoke_key(key_id)
        web.audit.record("key.revoke", actor=form.user.email, target=key_id, detail=f"of {key.user_email}", ip=form.ip)
    return RedirectResponse(f"/admin/keys?done=revoked&target={key_id}", status_code=303)
