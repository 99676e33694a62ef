"""What the web routes share for the app's lifetime, kept on `app.state.web`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape

from llama2.serve.audit import AuditLog
from llama2.serve.auth import LoginThrottle
from llama2.serve.config import WebSettings
from llama2.serve.conversations import Conversations
from llama2.serve.gateway import Gateway
from llama2.serve.model_access import ModelAccess
from llama2.serve.models import ServedModel
from llama2.serve.password_links import PasswordLinks
from llama2.serve.sessions import WebSessions
from llama2.serve.web.setup import SetupToken
from llama2.serve.web.sso_state import SingleSignOn

WEB_DIR = Path(__file__).parent
STATIC_DIR = WEB_DIR / "static"


@dataclass
class WebState:
    gateway: Gateway
    settings: WebSettings
    sessions: WebSessions
    conversations: Conversations
    throttle: LoginThrottle
    setup: SetupToken
    templates: Jinja2Templates
    audit: AuditLog
    sso: SingleSignOn
    password_links: PasswordLinks
    model_access: ModelAccess  # roles per model: serve.yaml's, or an admin's (applied to the models here)

    @classmethod
    def create(cls, gateway: Gateway, settings: WebSettings) -> WebState:
        store = gateway.store
        return cls(
            gateway=gateway,
            settings=settings,
            sessions=WebSessions(store, lifetime=timedelta(hours=settings.session_hours)),
            conversations=Conversations(store),
            throttle=LoginThrottle(max_per_account=settings.max_failed_logins,
                                   max_per_ip=settings.max_failed_logins_per_ip,
                                   lockout_s=settings.lockout_minutes * 60.0),
            setup=SetupToken.for_user_count(store.count_users()),
            templates=_templates(),
            audit=AuditLog(store),
            sso=SingleSignOn.create(store, settings.sso),
            password_links=PasswordLinks(store, lifetime=timedelta(hours=settings.invite_hours)),
            model_access=_model_access(gateway),
        )

    def models_for(self, role: str) -> list[ServedModel]:
        """The models a role may use, in the configured order (the model picker's options)."""
        return [m for m in self.gateway.models.models.values() if m.entry.allows(role)]


def _model_access(gateway: Gateway) -> ModelAccess:
    access = ModelAccess(gateway.store, gateway.models)
    access.apply()
    return access


def web_state(request: Request) -> WebState:
    return request.app.state.web


def _templates() -> Jinja2Templates:
    env = Environment(loader=FileSystemLoader(WEB_DIR / "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals["static"] = static_url
    return Jinja2Templates(env=env)


@cache
def static_url(name: str) -> str:
    """`/static/NAME?v=HASH`: browsers may cache static files for long, and a changed file gets a new URL."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:10]
    return f"/static/{name}?v={digest}"
