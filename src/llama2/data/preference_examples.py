"""Preference pairs -> token-level examples, and micro-batches of them for reward models and DPO.

Each reply is encoded with its prompt through the chat format (`model.reward.encode_response`):
`<s>[INST] ... [/INST] {reply} </s>`; the prompt ids are the same prefix for both replies. A
micro-batch of B pairs is 2B rows, the B chosen then the B rejected, padded at the end to the
longest (padding comes after every real token, so under causal attention no real token sees it):

    tokens     (2B, T) int64   ids, PAD_ID after each row's end
    lengths    (2B,)   int64   real tokens per row; a reward model reads the row at lengths - 1
    targets    (2B, T) int64   tokens shifted left: position t predicts targets[t] = tokens[t + 1]
    loss_mask  (2B, T) bool    True where targets[t] is a token of the reply (answer and EOS)
    strength   (B,)    int64   index into `preference.STRENGTHS` (for the margin m(r))
    safe       (2B,)   int64   1 safe, 0 unsafe, -1 unlabelled (the safety auxiliary loss)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from llama2.data.preference import STRENGTHS, PreferencePair, read_preferences
from llama2.data.sft import mix_sources
from llama2.data.sft_examples import TRUNCATE_MODES
from llama2.errors import ConfigError, DataError, DialogError
from llama2.model.reward import PAD_ID, encode_response, pad_right

if TYPE_CHECKING:
    from llama2.model.tokenizer import Tokenizer

__all__ = ["PreferenceExample", "mix_preferences", "build_preference_examples", "collate_pairs"]


@dataclass(frozen=True)
class PreferenceExample:
    """One pair's two token sequences (prompt + reply + EOS) and the length of their shared prompt."""

    chosen: list[int]
    rejected: list[int]
    prompt_len: int
    strength: int
    chosen_safe: bool | None = None
    rejected_safe: bool | None = None
    source: str = ""

    @property
    def length(self) -> int:
        return max(len(self.chosen), len(self.rejected))


def mix_preferences(data: Any, *, seed: int = 0, format: str | None = None, shuffle: bool = True) -> list[PreferencePair]:
    """One epoch of a weighted mixture of preference files, as `sft.mix_sft` mixes dialogs: weight w
    takes round(w * n) of a source's n pairs (seeded), then the whole is shuffled with `seed`."""
    return mix_sources(data, lambda source: read_preferences(source, format=format), seed=seed, shuffle=shuffle,
                       what="preference pairs")


def build_preference_examples(
    tokenizer: Tokenizer, pairs: Iterable[PreferencePair], seq_len: int, *, truncate: str = "error"
) -> list[PreferenceExample]:
    """Tokenize pairs into examples whose two sequences have at most `seq_len` ids each.

    A longer pair raises DataError naming its `file:line`; `truncate="drop"` leaves such pairs out
    with one warning that counts them (cutting one short would lose the reply's end, where a reward
    model reads its score).
    """
    if truncate not in TRUNCATE_MODES:
        raise ConfigError(f"unknown truncate {truncate!r}; use one of {', '.join(TRUNCATE_MODES)}")
    examples, dropped, first, total = [], 0, "", 0
    for total, pair in enumerate(pairs, start=1):
        try:
            chosen, prompt_len = encode_response(tokenizer, pair.prompt, pair.chosen)
            rejected, _ = encode_response(tokenizer, pair.prompt, pair.rejected)
        except DialogError as exc:
            raise DataError(f"{pair.source}: {exc}") from exc
        example = PreferenceExample(chosen, rejected, prompt_len, STRENGTHS.index(pair.strength),
                                    pair.chosen_safe, pair.rejected_safe, pair.source)
        if example.length <= seq_len:
            examples.append(example)
            continue
        problem = f"{pair.source}: the pair is {example.length} tokens with its prompt, longer than seq_len {seq_len}"
        if truncate == "error":
            raise DataError(f"{problem}; raise seq_len, shorten the prompt or reply, or pass truncate=drop to skip it")
        dropped, first = dropped + 1, first or problem
    if dropped:
        warnings.warn(f"dropped {dropped} of {total} preference pairs longer than seq_len {seq_len}; first: {first}",
                      stacklevel=2)
    if not examples:
        raise DataError(f"no preference pair fits in seq_len {seq_len}; raise seq_len")
    return examples


def collate_pairs(examples: Sequence[PreferenceExample]) -> dict[str, torch.Tensor]:
    """A micro-batch of pairs as the tensors described in the module docstring."""
    rows = [e.chosen for e in examples] + [e.rejected for e in examples]
    tokens, lengths = pad_right(rows)
    loss_mask = torch.zeros(tokens.shape, dtype=torch.bool)
    for i, (length, prompt_len) in enumerate(zip(lengths.tolist(), [e.prompt_len for e in examples] * 2)):
        loss_mask[i, prompt_len - 1 : length - 1] = True  # targets prompt_len .. length-1: the reply's tokens
    targets = torch.cat([tokens[:, 1:], torch.full((len(rows), 1), PAD_ID, dtype=torch.long)], dim=1)
    labels = [e.chosen_safe for e in examples] + [e.rejected_safe for e in examples]
    return {
        "tokens": tokens,
        "lengths": lengths,
        "targets": targets,
        "loss_mask": loss_mask,
        "strength": torch.tensor([e.strength for e in examples]),
        "safe": torch.tensor([-1 if label is None else int(label) for label in labels]),
    }
