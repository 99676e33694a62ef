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
class WebSettings:
    """The web chat's sign-in policy (`web:` in serve.yaml)."""

    allow_signup: bool = False
    session_hours: int = 168
    max_failed_logins: int = 5
    max_failed_logins_per_ip: int = 20
    lockout_minutes: int = 15
    setup_loopback_only: bool = True


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
    values: dict[str, Any] = {}
    for key, default in WebSettings().__dict__.items():
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
