"""The page behind an admin's one-time set-password link (`serve.password_links`): the invited user (or
one whose password was reset) chooses a password there and is signed in. Like the sign-in form it
comes before any session, so it carries a double-submit CSRF token; the link's token travels in the
form, never in a log.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from llama2.errors import ConfigError
from llama2.serve.web.security import (CSRFError, SecureRoute, check_form_token, client_ip, form_token, read_form,
                                       set_form_cookie, set_session_cookie)
from llama2.serve.web.state import web_state

router = APIRouter(route_class=SecureRoute, include_in_schema=False)


@router.get("/set-password", response_class=HTMLResponse)
def set_password_page(request: Request, token: str = "") -> Response:
    email = web_state(request).password_links.email_for(token)
    if email is None:
        return _invalid(request)
    return _form(request, {"token": token, "email": email})


@router.post("/set-password", response_class=HTMLResponse)
async def set_password(request: Request) -> Response:
    web = web_state(request)
    form = await read_form(request)
    token = form.get("token", "")
    email = await asyncio.to_thread(web.password_links.email_for, token)
    if email is None:
        return _invalid(request)
    context = {"token": token, "email": email}
    try:
        check_form_token(request, form)
        if form.get("password") != form.get("confirm"):
            raise ConfigError("the two passwords differ")
        user = await asyncio.to_thread(web.password_links.redeem, token, form.get("password", ""))
    except CSRFError:
        return _form(request, context, error="This form has expired; try again.", status=403)
    except ConfigError as exc:
        message = str(exc)
        return _form(request, context, error=message[:1].upper() + message[1:] + ".", status=400)
    await asyncio.to_thread(web.audit.record, "user.password_set", actor=user.email, target=user.email,
                            ip=client_ip(request))
    session_token, _ = await asyncio.to_thread(web.sessions.create, user.id)
    response = RedirectResponse("/", status_code=303)
    set_session_cookie(response, request, session_token, web.settings.session_hours * 3600)
    return response


def _form(request: Request, context: dict, *, error: str | None = None, status: int = 200) -> Response:
    web = web_state(request)
    csrf = form_token(request)
    response = web.templates.TemplateResponse(request, "set_password.html", {"csrf": csrf, "error": error, **context},
                                              status_code=status)
    set_form_cookie(response, request, csrf)
    return response


def _invalid(request: Request) -> Response:
    return web_state(request).templates.TemplateResponse(
        request, "message.html", {"title": "Link not valid", "message": "This set-password link was used, has expired, "
                                  "or was replaced by a newer one. Ask an admin for a new one.",
                                  "link": ("/signin", "Sign in")}, status_code=404)
