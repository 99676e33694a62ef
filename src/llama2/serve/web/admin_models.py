"""The admin page of models: each model the server offers, local or external, the roles that may use
it (serve.yaml's `roles:`, or an admin's choice stored in the database, which wins until reset), and
for remote models the upstream API key.

An upstream key goes from the form into `UpstreamKeys.apply` (checked, the provider rebuilt with it,
sealed into the store) and nowhere else: the page shows whether one is set and at most its last four
characters; messages name the model, never the key; nothing here logs a form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from llama2.errors import ConfigError
from llama2.serve.auth import ROLES
from llama2.serve.model_access import StoredRoles
from llama2.serve.models import ServedModel
from llama2.serve.sessions import SignedIn
from llama2.serve.upstream_keys import KeyStatus, takes_key
from llama2.serve.web.admin_access import AdminForm, NotAnAdmin, admin_form, admin_user, render
from llama2.serve.web.security import SecureRoute
from llama2.serve.web.state import WebState, web_state

router = APIRouter(prefix="/admin/models", route_class=SecureRoute, include_in_schema=False)
NOTICES = {"roles": "Saved who may use {model}.", "reset": "{model} follows serve.yaml's roles again.",
           "key": "The upstream key of {model} is set; new requests use it.",
           "cleared": "The stored key of {model} is removed; it uses the key in the environment again."}


@dataclass(frozen=True)
class ModelRow:
    name: str
    provider: str  # the spec's scheme: local, azure, openai, ...
    external: bool
    roles: tuple[str, ...] | None  # in force; None: every role
    configured: tuple[str, ...] | None  # serve.yaml's
    override: StoredRoles | None  # the roles an admin set (in force), with who and when
    takes_key: bool
    key: KeyStatus | None  # the stored key
    env_key: str | None  # the environment variable a key comes from instead, when one does


@router.get("")
def models_page(request: Request, done: str = "", model: str = "", user: SignedIn = Depends(admin_user)) -> Response:
    web = web_state(request)
    notice = NOTICES[done].format(model=model) if done in NOTICES and model in web.gateway.models.models else None
    return _page(request, user, notice=notice)


@router.post("/roles")
def set_roles(request: Request, form: AdminForm = Depends(admin_form)) -> Response:
    web = web_state(request)
    name = _model(web, form.get("model")).entry.name
    reset = form.get("action") == "reset"
    roles = None if reset else [role for role in ROLES if form.get(f"role_{role}") == "on"]
    web.model_access.set(name, roles, actor=form.user.email)
    web.audit.record("model.roles", actor=form.user.email, target=name, ip=form.ip,
                     detail="back to serve.yaml's" if reset else (", ".join(roles) or "nobody"))
    return RedirectResponse(f"/admin/models?done={'reset' if reset else 'roles'}&model={name}", status_code=303)


@router.post("/key")
def set_key(request: Request, form: AdminForm = Depends(admin_form)) -> Response:
    return _change_key(request, form, form.fields.get("api_key", ""))


@router.post("/key/clear")
def clear_key(request: Request, form: AdminForm = Depends(admin_form)) -> Response:
    return _change_key(request, form, None)


def _change_key(request: Request, form: AdminForm, key: str | None) -> Response:
    web = web_state(request)
    keys = web.gateway.upstream_keys
    name = _model(web, form.get("model")).entry.name
    if keys is None:
        raise NotAnAdmin()
    try:
        keys.apply(web.gateway.models, name, key, actor=form.user.email)
    except ConfigError as exc:
        message = str(exc)
        return _page(request, form.user, error=message[:1].upper() + message[1:] + ".", status=400)
    web.audit.record("upstream_key.clear" if key is None else "upstream_key.set", actor=form.user.email,
                     target=name, ip=form.ip)
    return RedirectResponse(f"/admin/models?done={'cleared' if key is None else 'key'}&model={name}", status_code=303)


def _model(web: WebState, name: str) -> ServedModel:
    served = web.gateway.models.models.get(name)
    if served is None:
        raise NotAnAdmin()
    return served


def _page(request: Request, user: SignedIn, *, notice: str | None = None, error: str | None = None,
          status: int = 200) -> Response:
    web = web_state(request)
    keys = web.gateway.upstream_keys
    statuses = keys.statuses() if keys is not None else {}
    stored_roles = web.model_access.stored()
    rows = []
    for name, served in web.gateway.models.models.items():
        settings = getattr(served.provider, "settings", None)
        env_key = (settings.api_key_env if settings is not None and settings.api_key and not settings.api_key_stored
                   else None)
        rows.append(ModelRow(name, served.owned_by, served.entry.is_external, served.entry.roles,
                             web.model_access.configured.get(name), stored_roles.get(name),
                             takes_key(served.entry), statuses.get(name), env_key))
    context: dict[str, Any] = {"models": rows, "roles": ROLES, "keys_offered": keys is not None,
                               "key_source": keys.key_source if keys is not None else None}
    return render(request, user, "admin_models.html", "models", context, status=status, notice=notice, error=error)
