"""OpenAI's API through the official `openai` SDK: chat completions, legacy text completions for the
models that have them, streaming, and log-likelihoods by echo where the endpoint gives them.

`AzureOpenAIProvider` and `OpenAICompatibleProvider` are this class with another client and other
defaults; the request building and response reading live here once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from llama2.errors import UnsupportedError
from llama2.providers.base import Capabilities, GenerateRequest, Loglikelihood, LoglikelihoodRequest
from llama2.providers.echo import echo_arguments, score_echo
from llama2.providers.remote import (
    DEFAULT_MAX_NEW_TOKENS,
    Answer,
    Piece,
    RemoteProvider,
    gather_all,
    import_sdk,
    normalize_finish_reason,
)
from llama2.providers.scoring import move_trailing_space
from llama2.types import TokenLogprob
from llama2.providers.settings import ProviderSettings, load_settings

# OpenAI models served by the legacy completions endpoint (no chat); the base models also echo
# prompt log-probabilities, which lm-eval uses to score them.
COMPLETION_MODELS = ("gpt-3.5-turbo-instruct", "davinci-002", "babbage-002")
ECHO_MODELS = ("davinci-002", "babbage-002")


class OpenAIProvider(RemoteProvider):
    """`openai:MODEL`. Chat models (gpt-4o, ...) chat only; completion models complete text only."""

    scheme = "openai"
    max_tokens_field = "max_completion_tokens"  # OpenAI's name; other servers know only max_tokens

    def __init__(self, spec: str, model: str, settings: ProviderSettings) -> None:
        super().__init__(spec, model, settings)
        self.capabilities = self.default_capabilities(model, settings)
        sdk = import_sdk("openai", "api")
        self.api_error = sdk.APIError
        self.where = settings.endpoint or "https://api.openai.com/v1"
        self.client = self.make_client(sdk)

    @classmethod
    def from_spec(cls, spec: str, target: str, **overrides: object) -> "OpenAIProvider":
        return cls(spec, target, load_settings(cls.scheme, spec, overrides))

    @staticmethod
    def default_capabilities(model: str, settings: ProviderSettings) -> Capabilities:
        completion = model.startswith(COMPLETION_MODELS)
        text = completion if settings.text_completion is None else settings.text_completion
        scores = model.startswith(ECHO_MODELS) if settings.loglikelihood is None else settings.loglikelihood
        return Capabilities(chat=not completion, text_completion=text, loglikelihood=scores and text)

    def make_client(self, sdk: Any) -> Any:
        return sdk.AsyncOpenAI(
            api_key=self.settings.require_key(self.spec),
            base_url=self.settings.endpoint,
            timeout=self.settings.timeout_s,
            max_retries=self.settings.max_retries,
        )

    # ---- requests ---------------------------------------------------------------------------

    def arguments(self, request: GenerateRequest) -> dict[str, Any]:
        """Keyword arguments of `chat.completions.create` or `completions.create` for a request."""
        params = request.params
        args: dict[str, Any] = {"model": self.model, "temperature": params.temperature, "top_p": params.top_p}
        if request.is_chat:
            args["messages"] = [{"role": m["role"], "content": m["content"]} for m in request.prompt]
            if params.max_new_tokens is not None:
                args[self.max_tokens_field] = params.max_new_tokens
            if params.logprobs or params.top_logprobs:
                args["logprobs"] = True
                args["top_logprobs"] = params.top_logprobs or None
        else:
            args["prompt"] = request.prompt
            args["max_tokens"] = params.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
            if params.logprobs or params.top_logprobs:
                args["logprobs"] = max(params.top_logprobs, 1)
        if params.stop:
            args["stop"] = list(params.stop)
        if params.seed is not None:
            args["seed"] = params.seed
        extra = dict(self.settings.extra_body)
        if params.top_k:
            extra["top_k"] = self.top_k(params.top_k)
        if extra:
            args["extra_body"] = extra
        return {k: v for k, v in args.items() if v is not None}

    def top_k(self, top_k: int) -> int:
        raise UnsupportedError(f"{self.spec}: OpenAI's API has no top_k; leave top_k at 0")

    async def _answer(self, request: GenerateRequest) -> Answer:
        args = self.arguments(request)
        if request.is_chat:
            response = await self.client.chat.completions.create(**args)
            choice = response.choices[0]
            text = choice.message.content or ""
            content = choice.logprobs.content if choice.logprobs and choice.logprobs.content else None
            logprobs = [t.logprob for t in content] if content else None
            tokens = _chat_token_logprobs(content) if content else None
        else:
            response = await self.client.completions.create(**args)
            choice = response.choices[0]
            text = choice.text or ""
            values = choice.logprobs.token_logprobs if choice.logprobs else None
            logprobs = list(values) if values else None
            tokens = _text_token_logprobs(choice.logprobs) if values else None
        usage = response.usage
        return Answer(
            text,
            normalize_finish_reason(choice.finish_reason),
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            response.model,
            logprobs if request.params.logprobs else None,
            tokens if request.params.logprobs or request.params.top_logprobs else None,
        )

    async def _pieces(self, request: GenerateRequest) -> AsyncIterator[Piece]:
        args = {**self.arguments(request), "stream": True, "stream_options": {"include_usage": True}}
        create = self.client.chat.completions.create if request.is_chat else self.client.completions.create
        stream = await create(**args)
        async with stream:
            async for chunk in stream:
                piece = Piece(model=chunk.model or None)
                if chunk.choices:
                    choice = chunk.choices[0]
                    piece.text = (choice.delta.content if request.is_chat else choice.text) or ""
                    piece.finish_reason = choice.finish_reason
                if chunk.usage:
                    piece.prompt_tokens = chunk.usage.prompt_tokens
                    piece.completion_tokens = chunk.usage.completion_tokens
                yield piece

    # ---- scoring ----------------------------------------------------------------------------

    async def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        if not self.capabilities.loglikelihood:
            return await super().loglikelihood(requests)
        return await gather_all([self._score_one(r) for r in requests])

    async def _score_one(self, request: LoglikelihoodRequest) -> Loglikelihood:
        context, continuation = move_trailing_space(request.context, request.continuation)
        start = time.perf_counter()
        arguments = echo_arguments(self.model, context, continuation)
        response = await self.call(lambda: self.client.completions.create(**arguments))
        choice, usage = response.choices[0], response.usage
        tokens = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        self.account(Answer("", "length", *tokens, response.model), time.perf_counter() - start)
        return score_echo(self.spec, choice.text or "", choice.logprobs, context, continuation)

    async def aclose(self) -> None:
        await self.client.close()


def _token(text: str, raw: list[int] | None) -> tuple[str, bytes]:
    return text, bytes(raw) if raw is not None else text.encode("utf-8")


def _chat_token_logprobs(content: list[Any]) -> list[TokenLogprob]:
    """Chat `logprobs.content` entries as TokenLogprob (so the gateway can pass them on)."""
    return [
        TokenLogprob(*_token(t.token, t.bytes), t.logprob,
                     tuple((*_token(a.token, a.bytes), a.logprob) for a in (t.top_logprobs or [])))
        for t in content
    ]


def _text_token_logprobs(logprobs: Any) -> list[TokenLogprob]:
    """The legacy completions shape (parallel lists) as TokenLogprob."""
    tops = logprobs.top_logprobs or [None] * len(logprobs.tokens)
    return [
        TokenLogprob(*_token(token, None), value if value is not None else float("nan"),
                     tuple((*_token(t, None), lp) for t, lp in (top or {}).items()))
        for token, value, top in zip(logprobs.tokens, logprobs.token_logprobs, tops)
    ]
