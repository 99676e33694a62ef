"""The server's configuration (`serve.yaml`), validated whole before any model loads or port opens.

    server:
      host: 127.0.0.1           # loopback unless you mean to expose it (put TLS in front: README)
      port: 8000
      data_dir: ~/.local/share/llama2   # the SQLite store lives here unless `db` is given
      db: postgresql://llama2@db.internal/llama2
      log_content: false        # record request and response bodies in the usage log
      max_body_bytes: 4194304   # larger requests get 413
    models:                     # the names clients put in "model"
      llama-2-7b-chat:
        spec: local:/models/llama-2-7b-chat
        dtype: bfloat16
        max_batch_size: 16      # rows decoding together (continuous batching)
        max_queue: 256          # waiting requests beyond the batch; more is a 429
      gpt-35-turbo:
        spec: azure:gpt-35-turbo
        endpoint: https://my-resource.openai.azure.com
        api_version: "2024-10-21"
        api_key_env: AZURE_OPENAI_API_KEY   # the variable's NAME; keys never live in this file
        roles: [admin]          # who may use it (web chat and API); default: every role
      llama-cpp:
        spec: http://127.0.0.1:8080/v1#llama
    web:                        # the web chat at / (every key optional; these are the defaults)
      allow_signup: false       # anyone who reaches the server may create a (user) account
      session_hours: 168        # a sign-in lasts this long
      max_failed_logins: 5      # wrong passwords for one account before it is locked ...
      max_failed_logins_per_ip: 20   # ... or from one address before that address is
      lockout_minutes: 15       # how long a lockout lasts (and the window failures are counted in)
      setup_loopback_only: true # the first-start setup page answers only this machine
      invite_hours: 72          # how long an admin's one-time set-password link works
      public_url: https://chat.example.com   # how browsers reach the server (SSO redirects, links)
      sso:                      # single sign-on through OpenID Connect providers (README)
        - name: entra           # in URLs: /sso/entra/start, /sso/entra/callback
          label: Microsoft      # the button says "Sign in with Microsoft"
          issuer: https://login.microsoftonline.com/TENANT-ID/v2.0
          client_id: 00000000-0000-0000-0000-000000000000
          client_secret_env: ENTRA_CLIENT_SECRET   # the variable's NAME; none for a public client
          scopes: [openid, email, profile]
          allowed_domains: [example.com]           # ["*"]: any; needed when create_users is true
          create_users: true    # a first sign-in makes an account (else only existing users)
          email_claim: email
          role_claim: groups    # the claim roles come from, synced at every sign-in
          role_map: {llama-admins: admin, staff: user}
          default_role: user    # when no claim value maps (null: refuse the sign-in)

Each model entry is a spec (`providers.registry`) plus that provider's settings: load options and
scheduler limits for local models, `providers.settings` fields for remote ones; `roles` is the
server's own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from llama2.errors import ConfigError, ProviderError
from llama2.providers.local import LOAD_OPTIONS, SCHEDULER_OPTIONS
from llama2.providers.registry import PROVIDERS, URL_SCHEMES, parse_spec
from llama2.providers.settings import check_entry
from llama2.serve.auth import ROLES

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
# Served when no model is configured: the bundled chat model first (what people talk to), and the
# bundled base model beside it, so a fresh install has two models to compare.
BUNDLED_SERVED = ("default-chat", "default")
SERVED_MAX_QUEUE = 256  # a served local model's waiting requests (a benchmark's own default is larger)
SERVER_KEYS = ("host", "port", "data_dir", "db", "log_content", "max_body_bytes")
TOP_LEVEL_KEYS = ("server", "models", "web")
EXTERNAL_SCHEMES = ("openai", "azure", "anthropic", "openai-compatible")  # prompts leave this server
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


@dataclass(frozen=True)
class ModelEntry:
    """One model the server offers: the name clients use, its spec, and the provider's options."""

    name: str
    spec: str
    options: Mapping[str, Any] = field(default_factory=dict)
    roles: tuple[str, ...] | None = None  # the user roles that may use it; None: every role

    @property
    def is_local(self) -> bool:
        return parse_spec(self.spec)[0] == "local"

    @property
    def is_external(self) -> bool:
        """Whether prompts go to another service (a hosted API or another server), which the web
        chat marks so nobody sends confidential text outside by mistake."""
        return parse_spec(self.spec)[0] in EXTERNAL_SCHEMES

    def allows(self, role: str) -> bool:
        return self.roles is None or role in self.roles


@dataclass(frozen=True)
class SSOProvider:
    """One OpenID Connect provider people may sign in with (`web.sso[]` in serve.yaml)."""

    name: str
    label: str
    issuer: str
    client_id: str
    client_secret_env: str | None = None  # the environment variable holding the client secret
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    allowed_domains: tuple[str, ...] = ()  # email domains that may sign in; ("*",): any; (): existing users only
    create_users: bool = False
    email_claim: str = "email"
    role_claim: str | None = None
    role_map: Mapping[str, str] = field(default_factory=dict)  # claim value -> role
    default_role: str | None = "user"

    def allows_domain(self, domain: str) -> bool:
        return "*" in self.allowed_domains or domain in self.allowed_domains


SSO_KEYS = tuple(SSOProvider.__dataclass_fields__)
_SSO_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DOMAIN = re.compile(r"^(\*|[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+)$")


@dataclass(frozen=True)
class WebSettings:
    """The web chat's sign-in policy (`web:` in serve.yaml)."""

    allow_signup: bool = False
    session_hours: int = 168
    max_failed_logins: int = 5
    max_failed_logins_per_ip: int = 20
    lockout_minutes: int = 15
    setup_loopback_only: bool = True
    invite_hours: int = 72
    public_url: str | None = None  # e.g. https://chat.example.com; None: the address each request came to
    sso: tuple[SSOProvider, ...] = ()


WEB_KEYS = tuple(WebSettings.__dataclass_fields__)


@dataclass(frozen=True)
class ServeConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path | None = None
    db: str | None = None
    log_content: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    models: tuple[ModelEntry, ...] = ()
    web: WebSettings = WebSettings()


def model_from_argument(argument: str) -> ModelEntry:
    """`--model` values: `NAME=SPEC`, or a bare spec named after itself (`local:/m/llama-2-7b-chat`
    is offered as `llama-2-7b-chat`, `local:default` as `default`)."""
    name, sep, spec = argument.partition("=")
    if sep and _NAME.match(name) and not name.startswith((*PROVIDERS, *URL_SCHEMES)):  # "=" inside a spec
        return ModelEntry(name, spec)
    scheme, target = parse_spec(argument)
    if scheme == "local":
        return ModelEntry(Path(target.rstrip("/")).name or target, argument)
    if scheme == "openai-compatible":
        return ModelEntry(target.partition("#")[2] or target, argument)
    return ModelEntry(target, argument)


def load_config(path: Path | None, overrides: Mapping[str, Any], models: list[str]) -> ServeConfig:
    """The file (if any), then command-line overrides (None means "not given"), then `--model`s
    (which replace the file's models). Every problem is collected and raised as one ConfigError."""
    problems: list[str] = []
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_yaml(path)
        unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
        problems += [f"unknown top-level key {key!r} (use {', '.join(TOP_LEVEL_KEYS)})" for key in unknown]
    where = str(path) if path else "command line"
    server = dict(data.get("server") or {})
    if not isinstance(server, dict):
        problems.append("server must be a mapping of " + ", ".join(SERVER_KEYS))
        server = {}
    server.update({k: v for k, v in overrides.items() if v is not None})
    problems += [f"server: unknown key {key!r} (valid: {', '.join(SERVER_KEYS)})" for key in server if key not in SERVER_KEYS]
    settings = _server_settings(server, problems)
    web = _web_settings(data.get("web"), problems)
    entries: list[ModelEntry] = []
    if models:
        for argument in models:
            try:
                entries.append(model_from_argument(argument))
            except ProviderError as exc:
                problems.append(f"--model {argument}: {exc}")
    else:
        raw = data.get("models") or {}
        if not isinstance(raw, Mapping):
            problems.append("models must map each model's name to its entry (spec: ..., options)")
            raw = {}
        for name, entry in raw.items():
            entries.append(_model_entry(str(name), entry, problems))
    if not entries:
        entries += [ModelEntry(name, f"local:{name}") for name in BUNDLED_SERVED]
    for entry in entries:
        _check_model(entry, problems)
    names = [entry.name for entry in entries]
    problems += [f"model name {name!r} is used twice" for name in sorted({n for n in names if names.count(n) > 1})]
    if problems:
        raise ConfigError(f"{where}: {len(problems)} problem(s): " + "; ".join(problems))
    return ServeConfig(**settings, models=tuple(entries), web=web)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file; write one (see the README's serve section) or leave out --config") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(f"{path}: cannot read the config ({reason})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    return data


def _server_settings(server: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    host = server.get("host", DEFAULT_HOST)
    if not isinstance(host, str) or not host:
        problems.append(f"server.host must be a host name or address, not {host!r}")
    out["host"] = host
    port = server.get("port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        problems.append(f"server.port must be an integer 0-65535 (0 picks a free one), not {port!r}")
    out["port"] = port
    for key in ("data_dir", "db"):
        value = server.get(key)
        if value is not None and not (isinstance(value, (str, Path)) and str(value)):
            problems.append(f"server.{key} must be a string, not {value!r}")
    if server.get("data_dir") is not None:
        out["data_dir"] = Path(str(server["data_dir"])).expanduser()
    out["db"] = server.get("db")
    log_content = server.get("log_content", False)
    if not isinstance(log_content, bool):
        problems.append(f"server.log_content must be true or false, not {log_content!r}")
    out["log_content"] = log_content
    limit = server.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1024:
        problems.append(f"server.max_body_bytes must be an integer >= 1024, not {limit!r}")
    out["max_body_bytes"] = limit
    return out


def _web_settings(web: Any, problems: list[str]) -> WebSettings:
    if web is None:
        return WebSettings()
    if not isinstance(web, Mapping):
        problems.append("web must be a mapping of " + ", ".join(WEB_KEYS))
        return WebSettings()
    problems += [f"web: unknown key {key!r} (valid: {', '.join(WEB_KEYS)})" for key in web if key not in WEB_KEYS]
    values: dict[str, Any] = {"sso": _sso_providers(web.get("sso"), problems)}
    public_url = web.get("public_url")
    if public_url is not None:
        if not isinstance(public_url, str) or not re.match(r"^https?://[^/\s]+/?$", public_url):
            problems.append(f"web.public_url must be the server's address as browsers reach it, such as "
                            f"https://chat.example.com (no path), not {public_url!r}")
        else:
            values["public_url"] = public_url.rstrip("/")
    for key, default in WebSettings().__dict__.items():
        if key in ("sso", "public_url"):
            continue
        value = web.get(key, default)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                problems.append(f"web.{key} must be true or false, not {value!r}")
                continue
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"web.{key} must be an integer >= 1, not {value!r}")
            continue
        values[key] = value
    return WebSettings(**values)


def _sso_providers(raw: Any, problems: list[str]) -> tuple[SSOProvider, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append("web.sso must be a list of providers, each with name, issuer and client_id")
        return ()
    providers = [p for i, item in enumerate(raw) if (p := _sso_provider(i, item, problems)) is not None]
    names = [p.name for p in providers]
    problems += [f"web.sso: the name {name!r} is used twice" for name in sorted({n for n in names if names.count(n) > 1})]
    return tuple(providers)


def _sso_provider(index: int, item: Any, problems: list[str]) -> SSOProvider | None:
    """One `web.sso[]` entry, every problem with it added to `problems` (None when there is one)."""
    name = item.get("name") if isinstance(item, Mapping) else None
    where = f"web.sso[{name if isinstance(name, str) and name else index}]"
    if not isinstance(item, Mapping):
        problems.append(f"{where} must be a mapping with name, issuer and client_id")
        return None
    found: list[str] = []
    if "client_secret" in item:
        found.append("client_secret: secrets are never read from this file; put it in an environment "
                     "variable and name it in client_secret_env")
    found += [f"unknown key {key!r} (valid: {', '.join(SSO_KEYS)})" for key in item
              if key not in SSO_KEYS and key != "client_secret"]
    if not isinstance(name, str) or not _SSO_NAME.match(name):
        found.append(f"name must be 1-32 lower-case letters, digits, - or _ (it goes in URLs), not {name!r}")
    issuer = item.get("issuer")
    if not isinstance(issuer, str) or not _is_issuer(issuer):
        found.append(f"issuer must be the provider's https URL (http only on localhost), not {issuer!r}")
    if not isinstance(item.get("client_id"), str) or not item["client_id"].strip():
        found.append("client_id must be the client (application) id registered at the provider")
    for key in ("label", "email_claim", "role_claim"):
        if item.get(key) is not None and (not isinstance(item[key], str) or not item[key].strip()):
            found.append(f"{key} must be a non-empty string, not {item[key]!r}")
    secret_env = item.get("client_secret_env")
    if secret_env is not None and (not isinstance(secret_env, str) or not _ENV_NAME.match(secret_env)):
        found.append(f"client_secret_env must be the NAME of an environment variable, not {secret_env!r}")
    scopes = item.get("scopes", list(SSOProvider.scopes))
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s for s in scopes) or "openid" not in scopes:
        found.append(f"scopes must be a list of scope names including openid, not {scopes!r}")
    domains = item.get("allowed_domains", [])
    if not isinstance(domains, list) or not all(isinstance(d, str) and _DOMAIN.match(d.lower()) for d in domains):
        found.append(f"allowed_domains must be a list of email domains such as [example.com] (or [\"*\"] for any), "
                     f"not {domains!r}")
        domains = []
    create_users = item.get("create_users", False)
    if not isinstance(create_users, bool):
        found.append(f"create_users must be true or false, not {create_users!r}")
    elif create_users and not domains:
        found.append("create_users: true needs allowed_domains (e.g. [example.com], or [\"*\"] to let anyone the "
                     "provider knows make an account)")
    found += _sso_roles(item)
    if found:
        problems += [f"{where}: {problem}" for problem in found]
        return None
    return SSOProvider(
        name=name, label=item.get("label") or name, issuer=issuer.rstrip("/"), client_id=item["client_id"].strip(),
        client_secret_env=secret_env, scopes=tuple(dict.fromkeys(scopes)),
        allowed_domains=tuple(dict.fromkeys(d.lower() for d in domains)), create_users=create_users,
        email_claim=item.get("email_claim") or "email", role_claim=item.get("role_claim"),
        role_map=dict(item.get("role_map") or {}), default_role=item.get("default_role", "user"),
    )


def _sso_roles(item: Mapping[str, Any]) -> list[str]:
    found = []
    valid = ", ".join(ROLES)
    role_map = item.get("role_map")
    if role_map is not None:
        if not isinstance(role_map, Mapping) or not all(isinstance(k, str) for k in role_map):
            found.append("role_map must map claim values to roles, e.g. {llama-admins: admin}")
        else:
            found += [f"role_map: {value!r} is not a role (valid: {valid})"
                      for value in role_map.values() if value not in ROLES]
        if not item.get("role_claim"):
            found.append("role_map needs role_claim: the claim its values come from (e.g. groups or roles)")
    default_role = item.get("default_role", "user")
    if default_role is not None and default_role not in ROLES:
        found.append(f"default_role must be one of {valid}, or null to refuse users no role_map value matches, "
                     f"not {default_role!r}")
    return found


def _is_issuer(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.hostname)
    return parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1")


def _model_entry(name: str, entry: Any, problems: list[str]) -> ModelEntry:
    if isinstance(entry, str):
        return ModelEntry(name, entry)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("spec"), str):
        problems.append(f"models.{name}: give a spec (e.g. spec: local:/path/to/model) and options")
        return ModelEntry(name, "")
    options = {k: v for k, v in entry.items() if k not in ("spec", "roles")}
    return ModelEntry(name, entry["spec"], options, _roles(name, entry.get("roles"), problems))


def _roles(name: str, roles: Any, problems: list[str]) -> tuple[str, ...] | None:
    if roles is None:
        return None
    valid = ", ".join(ROLES)
    if isinstance(roles, str) or not isinstance(roles, list) or not roles:
        problems.append(f"models.{name}.roles must be a list of roles ({valid}), e.g. roles: [admin]")
        return None
    unknown = [role for role in roles if role not in ROLES]
    if unknown:
        problems.append(f"models.{name}.roles: unknown role(s) {', '.join(map(repr, unknown))} (valid: {valid})")
        return None
    return tuple(dict.fromkeys(roles))


def _check_model(entry: ModelEntry, problems: list[str]) -> None:
    where = f"models.{entry.name}"
    if not _NAME.match(entry.name):
        problems.append(f"{where}: a name may hold letters, digits and ._:/@+- (at most 128)")
    if not entry.spec:
        return
    try:
        scheme, _ = parse_spec(entry.spec)
    except ProviderError as exc:
        problems.append(f"{where}: {exc}")
        return
    if scheme == "local":
        valid = LOAD_OPTIONS + SCHEDULER_OPTIONS
        problems += [f"{where}: unknown option {k!r} for a local model (valid: {', '.join(valid)})"
                     for k in entry.options if k not in valid]
        for key in SCHEDULER_OPTIONS:
            value = entry.options.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                problems.append(f"{where}: {key} must be an integer >= 1, not {value!r}")
        return
    try:
        check_entry(dict(entry.options), where)
    except ProviderError as exc:
        problems.append(str(exc))
