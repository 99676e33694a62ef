"""What every API call goes through between the route and the provider: the key is checked against
the model, the answer is produced (whole, or streamed as SSE with several choices merged), and the
call is accounted — one usage record in the store, the Prometheus counters — however it ended.

A client that disconnects mid-stream cancels its provider streams (a local model frees the rows at
its next step) and is recorded with status 499, as nginx logs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse

from llama2.errors import AuthenticationError, PermissionDeniedError
from llama2.providers.base import GenerateRequest
from llama2.serve.auth import Authorizer
from llama2.serve.errors import status_of
from llama2.serve.metrics import Metrics
from llama2.serve.models import ModelPool, ServedModel
from llama2.serve.protocol import ModelNotFoundError, error_body, sse
from llama2.serve.store import KeyInfo, Store, UsageRecord
from llama2.serve.upstream_keys import UpstreamKeys
from llama2.types import StreamDelta

log = logging.getLogger("llama2.serve")
CLIENT_CLOSED = 499

# Formats one choice's delta as a chunk (None: nothing to send). Arguments: choice index, delta.
ChunkFormatter = Callable[[int, StreamDelta], dict[str, Any] | None]


@dataclass
class Call:
    """One API request being served, and what its usage record will say."""

    key: KeyInfo
    model: ServedModel
    endpoint: str
    request_body: str | None
    started: float = field(default_factory=time.perf_counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    status: int = 200
    error: str | None = None
    response_body: str | None = None

    def add_usage(self, prompt: int | None, completion: int | None) -> None:
        self.prompt_tokens += prompt or 0
        self.completion_tokens += completion or 0


def api_key_of(request: Request) -> str | None:
    """`Authorization: Bearer KEY` (OpenAI's clients) or `api-key: KEY` (Azure's)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("api-key") or None


class Gateway:
    def __init__(self, store: Store, authorizer: Authorizer, models: ModelPool, metrics: Metrics,
                 *, log_content: bool = False, upstream_keys: UpstreamKeys | None = None) -> None:
        self.store = store
        self.authorizer = authorizer
        self.models = models
        self.metrics = metrics
        self.log_content = log_content
        self.upstream_keys = upstream_keys  # remote models' keys kept by the server (None: not offered)

    async def authenticate(self, request: Request) -> KeyInfo:
        secret = api_key_of(request)
        if secret is None:
            raise AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' "
                "(create one with: llama2 admin create-key EMAIL)"
            )
        return await asyncio.to_thread(self.authorizer.authenticate, secret)

    def models_for(self, key: KeyInfo) -> list[str]:
        """The models `key` may use: on its own list (if it has one) and open to its user's role."""
        return [name for name, model in self.models.models.items()
                if (key.models is None or name in key.models) and model.entry.allows(key.user_role)]

    async def begin(self, key: KeyInfo, model_name: str, endpoint: str, body: Any) -> Call:
        """Resolve the model and check the key may use it now (its user's role, the key's model list,
        rate and daily tokens). The web chat calls this too, with a key-less `KeyInfo` of the user."""
        if model_name not in self.models.models:  # name only what this key may use: others stay unknown to it
            offered = ", ".join(self.models_for(key)) or "none"
            raise ModelNotFoundError(f"The model '{model_name}' does not exist on this server (offered: {offered})")
        model = self.models.get(model_name)
        if not model.entry.allows(key.user_role):  # serve.yaml's `roles:` of the model
            raise PermissionDeniedError(f"the {key.user_role} role may not use model '{model_name}'; ask an admin")
        await asyncio.to_thread(self.authorizer.authorize, key, model_name)
        content = json.dumps(body.model_dump(exclude_none=True), ensure_ascii=False) if self.log_content else None
        return Call(key, model, endpoint, content)

    async def finish(self, call: Call, response: dict[str, Any] | None = None) -> None:
        if response is not None and self.log_content:
            call.response_body = json.dumps(response, ensure_ascii=False)
        seconds = time.perf_counter() - call.started
        name = call.model.entry.name
        self.metrics.observe(name, call.endpoint, call.status, seconds, call.prompt_tokens, call.completion_tokens)
        record = UsageRecord(
            user_email=call.key.user_email, key_id=call.key.id, model=name, endpoint=call.endpoint,
            status=call.status, prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
            latency_ms=seconds * 1000, error=call.error, request_body=call.request_body,
            response_body=call.response_body,
        )
        try:
            await asyncio.to_thread(self.store.record_usage, record)
        except Exception:  # accounting must never turn a served answer into an error
            log.exception("could not record usage for key %s", call.key.id)

    async def fail(self, call: Call, exc: BaseException) -> None:
        call.status = status_of(exc)
        call.error = str(exc)[:500]
        await self.finish(call)

    # ---- streaming --------------------------------------------------------------------------

    async def stream(
        self,
        call: Call,
        requests: list[GenerateRequest],
        format_chunk: ChunkFormatter,
        *,
        opening: list[dict[str, Any]],
        usage_chunk: Callable[[int, int], dict[str, Any]] | None,
        choices_per_prompt: int = 1,
    ) -> StreamingResponse:
        """Start one provider stream per choice and answer with SSE once all have produced their
        first piece, so that a bad request (too long, upstream 429) is still a plain HTTP error.
        Choices `k*n .. k*n+n-1` share prompt k (n = `choices_per_prompt`), counted once in usage."""
        streams = [call.model.provider.stream(r) for r in requests]
        try:
            firsts = await asyncio.gather(*(anext(s) for s in streams), return_exceptions=True)
        except BaseException:  # cancelled meanwhile (the arena's stream closed): streams that answered stay open
            with anyio.CancelScope(shield=True):
                for s in streams:
                    with contextlib.suppress(Exception):
                        await s.aclose()
            raise
        failure = next((f for f in firsts if isinstance(f, BaseException)), None)
        if failure is not None:
            for s in streams:
                await s.aclose()
            raise failure
        self.metrics.first_token.labels(call.model.entry.name).observe(time.perf_counter() - call.started)
        return StreamingResponse(
            self._events(call, streams, firsts, format_chunk, opening, usage_chunk, choices_per_prompt),  # type: ignore[arg-type]
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _events(self, call, streams, firsts, format_chunk, opening, usage_chunk, n) -> AsyncIterator[bytes]:
        queue: asyncio.Queue = asyncio.Queue()
        tasks = [asyncio.create_task(self._pump(i, s, first, queue)) for i, (s, first) in enumerate(zip(streams, firsts))]
        streamed = [0] * len(streams)  # completion tokens sent per choice, for a client that hangs up
        recorded = False
        try:
            for chunk in opening:
                yield sse(chunk)
            remaining = len(tasks)
            while remaining:
                ready = [await queue.get()]
                while not queue.empty():  # what arrived meanwhile goes out in one write
                    ready.append(queue.get_nowait())
                out = b""
                for index, item in ready:
                    if item is None:
                        remaining -= 1
                        continue
                    if isinstance(item, BaseException):
                        if out:
                            yield out  # what came before the failure still reaches the client
                        raise item
                    streamed[index] += len(item.tokens)
                    if item.finish_reason is not None:
                        call.add_usage(item.prompt_tokens if index % n == 0 else 0, item.completion_tokens)
                        streamed[index] = 0
                    chunk = format_chunk(index, item)
                    if chunk is not None:
                        out += sse(chunk)
                if out:
                    yield out
            if usage_chunk is not None:
                yield sse(usage_chunk(call.prompt_tokens, call.completion_tokens))
            recorded = True  # recorded before [DONE]: a client that saw the end always has its record
            await self.finish(call)
            yield sse("[DONE]")
        except Exception as exc:  # mid-stream failure: OpenAI sends an error event, then stops
            call.status, call.error = status_of(exc), str(exc)[:500]
            call.completion_tokens += sum(streamed)
            recorded = True
            await self.finish(call)
            yield sse(error_body(call.status, str(exc), code="stream_error"))
        finally:
            for task in tasks:
                task.cancel()
            # Starlette cancels this generator through an anyio cancel scope when the client hangs up,
            # and anyio cancels every later await in that scope too: shield the clean-up and the record.
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*tasks, return_exceptions=True)
                if not recorded:
                    call.status, call.error = CLIENT_CLOSED, "client closed the connection"
                    call.completion_tokens += sum(streamed)  # what was generated counts against the key
                    await self.finish(call)

    @staticmethod
    async def _pump(index: int, stream: AsyncIterator[StreamDelta], first: StreamDelta, queue: asyncio.Queue) -> None:
        """Move one choice's deltas onto the shared queue; None marks its end."""
        try:
            await queue.put((index, first))
            if first.finish_reason is None:
                async for delta in stream:
                    await queue.put((index, delta))
                    if delta.finish_reason is not None:
                        break
            await queue.put((index, None))
        except Exception as exc:
            await queue.put((index, exc))
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]

