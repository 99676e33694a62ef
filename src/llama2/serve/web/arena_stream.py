"""Answering an arena battle: both models at once, through the gateway, as one stream of page events.

Each side is a gateway call like a chat answer (the user's role checked against the model, usage
recorded with endpoint `web.arena`). Both sides start together, so they wait for their first token
at the same time, and their events are merged into one server-sent-event stream, each tagged with
its side. A side that fails, before its first word or during its answer, ends with its error while
the other goes on. Closing the stream (the stop button, or a browser that goes away) stops both;
what each had written is kept, marked stopped.

No event names a model: the page learns the names from the vote's answer (`battle_json`).

Events, one JSON object per server-sent event:
    {"type": "start", "battle": {"id", "title", "vote"}, "question": {...}}
    {"type": "delta", "side": "a", "text": "...", "html": "..."}   html now and then, as in the chat
    {"type": "error", "side": "a", "message": "..."}               that side's model failed mid-answer
    {"type": "end", "side": "a", "answer": {...}}                  that side's saved answer (or an
                                                                   error event, when it has none)
    [DONE]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from llama2.providers.base import GenerateRequest
from llama2.serve.arena_store import SIDES, Arena, BattleInfo
from llama2.serve.conversations import MessageInfo
from llama2.serve.gateway import CLIENT_CLOSED, Gateway
from llama2.serve.models import ModelPool
from llama2.serve.protocol import ChatCompletionRequest, InvalidRequestError, sse
from llama2.serve.sessions import SignedIn
from llama2.serve.web.chat import Draft, message_json, principal
from llama2.serve.web.render import render_markdown
from llama2.types import StreamDelta

ARENA_ENDPOINT = "web.arena"
_DONE = sse("[DONE]")


def chat_request(model: str, question: str) -> ChatCompletionRequest:
    """The OpenAI request one side answers (the model's own default settings); a question the
    protocol refuses is an InvalidRequestError, raised before a battle is stored."""
    try:
        return ChatCompletionRequest.model_validate({"model": model, "stream": True,
                                                     "messages": [{"role": "user", "content": question}]})
    except ValidationError as error:
        message = error.errors()[0]["msg"]
        raise InvalidRequestError(f"the question cannot be sent: {message}", param="message") from None


def answer_json(message: MessageInfo) -> dict[str, Any]:
    """An answer for the page, without the model's name."""
    return {"id": message.id, "status": message.status, "content": message.content,
            "html": render_markdown(message.content), "error": message.error,
            "created_at": message.created_at.isoformat()}


def battle_json(battle: BattleInfo, models: ModelPool) -> dict[str, Any]:
    """A battle for the page: its question, answers and vote; the models' names only once voted."""
    data: dict[str, Any] = {
        "id": battle.id, "title": battle.title, "vote": battle.vote, "created_at": battle.created_at.isoformat(),
        "voted_at": battle.voted_at.isoformat() if battle.voted_at else None,
        "question": message_json(battle.question),
        "answers": {side: answer_json(answer) for side, answer in battle.answers.items()},
        "models": None,
    }
    if battle.vote is not None:
        data["models"] = {side: {"name": battle.model(side), "external": _external(models, battle.model(side))}
                          for side in SIDES}
    return data


def _external(models: ModelPool, name: str) -> bool | None:
    """Whether a model is external; None when the server no longer offers it."""
    served = models.models.get(name)
    return None if served is None else served.entry.is_external


def stream_battle(gateway: Gateway, arena: Arena, user: SignedIn, battle: BattleInfo) -> StreamingResponse:
    """Both sides' answers as one stream of page events (module docstring)."""
    return StreamingResponse(_merged(gateway, arena, user, battle), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _merged(gateway: Gateway, arena: Arena, user: SignedIn, battle: BattleInfo) -> AsyncIterator[bytes]:
    """Both sides' events as they come; when the stream is closed early, both sides are stopped."""
    yield sse({"type": "start", "battle": {"id": battle.id, "title": battle.title, "vote": None},
               "question": message_json(battle.question)})
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    tasks = [asyncio.create_task(_answer(gateway, arena, user, battle, side, queue)) for side in SIDES]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            else:
                yield item
        yield _DONE
    finally:
        for task in tasks:
            task.cancel()
        # Starlette cancels this generator through an anyio cancel scope when the browser hangs up:
        # shield the wait for the sides, which save their answers.
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*tasks, return_exceptions=True)


async def _answer(gateway: Gateway, arena: Arena, user: SignedIn, battle: BattleInfo, side: str,
                  queue: asyncio.Queue) -> None:
    """One side, from its answer's row to the saved answer, its events put on `queue` (None when it
    is over). Its failure is the side's error, not the stream's; cancelled (the stream was closed),
    it keeps what was written as stopped. The task is cancelled once (natively), so the awaits in
    its clean-up still run."""
    model, draft = battle.model(side), Draft()
    answer, status, error = None, "stopped", None
    try:
        answer = await asyncio.to_thread(arena.start_answer, user.user_id, battle.id, side)
        body = chat_request(model, battle.question.content)
        call = await gateway.begin(principal(user), model, ARENA_ENDPOINT, body)
        try:
            response = await gateway.stream(call, [GenerateRequest(body.dialog(), body.params())],
                                            _tagged(draft, side), opening=[], usage_chunk=None)
        except asyncio.CancelledError:  # the browser went away before this side's first word
            call.status, call.error = CLIENT_CLOSED, "client closed the connection"
            await gateway.finish(call)
            raise
        except Exception as exc:
            await gateway.fail(call, exc)
            raise
        events = response.body_iterator
        try:
            async for chunk in events:
                if chunk == _DONE:
                    continue
                if chunk.startswith(b'data: {"error"'):  # the gateway's mid-stream failure event
                    error = json.loads(chunk[len(b"data: "):])["error"]["message"]
                    await queue.put(sse({"type": "error", "side": side, "message": error}))
                    continue
                await queue.put(chunk)
        finally:
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]  # the gateway records the usage
        status = "done" if draft.finish_reason is not None and error is None else "error"
    except Exception as exc:
        status, error = "error", str(exc)[:500]
    finally:
        if answer is not None:
            saved = await asyncio.to_thread(arena.finish_answer, user.user_id, battle.id, answer.id, draft.text,
                                            status, error)
            if saved is not None:
                await queue.put(sse({"type": "end", "side": side, "answer": answer_json(saved)}))
        elif error is not None:
            await queue.put(sse({"type": "error", "side": side, "message": error}))
        await queue.put(None)


def _tagged(draft: Draft, side: str) -> Callable[[int, StreamDelta], dict[str, Any] | None]:
    """The chat's delta events (text, and the rendered answer now and then), tagged with the side."""
    def event(index: int, delta: StreamDelta) -> dict[str, Any] | None:
        data = draft.event(index, delta)
        return None if data is None else data | {"side": side}
    return event
