"""The web chat at `/`: server-rendered pages (Jinja2), a little plain JavaScript (fetch + streaming),
and a JSON API for that script, on the same app, store and gateway as `/v1`. No Node.js anywhere:
the templates and static files ship in the package.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles

from llama2.serve.config import WebSettings
from llama2.serve.gateway import Gateway
from llama2.serve.web import admin, admin_invite, api, arena, pages, sso
from llama2.serve.web.security import SignInRequired
from llama2.serve.web.state import STATIC_DIR, WebState


def install(app: FastAPI, gateway: Gateway, settings: WebSettings) -> WebState:
    """Add the web chat's routes and static files to `app`; the state is `app.state.web`."""
    state = WebState.create(gateway, settings)
    app.state.web = state
    app.include_router(pages.router)
    app.include_router(api.router)
    app.include_router(arena.router)
    app.include_router(sso.router)  # single sign-on (web.sso)
    app.include_router(admin_invite.router)  # one-time set-password links
    admin.install(app)  # /admin, for admins only
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired):
        return pages.sign_in_redirect(exc.next_path)

    return state
