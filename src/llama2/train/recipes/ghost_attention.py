"""Ghost Attention (GAtt; Llama 2 §3.3, A.3.5; LLAMA2.md §6.1): SFT data that teaches a chat model
to keep following an instruction given once, and the measurement of whether it does.

Building the data (`build_gatt_dialogs`), for multi-turn dialogs whose user turns are given:
1. draw an instruction per dialog (`constraints.draw_instructions`: hobby, language, figure;
   shortened in half of the cases);
2. put it in EVERY user message and sample the assistant replies turn by turn with the one engine,
   all dialogs batched per turn (`Llama.chat`);
3. write the training dialog with the instruction only in the first turn and every earlier
   assistant turn marked `"train": false`, so only the last reply is learned (the paper zeroes the
   loss on all tokens of earlier turns, to avoid a mismatch between context and sample).
The result is JSONL in the SFT `messages` format, so `llama2 train sft ... data=gatt.jsonl` trains
on it (`data.sft` reads the flag, `data.sft_examples` masks those answers).

Where the instruction goes (`placement`): "user" (the default) prefixes it to the first user
message, as the paper does, with the same joining (`with_instruction`) as while sampling, so turn 1
of the training dialog is the very text the replies were sampled after. "system" puts it in a
system message instead (the chat format folds that into the first turn inside `<<SYS>>` tags), for
models meant to take their constraints as a system prompt.

Measuring (`measure_adherence`): the instruction is given once (first turn, by `placement`), the
dialog rolls on with the model's own replies, and the reply at each turn k of `turns` is judged
(`constraints.keyword_judge` or any `(reply, instruction) -> bool`). The paper reports 100% at turns
2/4/6/20 with GAtt against 100/10/0/0 without.

Dialogs stop early rather than overflow the context window: a turn whose prompt plus
`max_new_tokens` would not fit is not sampled, and that dialog ends there (measurement counts how
many dialogs were judged at each turn).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from llama2.atomic import atomic_file
from llama2.data.sft import dialog_from_record, read_records
from llama2.errors import ConfigError, DataError
from llama2.model.chat_format import SPECIAL_TAGS, encode_dialog
from llama2.model.config import ModelArgs
from llama2.model.tokenizer import Tokenizer
from llama2.train.constraints import Instruction, Judge, draw_instructions, keyword_judge
from llama2.types import Dialog, GenerationResult

__all__ = [
    "PLACEMENTS",
    "ChatModel",
    "GattDialog",
    "Adherence",
    "load_user_turns",
    "with_instruction",
    "training_dialog",
    "build_gatt_dialogs",
    "write_gatt_jsonl",
    "planned_replies",
    "measure_adherence",
]

PLACEMENTS = ("user", "system")
USER_TURNS_ASSET = "assets/gatt/user_turns.jsonl"
Progress = Callable[[int], None]


class ChatModel(Protocol):
    """What GAtt needs of a model: `llama2.api.Llama` (or a wrapper around it)."""

    tokenizer: Tokenizer | None

    @property
    def args(self) -> ModelArgs: ...

    def chat(self, dialogs: Sequence[Dialog], **sampling: Any) -> list[GenerationResult]: ...


@dataclass(frozen=True)
class GattDialog:
    """One GAtt training dialog (`messages`: the instruction in turn 1 only, earlier answers
    `"train": False`), its instruction, and the context its replies were sampled in (`sampled`: the
    instruction in every user turn)."""

    messages: Dialog
    instruction: Instruction
    sampled: Dialog

    def to_record(self) -> dict[str, Any]:
        """The JSONL record: SFT `messages`, plus the instruction under `gatt` (ignored by SFT)."""
        return {"messages": self.messages, "gatt": self.instruction.to_dict()}


@dataclass(frozen=True)
class Adherence:
    """How many dialogs still followed their instruction at each turn (`adherent`), of how many
    reached that turn (`judged`), and the rolled-out dialogs themselves (`transcripts`)."""

    turns: tuple[int, ...]
    adherent: dict[int, int]
    judged: dict[int, int]
    transcripts: list[Dialog]

    @property
    def percent(self) -> dict[int, float | None]:
        """Turn -> % adherent (None where no dialog reached the turn)."""
        return {k: 100.0 * self.adherent[k] / self.judged[k] if self.judged[k] else None for k in self.turns}

    def to_dict(self) -> dict[str, Any]:
        return {str(k): {"percent": self.percent[k], "adherent": self.adherent[k], "judged": self.judged[k]}
                for k in self.turns}


@dataclass(frozen=True)
class _Sampling:
    max_new_tokens: int
    temperature: float
    top_p: float
    batch_size: int

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError(f"max_new_tokens and batch_size must be at least 1, got {self.max_new_tokens} and {self.batch_size}")


@dataclass
class _Rollout:
    """One dialog being sampled: the user turns as the model reads them, the replies so far."""

    users: list[str]
    system: str | None
    planned: int
    replies: list[str] = field(default_factory=list)
    done: bool = False

    def dialog(self) -> Dialog:
        """The dialog so far, ending with the last reply."""
        messages: Dialog = [{"role": "system", "content": self.system}] if self.system is not None else []
        for user, reply in zip(self.users, self.replies):
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        return messages

    def prompt(self) -> Dialog:
        return self.dialog() + [{"role": "user", "content": self.users[len(self.replies)]}]


# ---- user turns ------------------------------------------------------------------------------


def load_user_turns(source: str | Path | None = None, *, split: str | None = "train") -> list[list[str]]:
    """The user turns of multi-turn dialogs, one list per dialog.

    With no `source`, the shipped set (60 hand-written dialogs of 6-8 generic turns; 40 "train",
    20 "test"). A file holds `{"turns": [str, ...]}` records (optionally with a "split") or any SFT
    record (`messages`, prompt/completion, Alpaca), whose user messages are taken. `split` keeps
    the records of that split (records without one are always kept); None keeps all.
    """
    if source is None:
        with as_file(files("llama2").joinpath(USER_TURNS_ASSET)) as path:
            return load_user_turns(path, split=split)
    out = []
    for where, record in read_records(source):
        if split is not None and record.get("split", split) != split:
            continue
        if "turns" in record:
            out.append(_turns(record["turns"], where))
        else:
            out.append([m["content"] for m in dialog_from_record(record, where=where) if m["role"] == "user"])
    if not out:
        raise DataError(f"{source}: no dialogs" + (f" in split {split!r}" if split else "") + "; check the file and --split")
    return out


def _turns(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field 'turns' must be a non-empty list of user messages")
    for i, turn in enumerate(value):
        if not isinstance(turn, str) or not turn.strip():
            raise DataError(f"{where}: field 'turns': turn {i} must be non-empty text, got {turn!r:.40}")
        tag = next((t for t in SPECIAL_TAGS if t in turn), None)
        if tag:
            raise DataError(f"{where}: field 'turns': turn {i} contains the special tag {tag!r}, reserved by the chat format")
    return list(value)


# ---- building ------------------------------------------------------------------------------


def with_instruction(user: str, instruction: str) -> str:
    """A user message carrying the instruction: instruction first, then the message, one blank line apart."""
    return f"{instruction}\n\n{user}"


def training_dialog(users: Sequence[str], replies: Sequence[str], instruction: str, *, placement: str = "user") -> Dialog:
    """The GAtt training dialog (LLAMA2.md §6.1 step 3): the instruction only in the first turn,
    every assistant turn but the last marked `"train": False`."""
    _check_placement(placement)
    if not replies or len(users) < len(replies):
        raise ConfigError(f"a training dialog needs 1..{len(users)} replies for {len(users)} user turns, got {len(replies)}")
    if placement == "system":
        messages: Dialog = [{"role": "system", "content": instruction}]
        first = users[0]
    else:
        messages, first = [], with_instruction(users[0], instruction)
    for i, reply in enumerate(replies):
        messages.append({"role": "user", "content": first if i == 0 else users[i]})
        answer: dict[str, Any] = {"role": "assistant", "content": reply}
        if i < len(replies) - 1:
            answer["train"] = False
        messages.append(answer)  # type: ignore[arg-type]
    return messages


def build_gatt_dialogs(
    model_or_llama: ChatModel | str | Path,
    dialogs: Sequence[Sequence[str]],
    *,
    seed: int,
    instructions: Sequence[Instruction] | None = None,
    turns: int | None = None,
    placement: str = "user",
    max_new_tokens: int = 64,
    temperature: float = 0.7,
    top_p: float = 0.9,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> list[GattDialog]:
    """GAtt training dialogs from the user turns of `dialogs` (LLAMA2.md §6.1 steps 1-3).

    Each dialog gets `instructions[i]` (default: drawn with `seed`) in every user turn and at most
    `turns` replies sampled by the model. A reply cut off by `max_new_tokens` is trimmed to its last
    full sentence where it has one (an answer learned with an EOS mid-sentence teaches stopping
    mid-sentence). An empty reply, or a turn that would overflow the context, ends that dialog;
    dialogs left with no reply are dropped, so the result may be shorter than `dialogs`.
    `progress(n)` is called as replies are sampled (total: `planned_replies`).
    """
    llama = _chat_model(model_or_llama)
    users = _checked_dialogs(dialogs)
    _check_placement(placement)
    instructions = _instructions(instructions, len(users), seed)
    limit = _turn_limit(turns)
    rollouts = [_Rollout([with_instruction(u, ins.text) for u in turns_of], None, min(limit or len(turns_of), len(turns_of)))
                for turns_of, ins in zip(users, instructions)]
    _roll_out(llama, rollouts, _Sampling(max_new_tokens, temperature, top_p, batch_size), seed=seed,
              keep_empty=False, trim=True, progress=progress)
    return [GattDialog(training_dialog(u, r.replies, ins.text, placement=placement), ins, r.dialog())
            for u, ins, r in zip(users, instructions, rollouts) if r.replies]


def write_gatt_jsonl(dialogs: Sequence[GattDialog], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the dialogs as SFT JSONL (one `to_record()` per line), atomically."""
    with atomic_file(Path(path), overwrite=overwrite) as tmp:
        tmp.write_text("".join(json.dumps(d.to_record(), ensure_ascii=False) + "\n" for d in dialogs), encoding="utf-8")
    return Path(path)


def planned_replies(dialogs: Sequence[Sequence[str]], turns: int | None) -> int:
    """How many replies building (or measuring up to turn `turns`) samples at most: a progress total."""
    return sum(min(turns or len(d), len(d)) for d in dialogs)


# ---- measuring -----------------------------------------------------------------------------


def measure_adherence(
    model_or_llama: ChatModel | str | Path,
    dialogs: Sequence[Sequence[str]],
    instructions: Sequence[Instruction],
    turns: Sequence[int] = (2, 4, 6),
    judge: Judge = keyword_judge,
    *,
    placement: str = "user",
    seed: int = 0,
    max_new_tokens: int = 64,
    temperature: float = 0.6,
    top_p: float = 0.9,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> Adherence:
    """Does the reply at turn k still follow an instruction given once? (LLAMA2.md §6.1, evaluation)

    Dialog i gets `instructions[i]` in its first turn only (prefixed to the first user message, or
    as a system message), then rolls forward with the model's own replies up to turn `max(turns)`;
    `judge(reply, instruction)` decides at each turn of `turns`. Dialogs with fewer user turns, or
    that would overflow the context, are judged only at the turns they reach.
    """
    llama = _chat_model(model_or_llama)
    users = _checked_dialogs(dialogs)
    _check_placement(placement)
    if len(instructions) != len(users):
        raise ConfigError(f"got {len(users)} dialogs but {len(instructions)} instructions; give one per dialog")
    wanted = tuple(sorted(set(turns)))
    if not wanted or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in wanted):
        raise ConfigError(f"turns must be positive whole numbers (e.g. 2,4,6), got {list(turns)}")
    rollouts = [_Rollout(_first_turn_only(u, ins.text, placement), ins.text if placement == "system" else None,
                         min(wanted[-1], len(u))) for u, ins in zip(users, instructions)]
    _roll_out(llama, rollouts, _Sampling(max_new_tokens, temperature, top_p, batch_size), seed=seed,
              keep_empty=True, trim=False, progress=progress)
    reached = {k: [(r, ins) for r, ins in zip(rollouts, instructions) if len(r.replies) >= k] for k in wanted}
    return Adherence(
        turns=wanted,
        adherent={k: sum(bool(judge(r.replies[k - 1], ins)) for r, ins in reached[k]) for k in wanted},
        judged={k: len(reached[k]) for k in wanted},
        transcripts=[r.dialog() for r in rollouts],
    )


def _first_turn_only(users: Sequence[str], instruction: str, placement: str) -> list[str]:
    return list(users) if placement == "system" else [with_instruction(users[0], instruction), *users[1:]]


# ---- sampling --------------------------------------------------------------------------------


def _roll_out(llama: ChatModel, rollouts: list[_Rollout], sampling: _Sampling, *, seed: int, keep_empty: bool,
              trim: bool, progress: Progress | None) -> None:
    """Sample every rollout's replies turn by turn (LLAMA2.md §6.1 step 2), the dialogs of one turn
    batched `batch_size` per `chat` call, each call seeded from (seed, turn, first row): the same
    seed and batch size give the same replies."""
    assert llama.tokenizer is not None
    advance = progress or (lambda n: None)
    window = llama.args.max_seq_len
    for turn in range(max((r.planned for r in rollouts), default=0)):
        active = []
        for r in rollouts:
            if r.done or turn >= r.planned:
                r.done = True
                continue
            prompt = r.prompt()
            if len(encode_dialog(llama.tokenizer, prompt)) + sampling.max_new_tokens > window:
                r.done = True
                advance(r.planned - turn)  # these replies will never be sampled
                continue
            active.append((r, prompt))
        for start in range(0, len(active), sampling.batch_size):
            chunk = active[start : start + sampling.batch_size]
            with _seeded(seed, turn, start):
                results = llama.chat([prompt for _, prompt in chunk], max_new_tokens=sampling.max_new_tokens,
                                     temperature=sampling.temperature, top_p=sampling.top_p, stop=SPECIAL_TAGS)
            for (r, _), result in zip(chunk, results):
                text = _trimmed(result) if trim else result.text.strip()
                if text or keep_empty:
                    r.replies.append(text)
                else:
                    r.done = True
                    advance(r.planned - turn - 1)
            advance(len(chunk))


@contextmanager
def _seeded(*key: int) -> Iterator[None]:
    """Seed torch's global RNG from `key` inside the block, and restore it after.

    `chat` takes one seed for all its dialogs, and one seed gives every row the same noise, so
    similar prompts would get near-identical replies. Unseeded rows draw from the global RNG one
    after another; forking it keeps them independent and the run reproducible, leaking nothing.
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))
        yield


def _trimmed(result: GenerationResult) -> str:
    """The reply, cut after its last sentence end if `max_new_tokens` cut it off mid-sentence."""
    text = result.text.strip()
    if result.finish_reason != "length":
        return text
    match = re.match(r".*[.!?](?=\s|$)", text, re.DOTALL)
    return match.group(0) if match else text


# ---- checks --------------------------------------------------------------------------------


def _chat_model(model_or_llama: ChatModel | str | Path) -> ChatModel:
    if isinstance(model_or_llama, (str, Path)):
        from llama2.api import Llama

        model_or_llama = Llama.from_pretrained(model_or_llama)
    if getattr(model_or_llama, "tokenizer", None) is None:
        raise ConfigError("Ghost Attention chats with the model, which needs a tokenizer; load a checkpoint that has one")
    return model_or_llama


def _checked_dialogs(dialogs: Sequence[Sequence[str]]) -> list[list[str]]:
    if not dialogs:
        raise ConfigError("no dialogs given; pass the user turns of at least one dialog")
    return [_turns(list(d) if not isinstance(d, str) else d, f"dialog {i}") for i, d in enumerate(dialogs)]


def _instructions(given: Sequence[Instruction] | None, count: int, seed: int) -> list[Instruction]:
    if given is None:
        return draw_instructions(count, seed=seed)
    if len(given) != count:
        raise ConfigError(f"got {count} dialogs but {len(given)} instructions; give one per dialog")
    return list(given)


def _turn_limit(turns: int | None) -> int | None:
    if turns is not None and (isinstance(turns, bool) or not isinstance(turns, int) or turns < 1):
        raise ConfigError(f"turns must be a whole number of at least 1, got {turns!r}")
    return turns


def _check_placement(placement: str) -> None:
    if placement not in PLACEMENTS:
        raise ConfigError(f"unknown placement {placement!r}; use one of {', '.join(PLACEMENTS)}")
