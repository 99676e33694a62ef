"""What every web request passes: security headers, the session cookie, CSRF checks.

- Every response of the web routes carries a strict Content-Security-Policy (scripts, styles and
  everything else from this origin only; no inline script or style, no inline event handlers, no
  framing), `nosniff`, no referrer (the setup link's token stays out of other sites' logs) and no
  caching of private pages.
- The session cookie is HttpOnly and SameSite=Lax, and Secure when the request came over TLS
  (uvicorn's own TLS, or a proxy on loopback that sets X-Forwarded-Proto).
- CSRF: signed-in requests that change state carry the session's token (the `X-CSRF-Token` header
  for fetch, a `csrf_token` field for forms), compared in constant time. The sign-in, setup and
  sign-up forms come before any session, so they use a double-submit token: a random cookie that
  the form must repeat (another site can neither read nor set it).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request, Response
from fastapi.routing import APIRoute

from llama2.errors import AuthenticationError, ServeError
from llama2.serve.sessions import SignedIn

SESSION_COOKIE = "llama2_session"
FORM_COOKIE = "llama2_form"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
MAX_FORM_FIELDS = 20
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; manifest-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class CSRFError(ServeError):
    status = 403
    code = "csrf_failed"


class SignInRequired(Exception):
    """A page needs a signed-in user: the app answers with a redirect to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class SecureRoute(APIRoute):
    """An APIRoute whose every response, streamed ones included, carries SECURITY_HEADERS."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def secured(request: Request) -> Response:
            response = await handler(request)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return secured


def signed_in(request: Request) -> SignedIn | None:
    """The request's live session (looked up once per request), or None."""
    if not hasattr(request.state, "signed_in"):
        request.state.signed_in = request.app.state.web.sessions.find(request.cookies.get(SESSION_COOKIE))
    return request.state.signed_in


def page_user(request: Request) -> SignedIn:
    """Dependency of pages: the user, or a redirect to sign in (and back here afterwards)."""
    user = signed_in(request)
    if user is None:
        raise SignInRequired(request.url.path)
    return user


def api_user(request: Request) -> SignedIn:
    """Dependency of the JSON API's reads: the user, or 401."""
    user = signed_in(request)
    if user is None:
        raise AuthenticationError("You are not signed in (or your session has ended); sign in again.")
    return user


def csrf_user(request: Request) -> SignedIn:
    """Dependency of the JSON API's writes: the user, whose request must carry the session's CSRF token."""
    user = api_user(request)
    check_csrf(request.headers.get(CSRF_HEADER), user.csrf_token)
    return user


def check_csrf(presented: str | None, expected: str | None) -> None:
    if not presented or not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise CSRFError("This request lacks a valid CSRF token; reload the page and try again.")


async def read_form(request: Request) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body (our forms have no files) as a dict of its first values."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise CSRFError("This form was not sent by this site's pages; reload the page and try again.")
    body = (await request.body()).decode("utf-8", errors="replace")
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS):
        fields.setdefault(name, value)
    return fields


def form_token(request: Request) -> str:
    """The double-submit token of the pre-session forms: the cookie's, or a new one to set."""
    token = request.cookies.get(FORM_COOKIE) or ""
    return token if len(token) == 43 else secrets.token_urlsafe(32)


def set_form_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(FORM_COOKIE, token, httponly=True, samesite="strict", secure=is_tls(request), path="/")


def check_form_token(request: Request, form: dict[str, str]) -> None:
    check_csrf(form.get(CSRF_FIELD), request.cookies.get(FORM_COOKIE))


def set_session_cookie(response: Response, request: Request, token: str, max_age_s: int) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=max_age_s, httponly=True, samesite="lax",
                        secure=is_tls(request), path="/")


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=is_tls(request))


def is_tls(request: Request) -> bool:
    return request.url.scheme == "https"


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def is_loopback(request: Request) -> bool:
    try:
        return ipaddress.ip_address(client_ip(request)).is_loopback
    except ValueError:
        return False


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a path on this site only (no `//host` or `/\\host` tricks)."""
    if not path or not path.startswith("/") or path.startswith(("//", "/\\")) or any(c in path for c in "\r\n\t"):
        return "/"
    return path
