"""Who may reach `/admin` and how its pages are answered: admins only (a signed-in user of another role
gets the same 404 as a page that does not exist; nobody signed in is sent to sign in), every write a
form POST carrying the session's CSRF token, every page with the admin layout.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from llama2.serve.sessions import SignedIn
from llama2.serve.web.security import (SECURITY_HEADERS, CSRF_FIELD, CSRFError, SignInRequired, check_csrf, client_ip,
                                       read_form, signed_in)
from llama2.serve.web.state import web_state

TABS = (("users", "Users", "/admin/users"), ("keys", "API keys", "/admin/keys"), ("models", "Models", "/admin/models"),
        ("usage", "Usage", "/admin/usage"), ("audit", "Audit log", "/admin/audit"))


class NotAnAdmin(Exception):
    """Raised for a signed-in user who is not an admin: answered 404, like a page that is not there."""


class FormExpired(Exception):
    """An admin form without the session's CSRF token (or not sent by a form): answered 403, nothing done."""


def admin_user(request: Request) -> SignedIn:
    """Dependency of the admin pages: the signed-in admin (`SignInRequired`, `NotAnAdmin` otherwise)."""
    user = signed_in(request)
    if user is None:
        raise SignInRequired(request.url.path)
    if not user.is_admin:
        raise NotAnAdmin()
    return user


class AdminForm:
    """Dependency of the admin writes: the admin and their form, whose CSRF token was checked."""

    def __init__(self, user: SignedIn, fields: dict[str, str], ip: str) -> None:
        self.user = user
        self.fields = fields
        self.ip = ip

    def get(self, name: str) -> str:
        return self.fields.get(name, "").strip()


async def admin_form(request: Request) -> AdminForm:
    user = admin_user(request)
    try:
        form = await read_form(request)
        check_csrf(form.get(CSRF_FIELD), user.csrf_token)
    except CSRFError:
        raise FormExpired() from None
    return AdminForm(user, form, client_ip(request))


def render(request: Request, user: SignedIn, template: str, tab: str, context: dict[str, Any], *,
           status: int = 200, notice: str | None = None, error: str | None = None) -> Response:
    """An admin page: the layout's tabs, the user, the CSRF token for its forms, a notice or an error."""
    return web_state(request).templates.TemplateResponse(request, template, {
        "user": user, "csrf": user.csrf_token, "tabs": TABS, "tab": tab, "notice": notice, "error": error,
        **context}, status_code=status)


def form_expired(request: Request, exc: FormExpired) -> Response:
    return _message(request, "Not saved", "This page has expired (its security token is missing or old); reload it "
                    "and try again.", 403)


def not_found(request: Request, exc: NotAnAdmin) -> Response:
    return _message(request, "Not found", "There is no such page.", 404)


def _message(request: Request, title: str, message: str, status: int) -> Response:
    response = web_state(request).templates.TemplateResponse(
        request, "message.html", {"title": title, "message": message, "link": ("/", "Back to the chat")},
        status_code=status)
    response.headers.update(SECURITY_HEADERS)  # raised before SecureRoute could add them
    return response
