"""Prompt sets for pairwise comparisons: JSONL, one prompt per line, single- or multi-turn.

Each line is an object with
- `id` (string, unique in the file): keys answers, judgments and ratings across runs;
- either `prompt` (a string: one user turn) or `messages` (a dialog: an optional system message,
  then user and assistant turns alternating, ending with the user turn to answer);
- `category` (optional string): the breakdown the tables are split by (factual, writing, ...);
- `turns` (optional): the number of user turns; derived from the messages, and if given it must agree.

Multi-turn prompts carry their earlier assistant turns: every model answers only the last user turn
of the same conversation. That is the paper's protocol (LLAMA2.md §7.1: annotators wrote the
multi-turn prompts by chatting with a model, and the compared models answer the final turn), and it
keeps the comparison about one answer each, on identical context, rather than about two diverging
conversations.

Every problem is a `DataError` naming the file and line (`prompts.jsonl:7: ...`). `starter` names the
set that ships with the package (`assets/prompts/pairwise.jsonl`: about fifty prompts written for this
project across factual, writing, reasoning, coding, advice, language and multi-turn categories).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from llama2.data.corpus import jsonl_records
from llama2.errors import DataError, DialogError
from llama2.model.chat_format import validate_dialog
from llama2.types import Dialog

STARTER = "starter"
_STARTER_ASSET = "assets/prompts/pairwise.jsonl"
_FIELDS = ("id", "prompt", "messages", "category", "turns")


@dataclass(frozen=True)
class PromptItem:
    """One prompt: the dialog every model answers (it ends with a user turn) and its category."""

    id: str
    messages: tuple[dict[str, str], ...]
    category: str | None = None

    @property
    def turns(self) -> int:
        """User turns in the dialog: 1 for a single-turn prompt."""
        return sum(message["role"] == "user" for message in self.messages)

    @property
    def dialog(self) -> Dialog:
        return [dict(message) for message in self.messages]  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        """The JSONL record (always in the `messages` form) that `parse_prompt` reads back."""
        return {"id": self.id, "messages": self.dialog, "category": self.category, "turns": self.turns}


def starter_path() -> Path:
    """The bundled starter set."""
    return Path(str(files("llama2").joinpath(_STARTER_ASSET)))


def load_prompts(source: str | Path, *, limit: int | None = None) -> list[PromptItem]:
    """Read a prompt set (a JSONL path, or `starter`); the first `limit` prompts when given."""
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1; got {limit}")
    path = starter_path() if str(source) == STARTER else Path(source).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: prompt set not found; give a JSONL file of prompts or `{STARTER}` for the bundled set")
    items: list[PromptItem] = []
    seen: dict[str, str] = {}
    for where, record in jsonl_records(path):
        item = parse_prompt(record, where)
        if item.id in seen:
            raise DataError(f"{where}: prompt id {item.id!r} already used at {seen[item.id]}; ids must be unique")
        seen[item.id] = where
        items.append(item)
    if not items:
        raise DataError(f"{path}: no prompts in the file; write one JSON object per line")
    return items[:limit]


def parse_prompt(record: Mapping[str, Any], where: str) -> PromptItem:
    """One JSONL record -> a PromptItem; `where` ("file:line") prefixes every error."""
    unknown = sorted(set(record) - set(_FIELDS))
    if unknown:
        raise DataError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; a prompt has {', '.join(_FIELDS)}")
    prompt_id = record.get("id")
    if not isinstance(prompt_id, str) or not prompt_id.strip():
        raise DataError(f"{where}: 'id' must be a non-empty string, got {prompt_id!r:.40}")
    category = record.get("category")
    if category is not None and (not isinstance(category, str) or not category.strip()):
        raise DataError(f"{where}: 'category' must be a non-empty string when given, got {category!r:.40}")
    item = PromptItem(prompt_id, tuple(_dialog(record, where)), category)
    turns = record.get("turns")
    if turns is not None and turns != item.turns:
        raise DataError(f"{where}: 'turns' is {turns!r} but the messages hold {item.turns} user turn(s); fix or drop 'turns'")
    return item


def write_prompts(path: Path, items: Sequence[PromptItem]) -> None:
    """Write `items` as a prompt-set JSONL (the caller makes it atomic)."""
    with open(path, "w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(item.to_dict(), ensure_ascii=False) + "\n")


def _dialog(record: Mapping[str, Any], where: str) -> list[dict[str, str]]:
    has_prompt, has_messages = "prompt" in record, "messages" in record
    if has_prompt == has_messages:
        raise DataError(f"{where}: give exactly one of 'prompt' (a string) or 'messages' (a list of "
                        "{'role', 'content'}), not " + ("both" if has_prompt else "neither"))
    if has_prompt:
        if not isinstance(record["prompt"], str) or not record["prompt"].strip():
            raise DataError(f"{where}: 'prompt' must be a non-empty string, got {record['prompt']!r:.40}")
        dialog = [{"role": "user", "content": record["prompt"]}]
    else:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}}, got {messages!r:.40}")
        dialog = [dict(m) if isinstance(m, Mapping) else m for m in messages]
    try:
        validate_dialog(dialog)  # type: ignore[arg-type]
    except DialogError as error:
        raise DataError(f"{where}: {error}") from None
    for i, message in enumerate(dialog):
        if set(message) != {"role", "content"}:
            raise DataError(f"{where}: message {i} has fields {sorted(message)}; a message has only 'role' and 'content'")
        if not message["content"].strip():
            raise DataError(f"{where}: message {i} is empty; write its text or remove it")
    return dialog
