"""Model specs -> providers. A spec is what users type wherever a model is named:

    local:default   local:/path/to/llama-2-7b-chat   local:tiny   default   /path/to/checkpoint
    openai:gpt-4o   azure:gpt-35-turbo   anthropic:claude-3-5-sonnet-20241022   vllm:/path/to/hf
    http://127.0.0.1:8080/v1#model-name   (any OpenAI-compatible server; https too)

A bare name or path means `local`. Provider modules import their SDKs only when a provider is
built, so naming a scheme costs nothing until it is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from llama2.errors import ProviderError
from llama2.providers.anthropic import AnthropicProvider
from llama2.providers.azure import AzureOpenAIProvider
from llama2.providers.base import Provider
from llama2.providers.local import LocalProvider
from llama2.providers.openai import OpenAIProvider
from llama2.providers.openai_compatible import OpenAICompatibleProvider
from llama2.providers.vllm import VLLMProvider


class ProviderFactory(Protocol):
    def from_spec(self, spec: str, target: str, **overrides: object) -> Provider: ...


PROVIDERS: dict[str, ProviderFactory] = {
    "local": LocalProvider,
    "openai": OpenAIProvider,
    "azure": AzureOpenAIProvider,
    "anthropic": AnthropicProvider,
    "openai-compatible": OpenAICompatibleProvider,
    "vllm": VLLMProvider,
}
URL_SCHEMES = ("http://", "https://")


def parse_spec(spec: str) -> tuple[str, str]:
    """`spec` -> (scheme, target): "openai:gpt-4o" -> ("openai", "gpt-4o"); a URL ->
    ("openai-compatible", the URL); a bare name or existing path -> ("local", it)."""
    spec = spec.strip()
    if not spec:
        raise ProviderError(f"empty model spec; give one such as local:default, openai:gpt-4o or {_URL_FORM}")
    if spec.startswith(URL_SCHEMES):
        return "openai-compatible", spec
    scheme, sep, target = spec.partition(":")
    if not sep or Path(spec).expanduser().exists():
        return "local", spec
    if scheme not in PROVIDERS:
        schemes = ", ".join(f"{s}:" for s in PROVIDERS)
        raise ProviderError(f"unknown provider {scheme!r} in {spec!r}; use one of {schemes} or {_URL_FORM}")
    if not target.strip():
        raise ProviderError(f"{spec!r} names no model after '{scheme}:'; e.g. {_EXAMPLES[scheme]}")
    return scheme, target.strip()


def canonical_spec(spec: str) -> str:
    """One spelling per model ("default" and "local:default" alike), for messages and cache keys."""
    scheme, target = parse_spec(spec)
    return target if scheme == "openai-compatible" else f"{scheme}:{target}"


def load_provider(spec: str, **overrides: object) -> Provider:
    """Build the provider a spec names. `overrides` are settings for remote providers (concurrency,
    timeout_s, endpoint, ...; see `settings`), load options for local ones (dtype, device, ...)."""
    scheme, target = parse_spec(spec)
    return PROVIDERS[scheme].from_spec(canonical_spec(spec), target, **overrides)


_URL_FORM = "http(s)://host:port/v1#model-name"
_EXAMPLES = {
    "local": "local:default",
    "openai": "openai:gpt-4o",
    "azure": "azure:gpt-35-turbo",
    "anthropic": "anthropic:claude-3-5-sonnet-20241022",
    "openai-compatible": "openai-compatible:http://127.0.0.1:8080/v1#llama",
    "vllm": "vllm:/path/to/hf-checkpoint",
}
