"""Prompt sets for RLHF sampling — rejection sampling, PPO, safety context distillation: the prompts a
policy answers, each tagged as possibly unsafe or not (the paper's `is_safety(p)`: "prompts are
pre-tagged", LLAMA2.md §5.2).

One prompt per record (JSONL or Parquet, read by `data.sft.read_records`):
- `prompt`: a string (one user turn) or a dialog ending with a user turn; or
- `messages`: a dialog; a final assistant turn is dropped, so SFT dialogs serve as prompts; or
- `instruction` (+ `input`): Alpaca's form.
Optional: `id` (default `file:line`), `category` (e.g. a risk category, `illicit_criminal/weapons`)
and `safety` (true/false; default: the tag the source is read with — a recipe's `safety_data`
files are tagged, its `data` files are not — except that category `borderline` means not tagged:
borderline prompts look adversarial but are benign, LLAMA2.md §6.3). Other fields are ignored, so preference-pair files
(`prompt`, `chosen`, `rejected`, ...) and the safety evaluation sets serve as prompt sets as they
are. A prompt repeated within one file is kept once (pair files repeat prompts), so weights in a
mixture (`{file: weight}`, as SFT data) are proportions of distinct prompts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llama2.data.sft import Source, mix_sources, read_records, source_name
from llama2.errors import DataError, DialogError
from llama2.model.chat_format import validate_dialog
from llama2.types import Dialog

__all__ = ["BORDERLINE", "RLPrompt", "read_prompts", "mix_prompts"]

BORDERLINE = "borderline"


@dataclass(frozen=True)
class RLPrompt:
    """A dialog to answer (ending with a user turn), where it came from, and its tags."""

    id: str
    messages: Dialog
    category: str | None = None
    safety: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "messages": self.messages, "category": self.category, "safety": self.safety}


def read_prompts(source: Source, *, safety: bool = False) -> list[RLPrompt]:
    """The distinct prompts of one source, in file order; `safety` is the tag of records without one."""
    prompts, seen = [], set()
    for where, record in read_records(source):
        prompt = _prompt(record, where, safety)
        key = json.dumps(prompt.messages, sort_keys=True)
        if key not in seen:
            seen.add(key)
            prompts.append(prompt)
    if not prompts:
        raise DataError(f"{source_name(source)}: holds no prompts; write one record with a 'prompt' per line")
    return prompts


def mix_prompts(data: Any, *, safety: bool = False, seed: int = 0, shuffle: bool = True) -> list[RLPrompt]:
    """A weighted mixture of prompt sources (the forms SFT's `data` takes), seeded like `mix_sft`."""
    return mix_sources(data, lambda source: read_prompts(source, safety=safety), seed=seed, shuffle=shuffle, what="prompts")


def _prompt(record: Mapping[str, Any], where: str, default_safety: bool) -> RLPrompt:
    dialog = _dialog(record, where)
    try:
        validate_dialog(dialog)
    except DialogError as error:
        raise DataError(f"{where}: {error}") from None
    if any(not m["content"].strip() for m in dialog if m["role"] == "user"):
        raise DataError(f"{where}: a user message is empty; write the prompt or remove the record")
    category = record.get("category")
    if category is not None and not isinstance(category, str):
        raise DataError(f"{where}: 'category' must be a string, got {category!r:.40}")
    safety = record.get("safety", default_safety and category != BORDERLINE)
    if not isinstance(safety, bool):
        raise DataError(f"{where}: 'safety' must be true or false, got {safety!r:.40}")
    prompt_id = record.get("id", where)
    return RLPrompt(str(prompt_id), dialog, category, safety)


def _dialog(record: Mapping[str, Any], where: str) -> Dialog:
    if "prompt" in record:
        value = record["prompt"]
        if isinstance(value, str):
            return [{"role": "user", "content": value}]
        return _messages(value, where, "prompt")
    if "messages" in record:
        dialog = _messages(record["messages"], where, "messages")
        return dialog[:-1] if len(dialog) > 1 and dialog[-1]["role"] == "assistant" else dialog
    if "instruction" in record:
        instruction, extra = record["instruction"], record.get("input") or ""
        if not isinstance(instruction, str) or not isinstance(extra, str):
            raise DataError(f"{where}: 'instruction' and 'input' must be strings")
        return [{"role": "user", "content": f"{instruction}\n\n{extra}" if extra.strip() else instruction}]
    keys = ", ".join(sorted(record)) or "none"
    raise DataError(f"{where}: no prompt in the record (fields: {keys}); give 'prompt', 'messages' or 'instruction'")


def _messages(value: Any, where: str, field: str) -> Dialog:
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise DataError(f"{where}: field {field!r} must be a string or a non-empty list of {{'role', 'content'}} messages")
    messages = []
    for i, message in enumerate(value):
        fields = (message.get("role"), message.get("content")) if isinstance(message, Mapping) else (None, None)
        if not all(isinstance(field, str) for field in fields):
            raise DataError(f"{where}: field {field!r}: message {i} needs a 'role' and a 'content' string")
        messages.append({"role": message["role"], "content": message["content"]})
    return messages  # type: ignore[return-value]
