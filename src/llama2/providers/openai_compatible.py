"""Any server that speaks OpenAI's protocol — vLLM, llama.cpp's server, TGI, Ollama — by URL:
`http://127.0.0.1:8080/v1#model-name` (the part after `#` is the `model` field of each request).

Such servers complete text as well as chat, take `top_k`, and most echo prompt log-probabilities
(set `loglikelihood: false` for one that does not). Server-specific sampling fields go in
`extra_body` in the providers file, e.g. `{repeat_penalty: 1.0}` for llama.cpp, whose default of
1.1 would otherwise make temperature 0 differ from greedy decoding.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from llama2.errors import ProviderError
from llama2.providers.base import Capabilities
from llama2.providers.openai import OpenAIProvider
from llama2.providers.settings import ProviderSettings, load_settings

# Local servers need no key; sending the user's real OpenAI key to one would leak it, so without an
# `api_key_env` setting (or a key stored on the server for this model) this placeholder is sent instead.
NO_KEY = "no-key"


def split_url_spec(spec: str) -> tuple[str, str]:
    """`http://host:port/v1#model` -> (`http://host:port/v1`, `model`)."""
    base_url, _, model = spec.partition("#")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ProviderError(f"{spec!r}: expected http(s)://host:port/v1#model-name")
    if not model:
        raise ProviderError(f"{spec!r}: name the model after '#', e.g. {base_url}#llama-2-7b-chat")
    return base_url.rstrip("/"), model


class OpenAICompatibleProvider(OpenAIProvider):
    """An OpenAI-protocol server at a URL. Capabilities: chat, text completion, log-likelihoods."""

    scheme = "openai-compatible"
    max_tokens_field = "max_tokens"

    def __init__(self, spec: str, model: str, settings: ProviderSettings) -> None:
        self.base_url = settings.endpoint or split_url_spec(spec)[0]
        super().__init__(spec, model, settings)
        self.where = self.base_url

    @classmethod
    def from_spec(cls, spec: str, target: str, **overrides: object) -> "OpenAICompatibleProvider":
        _, model = split_url_spec(target)
        return cls(spec, model, load_settings(cls.scheme, spec, overrides))

    @staticmethod
    def default_capabilities(model: str, settings: ProviderSettings) -> Capabilities:
        text = True if settings.text_completion is None else settings.text_completion
        scores = True if settings.loglikelihood is None else settings.loglikelihood
        return Capabilities(chat=True, text_completion=text, loglikelihood=scores and text)

    def make_client(self, sdk: Any) -> Any:
        key = self.settings.api_key or (self.settings.require_key(self.spec) if self.settings.api_key_env else NO_KEY)
        return sdk.AsyncOpenAI(
            api_key=key, base_url=self.base_url, timeout=self.settings.timeout_s, max_retries=self.settings.max_retries
        )

    def top_k(self, top_k: int) -> int:
        return top_k
