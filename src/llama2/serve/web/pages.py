"""The web chat's pages: sign-in and sign-out, the first-start setup, sign-up (when allowed), the chat
page, and a conversation's export. Thin: the work is in `serve.sessions`, `serve.conversations`,
the store and `web.chat`; nothing here logs a form (passwords stay out of every log).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import URL

from llama2.errors import ConfigError
from llama2.serve.conversations import ConversationNotFoundError
from llama2.serve.passwords import check_new_password
from llama2.serve.sessions import SignedIn
from llama2.serve.web.chat import message_json
from llama2.serve.web.exports import export_json, export_markdown
from llama2.serve.web.render import highlight_css
from llama2.serve.web.security import (
    CSRF_FIELD,
    SESSION_COOKIE,
    CSRFError,
    SecureRoute,
    check_csrf,
    check_form_token,
    clear_session_cookie,
    client_ip,
    form_token,
    is_loopback,
    page_user,
    read_form,
    safe_next,
    set_form_cookie,
    set_session_cookie,
    signed_in,
)
from llama2.serve.web.state import WebState, web_state

router = APIRouter(route_class=SecureRoute, include_in_schema=False)
MAX_ID = 2**63 - 1
ConversationId = Path(ge=1, le=MAX_ID)


# ---- sign-in, sign-out, setup, sign-up ------------------------------------------------------------


@router.get("/signin", response_class=HTMLResponse)
def signin_page(request: Request, next: str = "/") -> Response:
    if signed_in(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _form_page(request, "signin.html", {"next": safe_next(next)})


@router.post("/signin", response_class=HTMLResponse)
async def signin(request: Request) -> Response:
    web = web_state(request)
    form = await read_form(request)
    email, password = form.get("email", "").strip().lower(), form.get("password", "")
    next_path = safe_next(form.get("next"))
    context = {"next": next_path, "email": email}
    try:
        check_form_token(request, form)
    except CSRFError:
        return _form_page(request, "signin.html", context, error="This sign-in form has expired; try again.", status=403)
    ip = client_ip(request)
    wait = web.throttle.locked_for(email, ip)
    if wait is not None:
        minutes = max(1, round(wait / 60))
        await asyncio.to_thread(web.audit.record, "signin.failed", actor=None, target=email[:320],
                                detail="locked out after repeated wrong passwords", ip=ip)
        return _form_page(request, "signin.html", context, status=429,
                          error=f"Too many failed sign-ins. Try again in {minutes} minute{'s' * (minutes != 1)}.")
    user = await asyncio.to_thread(web.gateway.store.check_password, email, password)
    if user is None:
        web.throttle.failed(email, ip)
        await asyncio.to_thread(web.audit.record, "signin.failed", actor=None, target=email[:320],
                                detail="wrong email or password", ip=ip)
        return _form_page(request, "signin.html", context, error="Wrong email or password.", status=401)
    web.throttle.succeeded(email)
    await asyncio.to_thread(web.audit.record, "signin", actor=user.email, target=user.email, detail="password", ip=ip)
    return await _start_session(request, web, user.id, next_path)


@router.post("/signout")
async def signout(request: Request) -> Response:
    web = web_state(request)
    user = await asyncio.to_thread(signed_in, request)
    form = await read_form(request)
    if user is not None:
        try:
            check_csrf(form.get(CSRF_FIELD), user.csrf_token)
        except CSRFError:
            return _message_page(request, "Sign-out failed", "This page has expired; reload it and sign out again.", 403)
        await asyncio.to_thread(web.sessions.end, request.cookies.get(SESSION_COOKIE))
        await asyncio.to_thread(web.audit.record, "signout", actor=user.email, target=user.email, ip=client_ip(request))
    response = RedirectResponse("/signin", status_code=303)
    clear_session_cookie(response, request)
    return response


@router.get("/setup", response_class=HTMLResponse)
def setup_page(request: Request, token: str = "") -> Response:
    refusal = _setup_refusal(request, token)
    if refusal is not None:
        return refusal
    return _form_page(request, "setup.html", {"token": token})


@router.post("/setup", response_class=HTMLResponse)
async def setup(request: Request) -> Response:
    web = web_state(request)
    form = await read_form(request)
    token, email = form.get("token", ""), form.get("email", "").strip().lower()
    refusal = _setup_refusal(request, token)
    if refusal is not None:
        return refusal
    context = {"token": token, "email": email}
    try:
        check_form_token(request, form)
        _check_new_password(form)
        user = await asyncio.to_thread(web.setup.redeem, token,
                                       lambda: web.gateway.store.add_first_admin(email, form.get("password", "")))
    except CSRFError:
        return _form_page(request, "setup.html", context, error="This form has expired; try again.", status=403)
    except ConfigError as exc:
        return _form_page(request, "setup.html", context, error=_sentence(str(exc)), status=400)
    if user is None:  # another attempt with the same link won meanwhile
        return _message_page(request, "Setup", "This setup link has been used. Sign in instead.", 404,
                             link=("/signin", "Sign in"))
    await asyncio.to_thread(web.audit.record, "setup", actor=user.email, target=user.email, ip=client_ip(request))
    return await _start_session(request, web, user.id, "/")


@router.get("/signup", response_class=HTMLResponse)
def signup_page(request: Request) -> Response:
    if not web_state(request).settings.allow_signup:
        return _message_page(request, "No sign-up", "This server does not take sign-ups; ask an admin for an account.", 404)
    return _form_page(request, "signup.html", {})


@router.post("/signup", response_class=HTMLResponse)
async def signup(request: Request) -> Response:
    web = web_state(request)
    if not web.settings.allow_signup:
        return _message_page(request, "No sign-up", "This server does not take sign-ups; ask an admin for an account.", 404)
    form = await read_form(request)
    email = form.get("email", "").strip().lower()
    try:
        check_form_token(request, form)
        _check_new_password(form)
        user = await asyncio.to_thread(web.gateway.store.add_user, email, role="user", password=form.get("password", ""))
    except CSRFError:
        return _form_page(request, "signup.html", {"email": email}, error="This form has expired; try again.", status=403)
    except ConfigError as exc:
        return _form_page(request, "signup.html", {"email": email}, error=_sentence(str(exc)), status=400)
    await asyncio.to_thread(web.audit.record, "user.add", actor=user.email, target=user.email, detail="signed up",
                            ip=client_ip(request))
    return await _start_session(request, web, user.id, "/")


def _setup_refusal(request: Request, token: str) -> Response | None:
    web = web_state(request)
    if web.settings.setup_loopback_only and not is_loopback(request):
        return _message_page(request, "Setup", "Open the setup link in a browser on the server's own machine "
                             "(or set web.setup_loopback_only: false in serve.yaml).", 403)
    if not web.setup.matches(token):
        return _message_page(request, "Setup", "This setup link is not valid: it has been used, or it is from an "
                             "earlier start of the server. Sign in instead.", 404, link=("/signin", "Sign in"))
    return None


def _check_new_password(form: dict[str, str]) -> None:
    check_new_password(form.get("password", ""))
    if form.get("password") != form.get("confirm"):
        raise ConfigError("the two passwords differ")


async def _start_session(request: Request, web: WebState, user_id: int, next_path: str) -> Response:
    token, _ = await asyncio.to_thread(web.sessions.create, user_id)
    response = RedirectResponse(next_path, status_code=303)
    set_session_cookie(response, request, token, web.settings.session_hours * 3600)
    return response


def _form_page(request: Request, template: str, context: dict[str, Any], *, error: str | None = None,
               status: int = 200) -> Response:
    """A pre-session form (sign-in, setup, sign-up) with its double-submit CSRF token."""
    web = web_state(request)
    token = form_token(request)
    response = web.templates.TemplateResponse(request, template, {
        "csrf": token, "error": error, "allow_signup": web.settings.allow_signup, "setup_pending": web.setup.pending,
        "sso": web.sso.buttons, **context}, status_code=status)
    set_form_cookie(response, request, token)
    return response


def _message_page(request: Request, title: str, message: str, status: int,
                  link: tuple[str, str] = ("/", "Back to the chat")) -> Response:
    return web_state(request).templates.TemplateResponse(
        request, "message.html", {"title": title, "message": message, "link": link}, status_code=status)


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


# ---- the chat ---------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def home(request: Request, user: SignedIn = Depends(page_user)) -> Response:
    return _chat_page(request, user, None)


@router.get("/c/{conversation_id}", response_class=HTMLResponse)
def conversation_page(request: Request, conversation_id: int = ConversationId,
                      user: SignedIn = Depends(page_user)) -> Response:
    return _chat_page(request, user, conversation_id)


def _chat_page(request: Request, user: SignedIn, conversation_id: int | None) -> Response:
    web = web_state(request)
    models = web.models_for(user.role)
    conversation, messages = None, []
    if conversation_id is not None:
        try:
            conversation = web.conversations.get(user.user_id, conversation_id)
            messages = web.conversations.messages(user.user_id, conversation_id)
        except ConversationNotFoundError:
            return _message_page(request, "Not found", "There is no such conversation.", 404)
    names = [m.entry.name for m in models]
    selected = conversation.model if conversation and conversation.model in names else (names[0] if names else None)
    context = {
        "user": user,
        "csrf": user.csrf_token,
        "conversations": web.conversations.list(user.user_id),
        "conversation": conversation,
        "messages": [message_json(m) for m in messages],
        "models": [{"name": m.entry.name, "external": m.entry.is_external} for m in models],
        "selected_model": selected,
        "model_missing": conversation is not None and conversation.model not in names,
    }
    return web.templates.TemplateResponse(request, "chat.html", context)


@router.get("/c/{conversation_id}/export.{format}")
def export(request: Request, format: str, conversation_id: int = ConversationId,
           user: SignedIn = Depends(page_user)) -> Response:
    web = web_state(request)
    if format not in ("md", "json"):
        return _message_page(request, "Not found", "Exports are .md or .json.", 404)
    try:
        conversation = web.conversations.get(user.user_id, conversation_id)
        messages = web.conversations.messages(user.user_id, conversation_id)
    except ConversationNotFoundError:
        return _message_page(request, "Not found", "There is no such conversation.", 404)
    if format == "md":
        body, media_type = export_markdown(conversation, messages), "text/markdown; charset=utf-8"
    else:
        body = json.dumps(export_json(conversation, messages), ensure_ascii=False, indent=2)
        media_type = "application/json"
    filename = f"conversation-{conversation.id}.{format}"
    return Response(body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/highlight.css")
def code_colours() -> Response:
    return Response(highlight_css(), media_type="text/css", headers={"Cache-Control": "public, max-age=86400"})


def sign_in_redirect(next_path: str) -> RedirectResponse:
    """Where `SignInRequired` sends a browser: the sign-in page, then back."""
    target = URL("/signin").include_query_params(next=safe_next(next_path)) if next_path != "/" else "/signin"
    return RedirectResponse(str(target), status_code=303)
