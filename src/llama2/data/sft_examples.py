"""SFT dialogs -> token-level training examples, and examples packed into fixed-length rows.

Two templates. "chat" (the default): tokens and the loss mask come from the chat format of the
model core (`chat_format.encode_dialog_for_training`): the loss covers every assistant answer and
its EOS, never the system or user tokens (LLAMA2.md §3). An answer marked `"train": False` stays in
the context with no loss (Ghost Attention trains only the last turn, LLAMA2.md §6.1).

"text": a prompt and its completion as plain text, `BOS prompt completion EOS`, the loss on the
completion and EOS — for tasks a harness scores by asking the model to continue raw text (gsm8k,
humaneval), which never shows `[INST]`. The concatenation is tokenized whole, so the boundary is
tokenized as in the full text; the loss starts where the prompt's own tokens (BOS + prompt, which is
what a harness sends) stop being a prefix of it. Usually that is exactly after the prompt's tokens,
as lm-evaluation-harness splits a context/continuation pair; a token that straddles the boundary
counts as completion.

The paper concatenates all examples to fill each 4096-token window (§3, "Packing"). That lets
tokens of one dialog attend to the dialogs before it in the row. `pack_examples` keeps that as
mode "concatenate", and by default packs "block_diagonal": each dialog's positions restart at 0
and `attention_mask` stops attention at dialog boundaries, so a packed dialog's loss equals its
loss alone, while rows stay as full as concatenation makes them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from llama2.data.sft import SFTDialog
from llama2.errors import ConfigError, DataError, DialogError
from llama2.model.chat_format import encode_dialog_for_training
from llama2.types import Dialog

if TYPE_CHECKING:
    from llama2.model.tokenizer import Tokenizer

__all__ = [
    "TEMPLATES",
    "TRUNCATE_MODES",
    "PACKING_MODES",
    "PAD_ID",
    "SFTExample",
    "PackedRows",
    "build_examples",
    "encode_text_pair",
    "pack_examples",
    "attention_mask",
]

TEMPLATES = ("chat", "text")
TRUNCATE_MODES = ("error", "drop")
PACKING_MODES = ("block_diagonal", "concatenate")
# Filler for the unused end of a row: any valid id works (Llama has no pad token), as padding is
# never attended to by real tokens and never in the loss.
PAD_ID = 0
PAD_SEGMENT = -1


@dataclass(frozen=True)
class SFTExample:
    """One dialog's token ids and its loss mask (True on the tokens to learn), of equal length."""

    ids: list[int]
    loss_mask: list[bool]

    def __len__(self) -> int:
        return len(self.ids)


def build_examples(
    tokenizer: Tokenizer,
    dialogs: Iterable[SFTDialog | Dialog],
    seq_len: int,
    *,
    truncate: str = "error",
    system_prompt: str | None = None,
    template: str = "chat",
) -> list[SFTExample]:
    """Tokenize training dialogs (ending with an assistant turn) into examples of at most `seq_len` ids.

    `template="chat"` encodes them in the chat format; `template="text"` takes dialogs of one user
    turn (the prompt) and one assistant turn (the completion) as plain text (`encode_text_pair`);
    any other dialog is a DataError naming it.

    A dialog of n ids fills n positions of a packed row. A longer one raises DataError naming it
    (its `file:line` for an `SFTDialog`, its index otherwise); `truncate="drop"` leaves such dialogs
    out instead, with one warning that counts them. Cutting a dialog short is not offered: it
    would train on answers without their end. `system_prompt` is used for dialogs without a
    system message (as `encode_dialog_for_training`). Assistant messages with `"train": False`
    get a False mask over their whole answer and its EOS.
    """
    _check_seq_len(seq_len)
    if truncate not in TRUNCATE_MODES:
        raise ConfigError(f"unknown truncate {truncate!r}; use one of {', '.join(TRUNCATE_MODES)}")
    if template not in TEMPLATES:
        raise ConfigError(f"unknown template {template!r}; use one of {', '.join(TEMPLATES)}")
    if template == "text" and system_prompt is not None:
        raise ConfigError("system_prompt belongs to the chat template; remove it or use template: chat")
    examples, dropped, first = [], 0, ""
    for index, item in enumerate(dialogs):
        name, dialog = (item.source, item.messages) if isinstance(item, SFTDialog) else (f"dialog {index}", item)
        if template == "text":
            ids, mask = encode_text_pair(tokenizer, *_prompt_and_completion(dialog, name))
        else:
            try:
                ids, mask = encode_dialog_for_training(tokenizer, dialog, system_prompt=system_prompt)
            except DialogError as exc:
                raise DataError(f"{name}: {exc}") from exc
            mask = _untrain_answers(mask, _trained_answers(dialog, name))
        if len(ids) <= seq_len:
            examples.append(SFTExample(ids, mask))
            continue
        problem = f"{name}: the dialog is {len(ids)} tokens, longer than seq_len {seq_len}"
        if truncate == "error":
            raise DataError(f"{problem}; raise seq_len, shorten or split the dialog, or pass truncate='drop' to skip it")
        dropped, first = dropped + 1, first or problem
    if dropped:
        warnings.warn(f"dropped {dropped} of {index + 1} dialogs longer than seq_len {seq_len}; first: {first}", stacklevel=2)
    return examples


def encode_text_pair(tokenizer: Tokenizer, prompt: str, completion: str) -> tuple[list[int], list[bool]]:
    """`BOS prompt completion EOS` as ids, and the loss mask: True on the completion's tokens and EOS.

    The text is tokenized whole; the completion's tokens are those after the longest common prefix
    with `BOS prompt` tokenized alone, which is what a harness sends before asking for the rest.
    """
    ids = tokenizer.encode(prompt + completion, bos=True, eos=True)
    alone = tokenizer.encode(prompt, bos=True, eos=False)
    shared = 0
    while shared < min(len(alone), len(ids) - 1) and alone[shared] == ids[shared]:
        shared += 1
    return ids, [False] * shared + [True] * (len(ids) - shared)


def _prompt_and_completion(dialog: Dialog, name: str) -> tuple[str, str]:
    """The (prompt, completion) of a one-exchange dialog, for the text template."""
    roles = [message["role"] for message in dialog]
    if roles != ["user", "assistant"]:
        raise DataError(f"{name}: template 'text' trains one prompt and its completion, but this record has "
                        f"{len(dialog)} messages ({', '.join(roles)}); give {{'prompt', 'completion'}} strings "
                        "or use template: chat")
    if dialog[1].get("train", True) is False:
        raise DataError(f"{name}: the completion has \"train\": false, which leaves nothing to learn; remove the record")
    return dialog[0]["content"], dialog[1]["content"]


@dataclass(frozen=True)
class PackedRows:
    """Examples packed into rows of `seq_len` positions; numpy arrays `(N, seq_len)`.

    Next-token training: `tokens[t]` predicts `targets[t]`, and `loss_mask[t]` says whether that
    target counts. `positions` feed the rotary embedding; `segment_ids` number the dialogs of a row
    (0, 1, ...; -1 for the padding at its end, which gets positions of its own from 0). In
    "concatenate" mode all dialogs of a row are segment 0 and positions run 0..seq_len-1.
    """

    tokens: np.ndarray  # (N, T) int32
    targets: np.ndarray  # (N, T) int32
    loss_mask: np.ndarray  # (N, T) bool
    positions: np.ndarray  # (N, T) int32
    segment_ids: np.ndarray  # (N, T) int32
    mode: str

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Row `index` as tensors `(seq_len,)`: int64 ids, positions and segments, a bool mask."""
        return {key: value[0] for key, value in self.batch([index]).items()}

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Rows `indices` stacked as tensors `(B, seq_len)`, ready for `attention_mask` and the model."""
        rows = np.asarray(indices, dtype=np.int64)
        fields = ("tokens", "targets", "positions", "segment_ids")
        batch = {key: torch.from_numpy(getattr(self, key)[rows].astype(np.int64)) for key in fields}
        batch["loss_mask"] = torch.from_numpy(self.loss_mask[rows])
        return batch

    @property
    def num_loss_tokens(self) -> int:
        return int(self.loss_mask.sum())

    @property
    def fill(self) -> float:
        """Share of positions holding real tokens rather than padding (1.0 = no waste)."""
        return float((self.segment_ids != PAD_SEGMENT).mean())


def pack_examples(examples: Sequence[SFTExample], seq_len: int, *, mode: str = "block_diagonal") -> PackedRows:
    """Pack examples into rows of `seq_len` positions, greedy first-fit in the given order.

    Each example goes, whole, into the first row with room for it, else a new row; so the result
    depends only on the examples and their order. Within an example, target t is token t+1 and
    masked by the example's mask there; its last position, and all padding, have no target
    (`PAD_ID`, mask False). An example longer than `seq_len` raises DataError.
    """
    _check_seq_len(seq_len)
    if mode not in PACKING_MODES:
        raise ConfigError(f"unknown packing mode {mode!r}; use one of {', '.join(PACKING_MODES)}")
    if not examples:
        raise DataError("no SFT examples to pack; check the data and seq_len")
    for index, example in enumerate(examples):
        if not 0 < len(example) <= seq_len:
            raise DataError(f"example {index} has {len(example)} tokens; packing needs 1..seq_len={seq_len} (drop or split it)")
    rows = _first_fit([len(e) for e in examples], seq_len)
    n_rows = max(rows) + 1
    tokens = np.full((n_rows, seq_len), PAD_ID, dtype=np.int32)
    targets = np.full((n_rows, seq_len), PAD_ID, dtype=np.int32)
    loss_mask = np.zeros((n_rows, seq_len), dtype=bool)
    positions = np.zeros((n_rows, seq_len), dtype=np.int32)
    segment_ids = np.full((n_rows, seq_len), PAD_SEGMENT, dtype=np.int32)
    used = np.zeros(n_rows, dtype=np.int64)
    for example, row in zip(examples, rows):
        start, n = used[row], len(example)
        end = start + n
        tokens[row, start:end] = example.ids
        targets[row, start : end - 1] = example.ids[1:]
        loss_mask[row, start : end - 1] = example.loss_mask[1:]
        positions[row, start:end] = np.arange(n)
        segment_ids[row, start:end] = segment_ids[row, start - 1] + 1 if start else 0
        used[row] = end
    for row, start in enumerate(used):  # padding: a segment of its own, so no query is left with no key
        positions[row, start:] = np.arange(seq_len - start)
    if mode == "concatenate":
        positions[:] = np.arange(seq_len)
        segment_ids[segment_ids != PAD_SEGMENT] = 0
    return PackedRows(tokens, targets, loss_mask, positions, segment_ids, mode)


def attention_mask(segment_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Boolean mask `(B, 1, T, T)` for `segment_ids, positions (B, T)`; True = query t attends key s.

    A query sees the keys of its own segment at positions up to its own: block-diagonal causal
    attention, the `mask` that `Transformer.forward(tokens, positions=positions, mask=...)` takes.
    With one segment and positions 0..T-1 it is the ordinary causal mask.
    """
    same = segment_ids[:, :, None] == segment_ids[:, None, :]  # (B, T query, T key)
    earlier = positions[:, None, :] <= positions[:, :, None]
    return (same & earlier)[:, None]


def _trained_answers(dialog: Dialog, name: str) -> list[bool]:
    """Each assistant message's `train` flag, in order (True where absent)."""
    flags = []
    for i, message in enumerate(dialog):
        if message["role"] != "assistant":
            continue
        flag = message.get("train", True)
        if not isinstance(flag, bool):
            raise DataError(f"{name}: message {i}: 'train' must be True or False, got {flag!r:.40}")
        flags.append(flag)
    return flags


def _untrain_answers(mask: list[bool], trained: list[bool]) -> list[bool]:
    """`mask` with the answers whose flag is False switched off.

    In the chat format's mask each exchange is a False run (BOS, [INST] ... [/INST]) then a True run
    (the answer and its EOS, never empty), so the k-th True run is exactly the k-th answer.
    """
    if all(trained):
        return mask
    out, answer = list(mask), -1
    for t, keep in enumerate(mask):
        if keep and (t == 0 or not mask[t - 1]):
            answer += 1
        if keep and not trained[answer]:
            out[t] = False
    assert answer == len(trained) - 1, "one True run per assistant answer"
    return out


def _first_fit(lengths: Sequence[int], capacity: int) -> list[int]:
    """Row index of each length under first-fit, in O(n log n) with a max-tree over the rows' free room.

    Leaves are rows (at most one per item; unopened rows have all their room), inner nodes hold the
    largest free room below them, so the leftmost row with room is found by one walk from the root.
    """
    size = 1
    while size < len(lengths):
        size *= 2
    room = [capacity] * (2 * size)
    rows = []
    for length in lengths:
        node = 1
        while node < size:
            node = 2 * node if room[2 * node] >= length else 2 * node + 1
        rows.append(node - size)
        room[node] -= length
        while node > 1:
            node //= 2
            room[node] = max(room[2 * node], room[2 * node + 1])
    return rows


def _check_seq_len(seq_len: int) -> None:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise ConfigError(f"seq_len must be an integer of at least 2, got {seq_len!r}")
