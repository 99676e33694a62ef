"""Answering in the web chat, through the same gateway as `/v1/chat/completions`.

The conversation becomes an OpenAI chat request (so it is validated like one), the gateway checks
the user's role against the model, streams the provider's answer and writes the usage record (the
user's email, no key, endpoint `web.chat`); this module only shapes the stream's events for the
page and keeps the answer in the store.

The answer's row is created before the model starts (status `streaming`), so turns keep their order
whatever happens later, and is completed when the stream ends: `done`, `error`, or `stopped` when
the browser hung up (the stop button aborts the request; the gateway then cancels the provider
stream, which frees a local model's decode row at its next step).

Events, one JSON object per server-sent event:
    {"type": "start", "conversation": {...}, "user_message": {...} | null, "answer": {...}}
    {"type": "delta", "text": "...", "html": "..."}   html: the whole answer so far, rendered (now and then)
    {"error": {...}}                                  the model failed mid-answer (OpenAI's shape)
    [DONE]
    {"type": "end", "answer": {...}}                  the saved answer, with its final HTML
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Any

import anyio
from fastapi.responses import StreamingResponse

from llama2.providers.base import GenerateRequest
from llama2.serve.conversations import ConversationInfo, Conversations, MessageInfo
from llama2.serve.gateway import Gateway
from llama2.serve.protocol import ChatCompletionRequest, sse
from llama2.serve.sessions import SignedIn
from llama2.serve.store import KeyInfo
from llama2.serve.web.render import render_markdown
from llama2.types import StreamDelta

WEB_ENDPOINT = "web.chat"
RENDER_EVERY_S = 0.25  # how often the streamed answer is rendered as Markdown for the page


def principal(user: SignedIn) -> KeyInfo:
    """The signed-in user as the gateway's caller: a key-less `KeyInfo` with no limits of its own."""
    return KeyInfo(id=None, user_email=user.email, user_role=user.role, name=None, models=None, rpm=None,
                   tokens_per_day=None, created_at=user.created_at, revoked=False)


def build_dialog(system_prompt: str | None, history: list[MessageInfo]) -> list[dict[str, str]]:
    """The conversation as chat messages. Failed answers are left out (the model never saw them), and
    turns of one role that then follow each other are joined, as the chat format needs them to alternate."""
    dialog = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for message in history:
        if message.role == "assistant" and message.status == "error":
            continue
        if dialog and dialog[-1]["role"] == message.role:
            dialog[-1]["content"] += "\n\n" + message.content
        else:
            dialog.append({"role": message.role, "content": message.content})
    return dialog


def message_json(message: MessageInfo, *, external: bool | None = None) -> dict[str, Any]:
    data = asdict(message) | {"created_at": message.created_at.isoformat()}
    if message.role == "assistant":
        data["html"] = render_markdown(message.content)
    if external is not None:
        data["external"] = external
    return data


def conversation_json(conversation: ConversationInfo) -> dict[str, Any]:
    return asdict(conversation) | {"created_at": conversation.created_at.isoformat(),
                                   "updated_at": conversation.updated_at.isoformat()}


class Draft:
    """The answer as it streams: its text, how it ended, and the page's events for each piece."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.error: str | None = None
        self._rendered_at = 0.0

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def event(self, index: int, delta: StreamDelta) -> dict[str, Any] | None:
        """The gateway's chunk formatter: a delta event, with the rendered answer now and then."""
        if delta.text:
            self.parts.append(delta.text)
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason
        elif not delta.text:
            return None
        event: dict[str, Any] = {"type": "delta", "text": delta.text}
        now = time.monotonic()
        if delta.finish_reason is not None or now - self._rendered_at >= RENDER_EVERY_S:
            event["html"] = render_markdown(self.text)
            self._rendered_at = now
        return event


async def stream_answer(gateway: Gateway, conversations: Conversations, user: SignedIn,
                        conversation: ConversationInfo, user_message: MessageInfo | None) -> StreamingResponse:
    """Answer the conversation's last user turn as a stream of page events (module docstring).
    Errors before the first token (a model the role may not use, a prompt too long, a full queue)
    are raised, after the answer's row records them."""
    model = gateway.models.get(conversation.model)
    history = await asyncio.to_thread(conversations.messages, user.user_id, conversation.id)
    body = ChatCompletionRequest.model_validate({
        "model": conversation.model, "messages": build_dialog(conversation.system_prompt, history),
        "temperature": conversation.temperature, "max_tokens": conversation.max_tokens, "stream": True,
    })
    call = await gateway.begin(principal(user), conversation.model, WEB_ENDPOINT, body)
    answer = await asyncio.to_thread(conversations.add_message, user.user_id, conversation.id, "assistant", "",
                                     model=conversation.model, status="streaming")

    def finish(text: str, status: str, error: str | None = None) -> MessageInfo | None:
        return conversations.finish_answer(user.user_id, conversation.id, answer.id, text, status, error)

    draft = Draft()
    opening = {"type": "start", "conversation": conversation_json(conversation),
               "user_message": message_json(user_message) if user_message else None,
               "answer": message_json(answer, external=model.entry.is_external)}
    try:
        request = GenerateRequest(body.dialog(), body.params())
        response = await gateway.stream(call, [request], draft.event, opening=[opening], usage_chunk=None)
    except BaseException as exc:
        await gateway.fail(call, exc)
        with anyio.CancelScope(shield=True):
            await asyncio.to_thread(finish, "", "error", str(exc)[:500])
        raise
    response.body_iterator = _saved(response.body_iterator, draft, finish, model.entry.is_external)
    return response


async def _saved(events: AsyncIterator[bytes], draft: Draft, finish: Callable[..., MessageInfo | None],
                 external: bool) -> AsyncIterator[bytes]:
    """Pass the gateway's events through, then save the answer however the stream ended — also when
    the browser hung up (the stop button), which cancels this generator."""
    status = "stopped"
    saved: MessageInfo | None = None
    try:
        async for chunk in events:
            if chunk.startswith(b'data: {"error"'):
                draft.error = json.loads(chunk[len(b"data: "):])["error"]["message"]
            yield chunk
        status = "done" if draft.finish_reason is not None and draft.error is None else "error"
    finally:
        with anyio.CancelScope(shield=True):  # a cancelled stream still saves what was written
            saved = await asyncio.to_thread(finish, draft.text, status, draft.error)
    if saved is not None:
        yield sse({"type": "end", "answer": message_json(saved, external=external)})
