"""The web chat's conversations and their messages, always seen through the user who owns them.

Every method takes the user's id and looks conversations up by (id, owner) together, so one user
can never read, change or delete another's conversation by guessing its id: to them it does not
exist (the same 404 as an id nobody has). Only chats are seen here: the arena's battles (kind
"arena", `serve.arena_store`) are conversations too, but not ones the chat pages show or change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, or_, select
from sqlalchemy.orm import Session

from llama2.errors import ServeError
from llama2.serve.store import Conversation, Message, Store, utcnow

CHAT = "chat"  # Conversation.kind of the chat page's conversations
NEW_TITLE = "New chat"
TITLE_LENGTH = 60  # a title made from the first message: its first line, cut here
LIST_LIMIT = 500
STATUSES = ("streaming", "done", "stopped", "error")


class ConversationNotFoundError(ServeError):
    status = 404
    code = "conversation_not_found"


@dataclass(frozen=True)
class ConversationInfo:
    id: int
    title: str
    model: str
    system_prompt: str | None
    temperature: float | None
    max_tokens: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class MessageInfo:
    id: int
    role: str
    content: str
    model: str | None
    status: str
    error: str | None
    created_at: datetime


SETTINGS = ("title", "model", "system_prompt", "temperature", "max_tokens")


def title_from(text: str) -> str:
    """A conversation's title from its first message: the first non-empty line, shortened."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "") or NEW_TITLE
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"


class Conversations:
    def __init__(self, store: Store) -> None:
        self._store = store

    def list(self, user_id: int, query: str | None = None) -> list[ConversationInfo]:
        """The user's conversations, most recently active first; with `query`, those whose title or
        any message contains it (case-insensitive)."""
        statement = select(Conversation).where(Conversation.user_id == user_id, Conversation.kind == CHAT)
        if query and query.strip():
            needle = query.strip().lower()
            in_text = exists().where(Message.conversation_id == Conversation.id,
                                     func.lower(Message.content).contains(needle, autoescape=True))
            statement = statement.where(or_(func.lower(Conversation.title).contains(needle, autoescape=True), in_text))
        statement = statement.order_by(Conversation.updated_at.desc(), Conversation.id.desc()).limit(LIST_LIMIT)
        with self._store.reading() as session:
            return [_info(c) for c in session.scalars(statement)]

    def create(self, user_id: int, *, model: str, title: str = NEW_TITLE, system_prompt: str | None = None,
               temperature: float | None = None, max_tokens: int | None = None) -> ConversationInfo:
        now = utcnow()
        row = Conversation(user_id=user_id, title=title, model=model, system_prompt=system_prompt or None,
                           temperature=temperature, max_tokens=max_tokens, created_at=now, updated_at=now)
        with self._store.writing() as session:
            session.add(row)
        return _info(row)

    def get(self, user_id: int, conversation_id: int) -> ConversationInfo:
        with self._store.reading() as session:
            return _info(_owned(session, user_id, conversation_id))

    def update(self, user_id: int, conversation_id: int, changes: dict[str, Any]) -> ConversationInfo:
        """Change any of SETTINGS; an empty system prompt means none."""
        unknown = set(changes) - set(SETTINGS)
        assert not unknown, f"not settings of a conversation: {unknown}"
        with self._store.writing() as session:
            row = _owned(session, user_id, conversation_id)
            for name, value in changes.items():
                setattr(row, name, (value or None) if name == "system_prompt" else value)
            row.updated_at = utcnow()
            return _info(row)

    def delete(self, user_id: int, conversation_id: int) -> None:
        with self._store.writing() as session:
            row = _owned(session, user_id, conversation_id)
            session.execute(delete(Message).where(Message.conversation_id == row.id))
            session.delete(row)

    def messages(self, user_id: int, conversation_id: int) -> list[MessageInfo]:
        with self._store.reading() as session:
            _owned(session, user_id, conversation_id)
            rows = session.scalars(select(Message).where(Message.conversation_id == conversation_id)
                                   .order_by(Message.id))
            return [_message(m) for m in rows]

    def add_message(self, user_id: int, conversation_id: int, role: str, content: str, *, model: str | None = None,
                    status: str = "done", error: str | None = None) -> MessageInfo:
        """Append a message. The first user message of an untitled conversation names it."""
        assert role in ("user", "assistant") and status in STATUSES
        with self._store.writing() as session:
            conversation = _owned(session, user_id, conversation_id)
            if role == "user" and conversation.title == NEW_TITLE and not _has_messages(session, conversation.id):
                conversation.title = title_from(content)
            row = Message(conversation_id=conversation.id, role=role, content=content, model=model, status=status,
                          error=error)
            session.add(row)
            conversation.updated_at = row.created_at = utcnow()
            session.flush()
            return _message(row)

    def finish_answer(self, user_id: int, conversation_id: int, message_id: int, content: str, status: str,
                      error: str | None = None) -> MessageInfo | None:
        """Write an answer's final text and how it ended; None when the answer (or its conversation)
        was deleted while it was being written."""
        assert status in STATUSES
        with self._store.writing() as session:
            conversation = session.scalar(select(Conversation).where(Conversation.id == conversation_id,
                                                                     Conversation.user_id == user_id,
                                                                     Conversation.kind == CHAT))
            row = session.get(Message, message_id)
            if conversation is None or row is None or row.conversation_id != conversation.id:
                return None
            row.content, row.status, row.error = content, status, error
            conversation.updated_at = utcnow()
            return _message(row)

    def edit_message(self, user_id: int, conversation_id: int, message_id: int, content: str) -> MessageInfo:
        """Replace a user message's text and delete every message after it (they answered the old text)."""
        with self._store.writing() as session:
            conversation = _owned(session, user_id, conversation_id)
            row = session.get(Message, message_id)
            if row is None or row.conversation_id != conversation.id or row.role != "user":
                raise ConversationNotFoundError(f"conversation {conversation_id} has no user message {message_id}")
            row.content = content
            session.execute(delete(Message).where(Message.conversation_id == conversation.id, Message.id > row.id))
            conversation.updated_at = utcnow()
            return _message(row)

    def drop_last_answer(self, user_id: int, conversation_id: int) -> None:
        """Delete the last message when it is an answer (regenerate: the question is answered anew)."""
        with self._store.writing() as session:
            conversation = _owned(session, user_id, conversation_id)
            last = session.scalars(select(Message).where(Message.conversation_id == conversation.id)
                                   .order_by(Message.id.desc()).limit(1)).first()
            if last is None:
                raise ConversationNotFoundError(f"conversation {conversation_id} has no message to answer again")
            if last.role == "assistant":
                session.delete(last)


def _owned(session: Session, user_id: int, conversation_id: int) -> Conversation:
    row = session.scalar(select(Conversation).where(Conversation.id == conversation_id,
                                                    Conversation.user_id == user_id, Conversation.kind == CHAT))
    if row is None:
        raise ConversationNotFoundError(f"no conversation {conversation_id}")
    return row


def _has_messages(session: Session, conversation_id: int) -> bool:
    return session.scalar(select(exists().where(Message.conversation_id == conversation_id)))


def _info(row: Conversation) -> ConversationInfo:
    return ConversationInfo(id=row.id, title=row.title, model=row.model, system_prompt=row.system_prompt,
                            temperature=row.temperature, max_tokens=row.max_tokens, created_at=row.created_at,
                            updated_at=row.updated_at)


def _message(row: Message) -> MessageInfo:
    return MessageInfo(id=row.id, role=row.role, content=row.content, model=row.model, status=row.status,
                       error=row.error, created_at=row.created_at)
