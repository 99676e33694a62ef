"""What every API provider shares: a concurrency limit, a request-rate limit, usage and cost
accounting, and one-line errors.

Retries are the SDKs' own (`max_retries` from settings: exponential backoff with jitter on 408, 409,
429, 5xx, timeouts and dropped connections, honouring Retry-After); what still fails after them
becomes a `ProviderError` saying what to check, with any secret scrubbed from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import re
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from llama2.errors import ProviderError, UnsupportedError
from llama2.providers.base import Completion, GenerateRequest, Provider
from llama2.providers.prices import lookup_price, price_table
from llama2.providers.settings import ProviderSettings
from llama2.types import StreamDelta, TokenLogprob

T = TypeVar("T")

# Used where an API needs a length limit and SamplingParams.max_new_tokens is None ("no limit").
DEFAULT_MAX_NEW_TOKENS = 1024
_KEY_LIKE = re.compile(r"\b(sk|sk-ant|sk-proj)-[A-Za-z0-9_\-]{6,}")


@dataclass
class Usage:
    """Running totals for one provider. `cost_usd` stays None until a request with a known price."""

    requests: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies_s: list[float] = field(default_factory=list)
    cost_usd: float | None = None

    def record(self, completion: Completion) -> None:
        self.requests += 1
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        self.latencies_s.append(completion.latency_s)
        if completion.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + completion.cost_usd


class RateLimiter:
    """Spaces request starts at least 60/rpm seconds apart. Even spacing, rather than a burst-then-
    wait bucket, also keeps within limits that vendors enforce over shorter windows (Azure counts
    per 10 s)."""

    def __init__(self, requests_per_minute: float | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._clock = clock
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            wait = self._next - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next = max(self._clock(), self._next) + self.interval


@dataclass
class Answer:
    """One finished API response, before accounting. `model` is the name the API answered with."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    model: str | None = None
    logprobs: list[float] | None = None
    token_logprobs: list[TokenLogprob] | None = None


@dataclass
class Piece:
    """One streamed event: new text, and on the last ones the finish reason and token counts."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None


def normalize_finish_reason(reason: str | None) -> str:
    """Vendors' reasons -> "stop", "length" or "content_filter" (OpenAI's names)."""
    if reason in ("length", "max_tokens", "model_length"):
        return "length"
    if reason in ("content_filter", "refusal"):
        return "content_filter"
    return "stop"


def import_sdk(module: str, extra: str) -> Any:
    """Import an optional SDK, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ProviderError(f"the {module!r} package is not installed; pip install 'llama2[{extra}]'") from exc


async def gather_all(coroutines: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently, results in order; on the first failure cancel the rest and re-raise."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class RemoteProvider(Provider):
    """Base of the SDK-backed providers. Subclasses set `api_error` (their SDK's base error) and
    implement `_answer` (one request) and `_pieces` (one streamed request)."""

    api_error: type[Exception] = Exception
    where: str = "the API"  # the endpoint, for messages

    def __init__(self, spec: str, model: str, settings: ProviderSettings) -> None:
        self.spec = spec
        self.model = model
        self.settings = settings
        self.usage = Usage()
        self._prices = price_table(settings.prices)
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._limiter = RateLimiter(settings.requests_per_minute)

    @property
    def identity(self) -> str:
        """The spec, plus what settings change about the answers: a deployment other than the
        spec's name, and extra request fields (sampling options of the server)."""
        parts = [self.spec]
        if self.settings.deployment:
            parts.append(f"deployment={self.model}")
        if self.settings.extra_body:
            parts.append(f"extra_body={json.dumps(dict(self.settings.extra_body), sort_keys=True, default=str)}")
        return " ".join(parts)

    @abstractmethod
    async def _answer(self, request: GenerateRequest) -> Answer:
        """Send one request and wait for the whole answer."""

    @abstractmethod
    def _pieces(self, request: GenerateRequest) -> AsyncIterator[Piece]:
        """Send one request with streaming on and yield its events as they arrive."""

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[Completion]:
        for request in requests:
            self.check_supported(request)
        return await gather_all([self._generate_one(r) for r in requests])

    async def _generate_one(self, request: GenerateRequest) -> Completion:
        start = time.perf_counter()
        answer = await self.call(lambda: self._answer(request))
        return self.account(answer, time.perf_counter() - start)

    async def stream(self, request: GenerateRequest) -> AsyncIterator[StreamDelta]:
        self.check_supported(request)
        last = Piece()
        async with self._slots:
            await self._limiter.acquire()
            start = time.perf_counter()
            try:
                async with contextlib.aclosing(self._pieces(request)) as pieces:
                    async for piece in pieces:
                        if piece.text:
                            last.text += piece.text
                            yield StreamDelta(index=0, text=piece.text)
                        for name in ("finish_reason", "prompt_tokens", "completion_tokens", "model"):
                            if getattr(piece, name) is not None:
                                setattr(last, name, getattr(piece, name))
            except self.api_error as exc:
                self.usage.failures += 1
                raise self.failure(exc) from exc
        finish = normalize_finish_reason(last.finish_reason)
        answer = Answer(last.text, finish, last.prompt_tokens or 0, last.completion_tokens or 0, last.model)
        completion = self.account(answer, time.perf_counter() - start)
        yield StreamDelta(
            index=0, text="", finish_reason=finish,  # type: ignore[arg-type]
            prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
        )

    async def call(self, make_call: Callable[[], Awaitable[T]]) -> T:
        """Run one API call within the concurrency and rate limits, mapping SDK failures."""
        async with self._slots:
            await self._limiter.acquire()
            try:
                return await make_call()
            except self.api_error as exc:
                self.usage.failures += 1
                raise self.failure(exc) from exc

    def account(self, answer: Answer, latency_s: float) -> Completion:
        """Price the answer, add it to `usage`, and return it as a Completion."""
        price = lookup_price(answer.model or self.model, self._prices) or lookup_price(self.model, self._prices)
        cost = price.cost(answer.prompt_tokens, answer.completion_tokens) if price else None
        completion = Completion(
            answer.text, answer.finish_reason, answer.prompt_tokens, answer.completion_tokens,
            latency_s, cost, answer.logprobs, answer.token_logprobs,
        )
        self.usage.record(completion)
        return completion

    def check_supported(self, request: GenerateRequest) -> None:
        if request.is_chat and not self.capabilities.chat:
            raise UnsupportedError(
                f"{self.spec} takes text prompts only (a completion model); send a string, not a dialog"
            )
        if not request.is_chat and not self.capabilities.text_completion:
            raise UnsupportedError(
                f"{self.spec} is a chat model without text completion; send a dialog "
                "(or set text_completion: true for it in the providers file)"
            )

    def failure(self, exc: Exception) -> ProviderError:
        """One line: what happened upstream and what to check."""
        retries = f"after {self.settings.max_retries} retries"
        status = getattr(exc, "status_code", None)
        if status == 401:
            reason = f"authentication failed (HTTP 401); check {self.settings.key_origin}"
        elif status == 403:
            reason = "permission denied (HTTP 403); check that this key may use this model or deployment"
        elif status == 404:
            reason = f"not found (HTTP 404); check the model or deployment name and the endpoint {self.where}"
        elif status == 429:
            reason = f"rate limited (HTTP 429) {retries}; lower concurrency or requests_per_minute (providers file)"
        elif status is not None and status >= 500:
            reason = f"server error (HTTP {status}) {retries}; try again later"
        elif status is not None:
            reason = f"request rejected (HTTP {status}): {self._upstream_message(exc)}"
        elif "Timeout" in type(exc).__name__:
            reason = f"no answer within {self.settings.timeout_s:g} s {retries}; raise timeout_s or check {self.where}"
            status = 504
        elif "Connection" in type(exc).__name__:
            reason = f"cannot connect to {self.where} {retries}; check the endpoint and the network"
        else:
            reason = self._upstream_message(exc)
        return ProviderError(f"{self.spec}: {reason}", status=status, retry_after_s=_retry_after(exc))

    def _upstream_message(self, exc: Exception) -> str:
        body = getattr(exc, "body", None)
        error = body.get("error", body) if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        text = " ".join(str(message or exc).split())[:300]
        for secret in self.settings.secrets:
            text = text.replace(secret, "***")
        return _KEY_LIKE.sub("***", text)


def _retry_after(exc: Exception) -> float | None:
    """The upstream's Retry-After (seconds form), for passing a 429 on to our own clients."""
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
