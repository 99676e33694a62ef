"""OpenAI's wire protocol: request bodies as pydantic models (so FastAPI's OpenAPI schema describes
them), the response and streaming-chunk shapes, SSE framing, and the one error shape.

Only what the server can honour is accepted: a field that would change the answer but that no
backend here implements (tools, penalties, logit_bias, JSON mode) is a 400 naming the field, never
silently ignored. Unknown extra fields are ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llama2.errors import ServeError
from llama2.types import Dialog, SamplingParams, TokenLogprob

MAX_STOP_STRINGS = 4
MAX_CHOICES = 16
MAX_CHOICES_PER_REQUEST = 128  # prompts x n of one text-completion request


class InvalidRequestError(ServeError):
    """A well-formed body asks for something invalid or unsupported; `param` names the field."""

    status = 400
    code = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        if code is not None:
            self.code = code


class ModelNotFoundError(ServeError):
    status = 404
    code = "model_not_found"


class _Body(BaseModel):
    """Strict like OpenAI's API (no "5" for 5, no true for 1), and text that UTF-8 can carry: JSON's
    \\u escapes can spell unpaired surrogates, which no tokenizer or response can encode."""

    model_config = ConfigDict(extra="ignore", strict=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_surrogates(cls, value: Any) -> Any:
        for text in _strings(value):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("contains an unpaired UTF-16 surrogate, which is not valid Unicode text") from None
        return value


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)


class StreamOptions(_Body):
    include_usage: bool = False


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None


class _Sampling(_Body):
    """Fields chat and text completions share."""

    model: str
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # OpenAI's: an int64
    user: str | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None

    def stop_strings(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise InvalidRequestError(f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(stops)}", param="stop")
        if any(not s for s in stops):
            raise InvalidRequestError("stop strings must not be empty", param="stop")
        return tuple(stops)

    def check_unsupported(self) -> None:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise InvalidRequestError(f"{name} is not supported by this server; leave it out or set it to 0", param=name)
        if self.logit_bias:
            raise InvalidRequestError("logit_bias is not supported by this server; leave it out", param="logit_bias")

    def sampling(self, max_new_tokens: int | None, logprobs: bool, top_logprobs: int) -> SamplingParams:
        """OpenAI's defaults (temperature 1, top_p 1); temperature 0 is greedy."""
        return SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=self.seed,
            stop=self.stop_strings(),
            logprobs=logprobs,
            top_logprobs=top_logprobs,
        )


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    functions: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None

    def dialog(self) -> Dialog:
        """Messages as a Llama 2 dialog: text parts joined, `developer` read as `system`."""
        dialog = []
        for message in self.messages:
            content = message.content
            if isinstance(content, list):
                content = "".join(part.text for part in content)
            role = "system" if message.role == "developer" else message.role
            dialog.append({"role": role, "content": content or ""})
        return dialog  # type: ignore[return-value]

    def params(self) -> SamplingParams:
        self.check_unsupported()
        for name in ("tools", "functions"):
            if getattr(self, name):
                raise InvalidRequestError(f"{name} (function calling) is not supported by this server", param=name)
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise InvalidRequestError("only response_format {\"type\": \"text\"} is supported", param="response_format")
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequestError("top_logprobs needs logprobs: true", param="top_logprobs")
        limit = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        return self.sampling(limit, bool(self.logprobs), self.top_logprobs or 0)


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's default for text completions
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool | None = False
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1, le=MAX_CHOICES)

    def prompts(self) -> list[str]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        if not prompts:
            raise InvalidRequestError("prompt must not be an empty list", param="prompt")
        if len(prompts) * (self.n or 1) > MAX_CHOICES_PER_REQUEST:
            raise InvalidRequestError(
                f"{len(prompts)} prompts x n={self.n or 1} asks for more than {MAX_CHOICES_PER_REQUEST} answers "
                "in one request; split it into several requests", param="prompt")
        return prompts

    def params(self) -> SamplingParams:
        self.check_unsupported()
        if self.echo:
            raise InvalidRequestError("echo is not supported by this server", param="echo")
        if self.suffix:
            raise InvalidRequestError("suffix (insertion) is not supported by this server", param="suffix")
        if self.best_of not in (None, self.n or 1):
            raise InvalidRequestError("best_of other than n is not supported by this server", param="best_of")
        wanted = self.logprobs is not None
        return self.sampling(self.max_tokens, wanted, self.logprobs or 0)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error shape, for the OpenAPI document (`error_body` builds it)."""

    error: ErrorDetail


# ---- responses ------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


def usage_block(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_logprobs(tokens: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """`choices[i].logprobs` of a chat completion: `{"content": [{token, logprob, bytes, top_logprobs}]}`."""
    if tokens is None:
        return None
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "bytes": list(t.bytes),
                "top_logprobs": [{"token": s, "logprob": lp, "bytes": list(b)} for s, b, lp in t.top],
            }
            for t in tokens
        ],
        "refusal": None,
    }


def completion_logprobs(tokens: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
    """`choices[i].logprobs` of a text completion (the legacy shape: parallel lists)."""
    if tokens is None:
        return None
    offsets, position = [], offset
    for t in tokens:
        offsets.append(position)
        position += len(t.token)
    return {
        "tokens": [t.token for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{s: lp for s, _, lp in t.top} for t in tokens],
        "text_offset": offsets,
    }


def chat_completion(
    id_: str, model: str, choices: list[dict[str, Any]], usage: dict[str, int], fingerprint: str | None
) -> dict[str, Any]:
    return {
        "id": id_, "object": "chat.completion", "created": now(), "model": model,
        "choices": choices, "usage": usage, "system_fingerprint": fingerprint,
    }


def chat_choice(index: int, text: str, finish_reason: str, logprobs: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "index": index,
        "message": {"role": "assistant", "content": text, "refusal": None},
        "logprobs": logprobs,
        "finish_reason": finish_reason,
    }


def chat_chunk(
    id_: str, model: str, created: int, choices: list[dict[str, Any]], usage: dict[str, int] | None = None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    chunk = {
        "id": id_, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": choices, "system_fingerprint": fingerprint,
    }
    if usage is not None or not choices:
        chunk["usage"] = usage
    return chunk


def text_completion(id_: str, model: str, choices: list[dict[str, Any]], usage: dict[str, int] | None,
                    created: int | None = None, fingerprint: str | None = None) -> dict[str, Any]:
    body = {
        "id": id_, "object": "text_completion", "created": created or now(), "model": model,
        "choices": choices, "system_fingerprint": fingerprint,
    }
    if usage is not None or not choices:
        body["usage"] = usage
    return body


def text_choice(index: int, text: str, finish_reason: str | None, logprobs: dict[str, Any] | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event; the stream ends with `sse("[DONE]")`."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {payload}\n\n".encode("utf-8")


ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
               404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
               429: "rate_limit_error", 502: "upstream_error", 503: "server_error", 504: "upstream_error"}


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": param, "code": code}}
