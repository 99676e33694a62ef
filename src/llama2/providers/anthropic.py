"""Anthropic's Messages API through the official `anthropic` SDK: `anthropic:claude-...`.

The dialog's system message goes to the `system` parameter, the rest alternate user/assistant as
`messages`; `max_tokens` is required by the API (SamplingParams.max_new_tokens, else 1024). Claude
is a chat model: no text completion and no token log-probabilities.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from llama2.errors import UnsupportedError
from llama2.providers.base import Capabilities, GenerateRequest
from llama2.providers.remote import (
    DEFAULT_MAX_NEW_TOKENS,
    Answer,
    Piece,
    RemoteProvider,
    import_sdk,
    normalize_finish_reason,
)
from llama2.providers.settings import ProviderSettings, load_settings


class AnthropicProvider(RemoteProvider):
    """A Claude model over the Messages API, streamed through the SDK's event stream."""

    scheme = "anthropic"

    def __init__(self, spec: str, model: str, settings: ProviderSettings) -> None:
        super().__init__(spec, model, settings)
        self.capabilities = Capabilities(chat=True, text_completion=False, loglikelihood=False)
        sdk = import_sdk("anthropic", "api")
        self.api_error = sdk.APIError
        self.where = settings.endpoint or "https://api.anthropic.com"
        self.client = sdk.AsyncAnthropic(
            api_key=settings.require_key(spec),
            base_url=settings.endpoint,
            timeout=settings.timeout_s,
            max_retries=settings.max_retries,
        )

    @classmethod
    def from_spec(cls, spec: str, target: str, **overrides: object) -> "AnthropicProvider":
        return cls(spec, target, load_settings(cls.scheme, spec, overrides))

    def arguments(self, request: GenerateRequest) -> dict[str, Any]:
        """Keyword arguments of `messages.create` / `messages.stream` for a dialog."""
        params = request.params
        if params.logprobs or params.top_logprobs:
            raise UnsupportedError(f"{self.spec}: Anthropic's API gives no token log-probabilities; leave logprobs off")
        system = "\n\n".join(m["content"] for m in request.prompt if m["role"] == "system")
        args: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in request.prompt if m["role"] != "system"],
            "max_tokens": params.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
            "temperature": params.temperature,
        }
        if system:
            args["system"] = system
        if params.temperature > 0 and params.top_p < 1:  # only when it restricts sampling
            args["top_p"] = params.top_p
        if params.top_k:
            args["top_k"] = params.top_k
        if params.stop:
            args["stop_sequences"] = list(params.stop)
        return args

    async def _answer(self, request: GenerateRequest) -> Answer:
        message = await self.client.messages.create(**self.arguments(request))
        text = "".join(block.text for block in message.content if block.type == "text")
        finish, usage = normalize_finish_reason(message.stop_reason), message.usage
        return Answer(text, finish, usage.input_tokens, usage.output_tokens, message.model)

    async def _pieces(self, request: GenerateRequest) -> AsyncIterator[Piece]:
        async with self.client.messages.stream(**self.arguments(request)) as stream:
            async for text in stream.text_stream:
                yield Piece(text=text)
            message = await stream.get_final_message()
        usage = message.usage
        yield Piece(
            finish_reason=message.stop_reason,
            prompt_tokens=usage.input_tokens,
            completion_tokens=usage.output_tokens,
            model=message.model,
        )

    async def aclose(self) -> None:
        await self.client.close()
