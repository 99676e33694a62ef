"""Settings of the remote providers, from the environment and an optional YAML file.

This is the one module that reads the environment for providers. The file is `$LLAMA2_PROVIDERS_FILE`
or else `$XDG_CONFIG_HOME/llama2/providers.yaml` (default `~/.config/llama2/providers.yaml`):

    providers:
      azure:                          # every azure:... spec
        endpoint: https://my-resource.openai.azure.com
        api_version: "2024-10-21"
        requests_per_minute: 300
      "azure:gpt-35-turbo":           # this spec only (wins over the scheme's entry)
        deployment: my-gpt35-deployment
      "http://127.0.0.1:8080/v1#llama":
        extra_body: {repeat_penalty: 1.0}
    prices:                           # USD per 1M tokens, over the shipped prices.yaml
      my-gpt35-deployment: {input: 0.5, output: 1.5}

Secrets never live in the file: `api_key_env` names the environment variable that holds the key.
Precedence, lowest first: environment defaults (AZURE_OPENAI_ENDPOINT, OPENAI_API_VERSION, ...), the
scheme's entry, the spec's entry, then keyword overrides given to `load_provider`. A program that
keeps a key itself (the server's admin pages store them encrypted) passes it as the `stored_api_key`
override, which no file can set; it wins over the environment variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llama2.errors import ProviderError
from llama2.providers.prices import Price, parse_prices

SETTINGS_FILE_ENV = "LLAMA2_PROVIDERS_FILE"
KEY_ENVS = {"openai": "OPENAI_API_KEY", "azure": "AZURE_OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
AZURE_AD_TOKEN_ENV = "AZURE_OPENAI_AD_TOKEN"
ENDPOINT_ENVS = {"openai": "OPENAI_BASE_URL", "azure": "AZURE_OPENAI_ENDPOINT", "anthropic": "ANTHROPIC_BASE_URL"}
API_VERSION_ENVS = {"azure": "OPENAI_API_VERSION"}
STORED_KEY = "stored_api_key"  # the override that carries a key given in code (never read from a file)


@dataclass(frozen=True)
class ProviderSettings:
    """Everything a remote provider needs besides its model name. Secrets are resolved from the
    environment and kept out of `repr`, so printing settings never shows a key."""

    endpoint: str | None = None
    api_version: str | None = None
    deployment: str | None = None
    api_key_env: str | None = None
    concurrency: int = 8
    requests_per_minute: float | None = None
    timeout_s: float = 120.0
    max_retries: int = 5
    prices: Mapping[str, Price] = field(default_factory=dict)
    extra_body: Mapping[str, object] = field(default_factory=dict)
    text_completion: bool | None = None
    loglikelihood: bool | None = None
    api_key: str | None = field(default=None, repr=False)
    ad_token: str | None = field(default=None, repr=False)
    api_key_stored: bool = False  # the key came from the program (STORED_KEY), not the environment

    @property
    def key_origin(self) -> str:
        """Where the key comes from, for messages: the variable's name, or the server's own store."""
        return "the upstream key stored on the server (admin pages)" if self.api_key_stored else f"the key in ${self.api_key_env}"

    def require_key(self, spec: str) -> str:
        """The API key, or a ProviderError that names the variable to set."""
        if self.api_key is None:
            raise ProviderError(f"{spec}: no API key; set the environment variable {self.api_key_env}")
        return self.api_key

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a message."""
        return tuple(s for s in (self.api_key, self.ad_token) if s)


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


# setting -> (check, what a valid value is); `prices` is checked by prices.parse_prices.
_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    "endpoint": (_is_text, "a URL"),
    "api_version": (_is_text, "a version string such as \"2024-10-21\""),
    "deployment": (_is_text, "a deployment name"),
    "api_key_env": (_is_text, "the NAME of an environment variable"),
    "concurrency": (lambda v: _is_count(v) and v >= 1, "an integer >= 1"),
    "requests_per_minute": (_is_positive, "a number > 0"),
    "timeout_s": (_is_positive, "a number of seconds > 0"),
    "max_retries": (_is_count, "an integer >= 0"),
    "extra_body": (lambda v: isinstance(v, Mapping), "a mapping of extra request fields"),
    "text_completion": (lambda v: isinstance(v, bool), "true or false"),
    "loglikelihood": (lambda v: isinstance(v, bool), "true or false"),
}
SETTING_NAMES = (*_CHECKS, "prices")


def check_entry(entry: object, source: str) -> dict[str, object]:
    """Validate one entry (from the file or from keyword overrides), reporting every problem at once."""
    if not isinstance(entry, Mapping):
        raise ProviderError(f"{source}: expected a mapping of settings ({', '.join(SETTING_NAMES)})")
    if "api_key" in entry:
        raise ProviderError(
            f"{source}: keys are never read from here; put the key in an environment variable "
            "and name it in api_key_env"
        )
    problems = [f"unknown setting {k!r}" for k in entry if k not in SETTING_NAMES]
    for name, value in entry.items():
        if name in _CHECKS and not _CHECKS[name][0](value):
            problems.append(f"{name} must be {_CHECKS[name][1]}, not {value!r}")
    if problems:
        raise ProviderError(f"{source}: {'; '.join(problems)} (valid settings: {', '.join(SETTING_NAMES)})")
    values = dict(entry)
    if "prices" in values:
        values["prices"] = parse_prices(values["prices"], f"{source}: prices")
    return values


def settings_file(environ: Mapping[str, str]) -> Path | None:
    """The providers file in use: the one `LLAMA2_PROVIDERS_FILE` names (it must exist), else the
    per-user one if present."""
    named = environ.get(SETTINGS_FILE_ENV)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ProviderError(f"{SETTINGS_FILE_ENV}={named}: no such file; create it or unset the variable")
        return path
    config_home = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".config")
    path = Path(config_home) / "llama2" / "providers.yaml"
    return path if path.is_file() else None


def read_settings_file(path: Path) -> tuple[dict[str, dict[str, object]], dict[str, Price]]:
    """`(entries by spec or scheme, global price overrides)` from a providers file, checked whole."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ProviderError(f"{path}: cannot read the providers file ({reason})") from exc
    if not isinstance(data, Mapping) or set(data) - {"providers", "prices"}:
        raise ProviderError(f"{path}: expected top-level keys 'providers' and/or 'prices' only")
    entries = data.get("providers") or {}
    if not isinstance(entries, Mapping):
        raise ProviderError(f"{path}: 'providers' must map a spec or scheme to its settings")
    checked = {str(key): check_entry(entry, f"{path}: providers.{key}") for key, entry in entries.items()}
    prices = parse_prices(data.get("prices") or {}, f"{path}: prices")
    return checked, prices


def load_settings(
    scheme: str,
    spec: str,
    overrides: Mapping[str, object] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> ProviderSettings:
    """Settings for `spec` (whose provider is `scheme`), merged as the module docstring says."""
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    stored_key = overrides.pop(STORED_KEY, None)
    values: dict[str, object] = {}
    if environ.get(ENDPOINT_ENVS.get(scheme, "")):
        values["endpoint"] = environ[ENDPOINT_ENVS[scheme]]
    if environ.get(API_VERSION_ENVS.get(scheme, "")):
        values["api_version"] = environ[API_VERSION_ENVS[scheme]]
    prices: dict[str, Price] = {}
    path = settings_file(environ)
    layers = [check_entry(overrides, f"settings for {spec}")]
    if path is not None:
        entries, prices = read_settings_file(path)
        layers = [entries.get(scheme, {}), entries.get(spec, {}), *layers]
    for layer in layers:
        prices.update(layer.get("prices", {}))
        values.update(layer)
    values["prices"] = prices
    key_env = values.get("api_key_env") or KEY_ENVS.get(scheme)
    values["api_key_env"] = key_env
    values["api_key"] = (environ.get(key_env) or None) if key_env else None
    if stored_key:
        values["api_key"], values["api_key_stored"] = str(stored_key), True
    if scheme == "azure":
        values["ad_token"] = environ.get(AZURE_AD_TOKEN_ENV) or None
    return ProviderSettings(**values)
