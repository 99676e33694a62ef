"""Preference pairs for reward modelling: a prompt dialog, a chosen and a rejected reply (LLAMA2.md §4).

Two record forms, told apart per record (or forced with `format=`):

- `pair`: `{"prompt": str | messages, "chosen": str, "rejected": str, "strength": ..., "category":
  str, "chosen_safe": bool, "rejected_safe": bool}`; only the first three are required, `strength`
  defaults to "better" (the paper's four-level rating, §3.2.1) and the rest to None;
- `hh_rlhf`: Anthropic HH-RLHF's `{"chosen": transcript, "rejected": transcript}`, each transcript
  `"\\n\\nHuman: ...\\n\\nAssistant: ..."`; both share every turn but the last assistant reply.

Sources and errors are those of `llama2.data.sft` (JSONL, Parquet, `datasets`; `file:line` and the
field in every `DataError`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llama2.data.sft import Source, parse_records
from llama2.errors import DataError, DialogError
from llama2.model.chat_format import SPECIAL_TAGS, validate_dialog
from llama2.types import Dialog

__all__ = [
    "PREFERENCE_FORMATS",
    "STRENGTHS",
    "DEFAULT_STRENGTH",
    "MARGINS",
    "PreferencePair",
    "margin",
    "pair_from_record",
    "parse_hh_transcript",
    "read_preferences",
]

PREFERENCE_FORMATS = ("pair", "hh_rlhf")
STRENGTHS = ("significantly_better", "better", "slightly_better", "negligibly_better")
DEFAULT_STRENGTH = "better"

# The reward model's margin m(r) per rating (Llama 2, Table 27; loss -log σ(r_c - r_r - m(r))).
# The paper ablates both; which one the final reward models used is not stated (LLAMA2.md §4.2).
MARGINS: dict[str, dict[str, float]] = {
    "small": {"significantly_better": 1.0, "better": 2 / 3, "slightly_better": 1 / 3, "negligibly_better": 0.0},
    "large": {"significantly_better": 3.0, "better": 2.0, "slightly_better": 1.0, "negligibly_better": 0.0},
}

_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}
_SAFETY_FIELDS = ("chosen_safe", "rejected_safe")


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: `prompt` is a dialog ending with a user turn; `chosen` and `rejected` are
    the two assistant replies to it. `source` is `file:line` for error messages."""

    prompt: Dialog
    chosen: str
    rejected: str
    strength: str = DEFAULT_STRENGTH
    category: str | None = None
    chosen_safe: bool | None = None
    rejected_safe: bool | None = None
    source: str = ""


def margin(strength: str, variant: str = "small") -> float:
    """The margin m(r) of Table 27 for a rating, in the "small" or "large" variant."""
    if variant not in MARGINS:
        raise DataError(f"unknown margin variant {variant!r}; use one of {', '.join(MARGINS)}")
    if strength not in MARGINS[variant]:
        raise DataError(f"unknown strength {strength!r}; use one of {', '.join(STRENGTHS)}")
    return MARGINS[variant][strength]


def read_preferences(
    source: Source, *, format: str | None = None, split: str = "train", on_error: str = "raise"
) -> list[PreferencePair]:
    """All preference pairs of one source, in file order (`on_error` as in `sft.read_sft`)."""
    return parse_records(
        source, lambda record, where: pair_from_record(record, where=where, format=format),
        split=split, on_error=on_error, bad="preference records", empty="preference pairs; it needs at least one",
    )


def pair_from_record(record: Mapping[str, Any], *, where: str, format: str | None = None) -> PreferencePair:
    """The checked pair a record holds: a valid prompt dialog and two different, non-empty replies."""
    fmt = format or ("pair" if "prompt" in record else "hh_rlhf")
    if fmt == "pair":
        return _from_pair(record, where)
    if fmt == "hh_rlhf":
        return _from_hh(record, where)
    raise DataError(f"unknown preference format {fmt!r}; use one of {', '.join(PREFERENCE_FORMATS)} (or None to detect)")


def parse_hh_transcript(text: str, *, where: str, field: str) -> Dialog:
    """An HH-RLHF transcript `"\\n\\nHuman: ...\\n\\nAssistant: ..."` as a dialog (contents stripped)."""
    parts = _HH_TURN.split(text if text.startswith("\n\n") else "\n\n" + text)
    if parts[0].strip() or len(parts) < 3:
        raise DataError(f"{where}: field {field!r} is not an HH-RLHF transcript; it must start with 'Human: '")
    return [{"role": _HH_ROLES[role], "content": content.strip()} for role, content in zip(parts[1::2], parts[2::2])]  # type: ignore[misc]


def _from_pair(record: Mapping[str, Any], where: str) -> PreferencePair:
    prompt = _prompt(record, where)
    chosen, rejected = _reply(record, "chosen", where), _reply(record, "rejected", where)
    strength = record.get("strength", DEFAULT_STRENGTH)
    if strength not in STRENGTHS:
        raise DataError(f"{where}: field 'strength' is {strength!r}; use one of {', '.join(STRENGTHS)}")
    category = record.get("category")
    if category is not None and not isinstance(category, str):
        raise DataError(f"{where}: field 'category' must be a string, got {type(category).__name__}")
    safe = {}
    for field in _SAFETY_FIELDS:
        safe[field] = record.get(field)
        if safe[field] is not None and not isinstance(safe[field], bool):
            raise DataError(f"{where}: field {field!r} must be true or false, got {safe[field]!r:.40}")
    return _pair(prompt, chosen, rejected, where, strength=strength, category=category, **safe)


def _from_hh(record: Mapping[str, Any], where: str) -> PreferencePair:
    dialogs = {}
    for field in ("chosen", "rejected"):
        text = record.get(field)
        if not isinstance(text, str):
            problem = "no" if text is None else f"a {type(text).__name__} in"
            raise DataError(f"{where}: {problem} field {field!r}; HH-RLHF records hold two transcript strings, 'chosen' and 'rejected'")
        dialogs[field] = parse_hh_transcript(text, where=where, field=field)
    chosen, rejected = dialogs["chosen"], dialogs["rejected"]
    for field, dialog in dialogs.items():
        if dialog[-1]["role"] != "assistant":
            raise DataError(f"{where}: field {field!r} ends with a Human turn; it must end with the 'Assistant:' reply")
    if chosen[:-1] != rejected[:-1]:
        raise DataError(
            f"{where}: fields 'chosen' and 'rejected' differ before their last 'Assistant:' turn; "
            "HH-RLHF pairs share the dialog and differ only in the final reply"
        )
    return _pair(chosen[:-1], chosen[-1]["content"], rejected[-1]["content"], where, prompt_field="chosen")


def _prompt(record: Mapping[str, Any], where: str) -> Dialog:
    value = record.get("prompt")
    if isinstance(value, str):
        prompt: Dialog = [{"role": "user", "content": value}]
    elif isinstance(value, list) and value and all(isinstance(m, Mapping) for m in value):
        prompt = list(value)
    else:
        raise DataError(f"{where}: field 'prompt' must be a string or a list of {{'role', 'content'}} messages, got {value!r:.60}")
    return prompt


def _reply(record: Mapping[str, Any], field: str, where: str) -> str:
    value = record.get(field)
    if not isinstance(value, str):
        problem = "is missing" if value is None else f"must be a string, got {type(value).__name__}"
        raise DataError(f"{where}: field {field!r} {problem}; write the assistant reply as text")
    return value


def _pair(
    prompt: Dialog, chosen: str, rejected: str, where: str, *, prompt_field: str = "prompt", **labels: Any
) -> PreferencePair:
    """Check the prompt dialog and both replies, then build the pair (messages cut to role and content)."""
    try:
        validate_dialog(prompt)
    except DialogError as exc:
        raise DataError(f"{where}: field {prompt_field!r}: {exc}") from exc
    for field, reply in (("chosen", chosen), ("rejected", rejected)):
        if not reply.strip():
            raise DataError(f"{where}: field {field!r} is an empty reply; write it or remove the record")
        for tag in SPECIAL_TAGS:
            if tag in reply:
                raise DataError(f"{where}: field {field!r} contains the special tag {tag!r}, reserved by the chat format; remove it")
    if chosen.strip() == rejected.strip():
        raise DataError(f"{where}: fields 'chosen' and 'rejected' are the same reply; a comparison needs two different ones")
    prompt = [{"role": m["role"], "content": m["content"]} for m in prompt]
    return PreferencePair(prompt, chosen, rejected, source=where, **labels)
