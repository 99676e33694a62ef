"""The chat page's JSON API under `/api` (session cookie; writes need the CSRF header): conversations
(list and search, create, read, change, delete) and the three ways to get an answer (send, regenerate,
edit and resend), which stream (`web.chat`). Errors have OpenAI's shape, like the rest of the server.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from llama2.serve.conversations import ConversationInfo
from llama2.serve.protocol import InvalidRequestError
from llama2.serve.sessions import SignedIn
from llama2.serve.web.chat import conversation_json, message_json, stream_answer
from llama2.serve.web.security import SecureRoute, api_user, csrf_user
from llama2.serve.web.state import WebState, web_state

router = APIRouter(prefix="/api", route_class=SecureRoute, include_in_schema=False)
MAX_ID = 2**63 - 1
MAX_MESSAGE_CHARS = 200_000
MAX_SYSTEM_PROMPT_CHARS = 50_000
ConversationId = Path(ge=1, le=MAX_ID)
MessageId = Path(ge=1, le=MAX_ID)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Settings(_Body):
    """A conversation's settings; in a PATCH only the fields sent change (null: the model's default)."""

    title: str | None = Field(default=None, min_length=1, max_length=200)
    model: str | None = Field(default=None, min_length=1, max_length=128)
    system_prompt: str | None = Field(default=None, max_length=MAX_SYSTEM_PROMPT_CHARS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)

    @field_validator("title")
    @classmethod
    def _title_has_text(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("a title needs some text")
        return value.strip() if value is not None else None


class NewMessage(_Body):
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    model: str | None = Field(default=None, min_length=1, max_length=128)

    @field_validator("message")
    @classmethod
    def _has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the message is empty")
        return value


class Regenerate(_Body):
    model: str | None = Field(default=None, min_length=1, max_length=128)


def _check_model(web: WebState, user: SignedIn, name: str) -> None:
    """InvalidRequestError unless the user's role may use the model (names of other models stay unsaid)."""
    allowed = [m.entry.name for m in web.models_for(user.role)]
    if name not in allowed:
        raise InvalidRequestError(f"model '{name}' is not one you may use; choose one of: {', '.join(allowed) or 'none'}",
                                  param="model")


@router.get("/conversations")
def list_conversations(request: Request, q: str | None = Query(default=None, max_length=200),
                       user: SignedIn = Depends(api_user)) -> dict[str, Any]:
    found = web_state(request).conversations.list(user.user_id, q)
    return {"data": [conversation_json(c) for c in found]}


@router.post("/conversations", status_code=201)
def create_conversation(body: Settings, request: Request, user: SignedIn = Depends(csrf_user)) -> dict[str, Any]:
    web = web_state(request)
    models = web.models_for(user.role)
    model = body.model or (models[0].entry.name if models else "")
    _check_model(web, user, model)
    settings = body.model_dump(exclude_unset=True, exclude={"model"})
    return conversation_json(web.conversations.create(user.user_id, model=model, **settings))


@router.get("/conversations/{conversation_id}")
def get_conversation(request: Request, conversation_id: int = ConversationId,
                     user: SignedIn = Depends(api_user)) -> dict[str, Any]:
    conversations = web_state(request).conversations
    conversation = conversations.get(user.user_id, conversation_id)
    messages = conversations.messages(user.user_id, conversation_id)
    return conversation_json(conversation) | {"messages": [message_json(m) for m in messages]}


@router.patch("/conversations/{conversation_id}")
def update_conversation(body: Settings, request: Request, conversation_id: int = ConversationId,
                        user: SignedIn = Depends(csrf_user)) -> dict[str, Any]:
    web = web_state(request)
    changes = body.model_dump(exclude_unset=True)
    if "title" in changes and changes["title"] is None:
        raise InvalidRequestError("title cannot be null; give the new title", param="title")
    if "model" in changes:
        if changes["model"] is None:
            raise InvalidRequestError("model cannot be null; give a model name", param="model")
        _check_model(web, user, changes["model"])
    return conversation_json(web.conversations.update(user.user_id, conversation_id, changes))


@router.delete("/conversations/{conversation_id}", status_code=204)
def delete_conversation(request: Request, conversation_id: int = ConversationId,
                        user: SignedIn = Depends(csrf_user)) -> Response:
    web_state(request).conversations.delete(user.user_id, conversation_id)
    return Response(status_code=204)


@router.post("/conversations/{conversation_id}/messages")
async def send_message(body: NewMessage, request: Request, conversation_id: int = ConversationId,
                       user: SignedIn = Depends(csrf_user)):
    web = web_state(request)
    conversation = await _with_model(web, user, conversation_id, body.model)
    message = await asyncio.to_thread(web.conversations.add_message, user.user_id, conversation_id, "user", body.message)
    conversation = await asyncio.to_thread(web.conversations.get, user.user_id, conversation_id)  # titled now
    return await stream_answer(web.gateway, web.conversations, user, conversation, message)


@router.post("/conversations/{conversation_id}/regenerate")
async def regenerate(body: Regenerate, request: Request, conversation_id: int = ConversationId,
                     user: SignedIn = Depends(csrf_user)):
    web = web_state(request)
    conversation = await _with_model(web, user, conversation_id, body.model)
    await asyncio.to_thread(web.conversations.drop_last_answer, user.user_id, conversation_id)
    return await stream_answer(web.gateway, web.conversations, user, conversation, None)


@router.post("/conversations/{conversation_id}/messages/{message_id}/edit")
async def edit_message(body: NewMessage, request: Request, conversation_id: int = ConversationId,
                       message_id: int = MessageId, user: SignedIn = Depends(csrf_user)):
    web = web_state(request)
    conversation = await _with_model(web, user, conversation_id, body.model)
    message = await asyncio.to_thread(web.conversations.edit_message, user.user_id, conversation_id, message_id,
                                      body.message)
    return await stream_answer(web.gateway, web.conversations, user, conversation, message)


async def _with_model(web: WebState, user: SignedIn, conversation_id: int, model: str | None) -> ConversationInfo:
    """The user's conversation, switched to `model` when one is given; its model must be one the user may use."""
    conversation = await asyncio.to_thread(web.conversations.get, user.user_id, conversation_id)
    if model is not None and model != conversation.model:
        _check_model(web, user, model)
        conversation = await asyncio.to_thread(web.conversations.update, user.user_id, conversation_id,
                                               {"model": model})
    _check_model(web, user, conversation.model)
    return conversation
