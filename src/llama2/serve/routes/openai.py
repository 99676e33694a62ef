"""`/v1/models`, `/v1/chat/completions` and `/v1/completions`, as OpenAI's API has them."""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Depends, Request

from llama2.providers.base import Completion, GenerateRequest
from llama2.serve.gateway import Call, Gateway
from llama2.serve.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ErrorResponse,
    ModelNotFoundError,
    chat_choice,
    chat_chunk,
    chat_completion,
    chat_logprobs,
    completion_logprobs,
    new_id,
    now,
    text_choice,
    text_completion,
    usage_block,
)
from llama2.serve.store import KeyInfo
from llama2.types import SamplingParams, StreamDelta

router = APIRouter(prefix="/v1")

_ERROR_MEANINGS = {
    400: "The body is invalid or asks for something this server does not do",
    401: "No API key, or one that is not valid",
    403: "The key may not use this model",
    404: "No such model",
    413: "The body is larger than the server's limit",
    429: "The key's rate or token budget is spent, or the model's queue is full",
    502: "The upstream model failed",
    504: "The upstream model timed out",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}}


def _errors(*statuses: int) -> dict:
    return {
        status: {"model": ErrorResponse, "description": _ERROR_MEANINGS[status],
                 **({"headers": _RETRY_AFTER} if status == 429 else {})}
        for status in statuses
    }


# A streamed answer: server-sent events, each `data:` a JSON chunk and the last `data: [DONE]`.
_STREAMED = {200: {"content": {"text/event-stream": {"schema": {
    "type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}}}}}
GENERATION_RESPONSES = {**_STREAMED, **_errors(400, 401, 403, 404, 413, 429, 502, 504)}


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


async def api_key(request: Request) -> KeyInfo:
    """Runs before the body is validated, so a request without a valid key is a 401 whatever it holds."""
    return await gateway(request).authenticate(request)


@router.get("/models", responses=_errors(401))
async def list_models(request: Request, key: KeyInfo = Depends(api_key)) -> dict:
    models = gateway(request).models
    data = [{"id": name, "object": "model", "created": 0, "owned_by": models.get(name).owned_by}
            for name in gateway(request).models_for(key)]
    return {"object": "list", "data": data}


@router.get("/models/{name:path}", responses=_errors(401, 404))
async def get_model(name: str, request: Request, key: KeyInfo = Depends(api_key)) -> dict:
    hidden = ModelNotFoundError(f"The model '{name}' does not exist on this server")  # a key never learns of it
    if key.models is not None and name not in key.models:
        raise hidden
    model = gateway(request).models.get(name)
    if not model.entry.allows(key.user_role):
        raise hidden
    return {"id": name, "object": "model", "created": 0, "owned_by": model.owned_by}


def choice_params(params: SamplingParams, index: int) -> SamplingParams:
    """Choice `index` of n: a seeded request gives each choice its own seed, so they differ."""
    return params if params.seed is None or index == 0 else replace(params, seed=params.seed + index)


@router.post("/chat/completions", responses=GENERATION_RESPONSES)
async def chat_completions(body: ChatCompletionRequest, request: Request, key: KeyInfo = Depends(api_key)):
    gate = gateway(request)
    call = await gate.begin(key, body.model, "chat.completions", body)
    try:
        params, dialog, n = body.params(), body.dialog(), body.n or 1
        requests = [GenerateRequest(dialog, choice_params(params, i)) for i in range(n)]
        if body.stream:
            return await _stream_chat(gate, call, body, requests)
        completions = await call.model.provider.generate(requests)
    except BaseException as exc:
        await gate.fail(call, exc)
        raise
    usage = _usage(call, completions, choices_per_prompt=n)
    choices = [
        chat_choice(i, c.text, c.finish_reason, chat_logprobs(c.token_logprobs) if params.logprobs else None)
        for i, c in enumerate(completions)
    ]
    response = chat_completion(new_id("chatcmpl"), body.model, choices, usage, _fingerprint(call))
    await gate.finish(call, response)
    return response


async def _stream_chat(gate: Gateway, call: Call, body: ChatCompletionRequest, requests: list[GenerateRequest]):
    id_, created, fingerprint = new_id("chatcmpl"), now(), _fingerprint(call)
    want_logprobs = bool(body.logprobs)

    def chunk(index: int, delta: StreamDelta):
        if not delta.text and delta.finish_reason is None:
            return None
        logprobs = chat_logprobs(delta.token_logprobs) if want_logprobs and delta.token_logprobs else None
        content = {"content": delta.text} if delta.text else {}
        choice = {"index": index, "delta": content, "logprobs": logprobs, "finish_reason": delta.finish_reason}
        return chat_chunk(id_, body.model, created, [choice], fingerprint=fingerprint)

    opening = [
        chat_chunk(id_, body.model, created, [
            {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        ], fingerprint=fingerprint)
        for i in range(len(requests))
    ]
    usage = None
    if body.stream_options and body.stream_options.include_usage:
        usage = lambda p, c: chat_chunk(id_, body.model, created, [], usage_block(p, c), fingerprint)  # noqa: E731
    return await gate.stream(call, requests, chunk, opening=opening, usage_chunk=usage, choices_per_prompt=len(requests))


@router.post("/completions", responses=GENERATION_RESPONSES)
async def completions(body: CompletionRequest, request: Request, key: KeyInfo = Depends(api_key)):
    gate = gateway(request)
    call = await gate.begin(key, body.model, "completions", body)
    try:
        params, n = body.params(), body.n or 1
        requests = [GenerateRequest(p, choice_params(params, i)) for p in body.prompts() for i in range(n)]
        if body.stream:
            return await _stream_text(gate, call, body, requests)
        results = await call.model.provider.generate(requests)
    except BaseException as exc:
        await gate.fail(call, exc)
        raise
    usage = _usage(call, results, choices_per_prompt=n)
    choices = [
        text_choice(i, c.text, c.finish_reason, completion_logprobs(c.token_logprobs) if params.logprobs else None)
        for i, c in enumerate(results)
    ]
    response = text_completion(new_id("cmpl"), body.model, choices, usage, fingerprint=_fingerprint(call))
    await gate.finish(call, response)
    return response


async def _stream_text(gate: Gateway, call: Call, body: CompletionRequest, requests: list[GenerateRequest]):
    id_, created, fingerprint = new_id("cmpl"), now(), _fingerprint(call)
    want_logprobs = body.logprobs is not None
    n = body.n or 1

    def chunk(index: int, delta: StreamDelta):
        if not delta.text and delta.finish_reason is None:
            return None
        logprobs = completion_logprobs(delta.token_logprobs) if want_logprobs and delta.token_logprobs else None
        choice = text_choice(index, delta.text, delta.finish_reason, logprobs)
        return text_completion(id_, body.model, [choice], None, created, fingerprint)

    usage = None
    if body.stream_options and body.stream_options.include_usage:
        usage = lambda p, c: text_completion(id_, body.model, [], usage_block(p, c), created, fingerprint)  # noqa: E731
    return await gate.stream(call, requests, chunk, opening=[], usage_chunk=usage, choices_per_prompt=n)


def _usage(call: Call, results: list[Completion], choices_per_prompt: int) -> dict[str, int]:
    """OpenAI counts each prompt once however many choices (n) it has: choices k*n..k*n+n-1 share one."""
    completion = sum(r.completion_tokens for r in results)
    prompt = sum(r.prompt_tokens for r in results[::choices_per_prompt])
    call.add_usage(prompt, completion)
    return usage_block(prompt, completion)


def _fingerprint(call: Call) -> str | None:
    fingerprint = getattr(call.model.provider, "fingerprint", None)
    return f"fp_{fingerprint}" if fingerprint else None
