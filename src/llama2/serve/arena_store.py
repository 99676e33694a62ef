"""The arena's battles in the store: one question, two models' answers, one vote.

A battle is a conversation of kind "arena" (so its question and answers are ordinary messages, kept
like a chat's) plus an `arena_battles` row naming its two models and the vote. Like
`serve.conversations`, every call takes the user's id and finds battles by (id, owner) together:
another user's battle does not exist for them. A vote is final: it is cast once, with one
conditional UPDATE, so two votes sent at the same moment cannot both count.

One question per battle: each vote judges two answers to the same single prompt, so votes on the
same prompt from several people are comparable items for agreement statistics (`arena_export`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from llama2.errors import ServeError
from llama2.serve.conversations import MessageInfo, title_from
from llama2.serve.store import ArenaBattle, Conversation, Message, Store, User, utcnow

ARENA = "arena"  # Conversation.kind of a battle
SIDES = ("a", "b")
VOTES = ("a", "b", "tie", "bad")  # A is better, B is better, a tie, both are bad
VOTABLE = ("done", "stopped")  # an answer the user may judge; a failed or unfinished one is not
LIST_LIMIT = 200


class BattleNotFoundError(ServeError):
    status = 404
    code = "battle_not_found"


class VoteRefusedError(ServeError):
    status = 409
    code = "vote_refused"


@dataclass(frozen=True)
class BattleInfo:
    """A battle as its owner sees it. `answers` maps a side to its answer once that answer started."""

    id: int
    title: str
    model_a: str
    model_b: str
    vote: str | None
    created_at: datetime
    voted_at: datetime | None
    question: MessageInfo
    answers: dict[str, MessageInfo]

    def model(self, side: str) -> str:
        return self.model_a if side == "a" else self.model_b


@dataclass(frozen=True)
class BattleSummary:
    id: int
    title: str
    vote: str | None
    created_at: datetime


@dataclass(frozen=True)
class VoteRecord:
    """One cast vote, for export: who voted, on which question, between which models."""

    battle_id: int
    voter: str
    model_a: str
    model_b: str
    vote: str
    question: str
    voted_at: datetime


class Arena:
    def __init__(self, store: Store) -> None:
        self._store = store

    def create(self, user_id: int, question: str, model_a: str, model_b: str) -> BattleInfo:
        """A new battle between two different models, with its question."""
        assert model_a != model_b, "a battle needs two different models"
        now = utcnow()
        with self._store.writing() as session:
            conversation = Conversation(user_id=user_id, title=title_from(question), model="", kind=ARENA,
                                        created_at=now, updated_at=now)
            session.add(conversation)
            session.flush()
            session.add(ArenaBattle(conversation_id=conversation.id, user_id=user_id, model_a=model_a,
                                    model_b=model_b, created_at=now))
            session.add(Message(conversation_id=conversation.id, role="user", content=question, status="done",
                                created_at=now))
            session.flush()
            return _battle(session, *_owned(session, user_id, conversation.id))

    def get(self, user_id: int, battle_id: int) -> BattleInfo:
        with self._store.reading() as session:
            return _battle(session, *_owned(session, user_id, battle_id))

    def list(self, user_id: int) -> list[BattleSummary]:
        """The user's battles, newest first."""
        statement = (select(Conversation, ArenaBattle).join(ArenaBattle, ArenaBattle.conversation_id == Conversation.id)
                     .where(Conversation.user_id == user_id, Conversation.kind == ARENA)
                     .order_by(Conversation.created_at.desc(), Conversation.id.desc()).limit(LIST_LIMIT))
        with self._store.reading() as session:
            return [BattleSummary(c.id, c.title, b.vote, c.created_at) for c, b in session.execute(statement)]

    def start_answer(self, user_id: int, battle_id: int, side: str) -> MessageInfo:
        """The row of a side's answer, `streaming` until `finish_answer`; each side answers once."""
        assert side in SIDES
        with self._store.writing() as session:
            conversation, battle = _owned(session, user_id, battle_id)
            model = battle.model_a if side == "a" else battle.model_b
            if session.scalar(select(Message.id).where(Message.conversation_id == battle_id, Message.model == model)):
                raise VoteRefusedError(f"model {side.upper()} of battle {battle_id} has answered already")
            row = Message(conversation_id=battle_id, role="assistant", content="", model=model, status="streaming")
            session.add(row)
            conversation.updated_at = row.created_at = utcnow()
            session.flush()
            return _message(row)

    def finish_answer(self, user_id: int, battle_id: int, message_id: int, content: str, status: str,
                      error: str | None = None) -> MessageInfo | None:
        """An answer's final text and how it ended; None when its battle is gone."""
        with self._store.writing() as session:
            found = _find(session, user_id, battle_id)
            row = session.get(Message, message_id)
            if found is None or row is None or row.conversation_id != battle_id or row.role != "assistant":
                return None
            row.content, row.status, row.error = content, status, error
            found[0].updated_at = utcnow()
            return _message(row)

    def vote(self, user_id: int, battle_id: int, vote: str) -> BattleInfo:
        """Cast the battle's one vote. Refused (409) once voted, and while an answer is unfinished or
        failed: a vote judges two complete (or deliberately stopped) answers."""
        assert vote in VOTES
        with self._store.writing() as session:
            conversation, battle = _owned(session, user_id, battle_id)
            if battle.vote is not None:
                raise VoteRefusedError("this battle has its vote already; a vote is final")
            answers = _answers(session, battle)
            if any(answers.get(side) is None or answers[side].status == "streaming" for side in SIDES):
                raise VoteRefusedError("both answers must finish (or be stopped) before the vote")
            if any(answers[side].status not in VOTABLE for side in SIDES):
                raise VoteRefusedError("an answer failed, so this battle cannot be judged; start a new battle")
            now = utcnow()
            cast = session.execute(update(ArenaBattle)
                                   .where(ArenaBattle.conversation_id == battle_id, ArenaBattle.user_id == user_id,
                                          ArenaBattle.vote.is_(None))
                                   .values(vote=vote, voted_at=now)
                                   .execution_options(synchronize_session=False))
            if cast.rowcount != 1:  # another request voted between the read and this update
                raise VoteRefusedError("this battle has its vote already; a vote is final")
            session.expire(battle)
            return _battle(session, conversation, battle)

    def votes(self, since: datetime | None = None) -> list[VoteRecord]:
        """Every user's cast votes (since `since`, inclusive), oldest first, with the battle's question."""
        first = (select(Message.conversation_id, func.min(Message.id).label("message_id"))
                 .where(Message.role == "user").group_by(Message.conversation_id).subquery())
        statement = (select(ArenaBattle, User.email, Message.content)
                     .join(User, User.id == ArenaBattle.user_id)
                     .join(first, first.c.conversation_id == ArenaBattle.conversation_id)
                     .join(Message, Message.id == first.c.message_id)
                     .where(ArenaBattle.vote.is_not(None))
                     .order_by(ArenaBattle.voted_at, ArenaBattle.conversation_id))
        if since is not None:
            statement = statement.where(ArenaBattle.voted_at >= since)
        with self._store.reading() as session:
            return [VoteRecord(b.conversation_id, email, b.model_a, b.model_b, b.vote, question, b.voted_at)
                    for b, email, question in session.execute(statement)]


def _find(session: Session, user_id: int, battle_id: int) -> tuple[Conversation, ArenaBattle] | None:
    row = session.execute(select(Conversation, ArenaBattle)
                          .join(ArenaBattle, ArenaBattle.conversation_id == Conversation.id)
                          .where(Conversation.id == battle_id, Conversation.user_id == user_id,
                                 Conversation.kind == ARENA)).first()
    return None if row is None else (row[0], row[1])


def _owned(session: Session, user_id: int, battle_id: int) -> tuple[Conversation, ArenaBattle]:
    found = _find(session, user_id, battle_id)
    if found is None:
        raise BattleNotFoundError(f"no battle {battle_id}")
    return found


def _answers(session: Session, battle: ArenaBattle) -> dict[str, MessageInfo]:
    rows: Sequence[Message] = session.scalars(select(Message).where(
        Message.conversation_id == battle.conversation_id, Message.role == "assistant").order_by(Message.id)).all()
    by_model = {row.model: _message(row) for row in rows}
    return {side: by_model[model] for side, model in zip(SIDES, (battle.model_a, battle.model_b)) if model in by_model}


def _battle(session: Session, conversation: Conversation, battle: ArenaBattle) -> BattleInfo:
    question = session.scalars(select(Message).where(Message.conversation_id == conversation.id,
                                                     Message.role == "user").order_by(Message.id).limit(1)).one()
    return BattleInfo(id=conversation.id, title=conversation.title, model_a=battle.model_a, model_b=battle.model_b,
                      vote=battle.vote, created_at=battle.created_at, voted_at=battle.voted_at,
                      question=_message(question), answers=_answers(session, battle))


def _message(row: Message) -> MessageInfo:
    return MessageInfo(id=row.id, role=row.role, content=row.content, model=row.model, status=row.status,
                       error=row.error, created_at=row.created_at)
