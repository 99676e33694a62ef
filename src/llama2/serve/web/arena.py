"""The blind arena: a user asks one question, two models drawn at random answer side by side as
"Model A" and "Model B", the user votes (A, B, tie, both bad), and only then are the names shown.

Pages `/arena` (a new battle) and `/arena/{id}` (one of the user's battles), and their JSON API
under `/api/arena` (session cookie; writes need the CSRF header). One question per battle: each
vote judges two answers to one prompt, which keeps votes on the same prompt comparable across
people (`llama2 admin export-votes --agreement`); "New battle" asks the next. The pair is drawn
uniformly among the ordered pairs of different models the user's role may use — every pair equally
likely, and either model equally likely to be A — among local models only when the user asks.
Thin: the battle's records are `serve.arena_store`'s, its answers `web.arena_stream`'s.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from llama2.serve.arena_store import SIDES, Arena, BattleInfo, BattleNotFoundError
from llama2.serve.models import ServedModel
from llama2.serve.protocol import InvalidRequestError
from llama2.serve.sessions import SignedIn
from llama2.serve.web.arena_stream import battle_json, chat_request, stream_battle
from llama2.serve.web.security import SecureRoute, api_user, csrf_user, page_user
from llama2.serve.web.state import web_state

router = APIRouter(route_class=SecureRoute, include_in_schema=False)
MAX_ID = 2**63 - 1
MAX_QUESTION_CHARS = 50_000
BattleId = Path(ge=1, le=MAX_ID)
VOTE_TEXT = {"a": "You preferred Model A.", "b": "You preferred Model B.", "tie": "You called it a tie.",
             "bad": "You found both answers bad."}


class NotEnoughModelsError(InvalidRequestError):
    def __init__(self, message: str) -> None:
        super().__init__(message, code="not_enough_models")


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    local_only: bool = False

    @field_validator("message")
    @classmethod
    def _has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the question is empty")
        return value


class Vote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vote: Literal["a", "b", "tie", "bad"]


def draw_pair(models: Sequence[ServedModel], rng: random.Random, *, local_only: bool = False) -> tuple[str, str]:
    """(model A, model B): two different models, uniformly among the ordered pairs of `models`
    (external ones left out with `local_only`); NotEnoughModelsError with fewer than two."""
    pool = [m.entry.name for m in models if not (local_only and m.entry.is_external)]
    if len(pool) < 2:
        kind = "local models" if local_only else "models"
        raise NotEnoughModelsError(f"the arena needs two {kind} your role may use, and there "
                                   f"{'is' if len(pool) == 1 else 'are'} {len(pool) or 'none'}; ask an admin")
    model_a, model_b = rng.sample(pool, 2)
    return model_a, model_b


def _arena(request: Request) -> Arena:
    return Arena(web_state(request).gateway.store)


# ---- pages ----------------------------------------------------------------------------------------


@router.get("/arena", response_class=HTMLResponse)
def arena_page(request: Request, user: SignedIn = Depends(page_user)) -> Response:
    return _page(request, user, None)


@router.get("/arena/{battle_id}", response_class=HTMLResponse)
def battle_page(request: Request, battle_id: int = BattleId, user: SignedIn = Depends(page_user)) -> Response:
    try:
        battle = _arena(request).get(user.user_id, battle_id)
    except BattleNotFoundError:
        return web_state(request).templates.TemplateResponse(
            request, "message.html", {"title": "Not found", "message": "There is no such battle.",
                                      "link": ("/arena", "Back to the arena")}, status_code=404)
    return _page(request, user, battle)


def _page(request: Request, user: SignedIn, battle: BattleInfo | None) -> Response:
    web = web_state(request)
    models = web.models_for(user.role)
    local = [m for m in models if not m.entry.is_external]
    data = battle_json(battle, web.gateway.models) if battle else None
    context: dict[str, Any] = {
        "user": user,
        "csrf": user.csrf_token,
        "battles": _arena(request).list(user.user_id),
        "battle": data,
        "sides": SIDES,
        "state": _state(battle),
        "verdict": VOTE_TEXT.get(battle.vote or "") if battle else None,
        "n_models": len(models),
        "n_local": len(local),
        "has_external": len(local) < len(models),
    }
    return web.templates.TemplateResponse(request, "arena.html", context)


def _state(battle: BattleInfo | None) -> str:
    """The page's state: new (ask), voting (answers complete), voted, or failed (not votable)."""
    if battle is None:
        return "new"
    if battle.vote is not None:
        return "voted"
    answers = [battle.answers.get(side) for side in SIDES]
    if all(a is not None and a.status in ("done", "stopped") for a in answers):
        return "voting"
    return "failed"  # an answer failed, or was cut off (a stored "streaming" answer is not being written)


# ---- the API ----------------------------------------------------------------------------------------


@router.post("/api/arena/battles")
async def ask(body: Question, request: Request, user: SignedIn = Depends(csrf_user)):
    """A new battle for the question, both answers streamed (events: `web.arena_stream`)."""
    web = web_state(request)
    model_a, model_b = draw_pair(web.models_for(user.role), random.SystemRandom(), local_only=body.local_only)
    chat_request(model_a, body.message)  # a question the protocol refuses fails here, before anything is kept
    arena = _arena(request)
    battle = await asyncio.to_thread(arena.create, user.user_id, body.message, model_a, model_b)
    return stream_battle(web.gateway, arena, user, battle)


@router.get("/api/arena/battles/{battle_id}")
def get_battle(request: Request, battle_id: int = BattleId, user: SignedIn = Depends(api_user)) -> dict[str, Any]:
    return battle_json(_arena(request).get(user.user_id, battle_id), web_state(request).gateway.models)


@router.post("/api/arena/battles/{battle_id}/vote")
def vote(body: Vote, request: Request, battle_id: int = BattleId,
         user: SignedIn = Depends(csrf_user)) -> dict[str, Any]:
    """Cast the battle's one vote; the answer names the two models."""
    battle = _arena(request).vote(user.user_id, battle_id, body.vote)
    return battle_json(battle, web_state(request).gateway.models) | {"verdict": VOTE_TEXT[body.vote]}

