"""SFT examples: the loss mask covers exactly the answers; packing is first-fit and deterministic; a
packed dialog's loss equals its loss alone under the block-diagonal mask (and not under concatenation)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llama2.data.sft import SFTDialog
from llama2.data.sft_examples import (
    PAD_ID,
    SFTExample,
    attention_mask,
    build_examples,
    pack_examples,
)
from llama2.errors import ConfigError, DataError
from llama2.model.config import get_preset
from llama2.model.tokenizer import Tokenizer
from llama2.model.transformer import Transformer

MULTI_TURN = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And a quick brown fox?"},
    {"role": "assistant", "content": "It jumps over the lazy dog."},
    {"role": "user", "content": "Thanks"},
    {"role": "assistant", "content": "def add(a, b): return a + b"},
]
DIALOGS = [
    [{"role": "user", "content": "Once upon a time?"}, {"role": "assistant", "content": "There was a little robot."}],
    MULTI_TURN,
    [{"role": "user", "content": "Llama 2 is?"}, {"role": "assistant", "content": "A family of language models."}],
]


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_path: Path) -> Tokenizer:
    return Tokenizer(tiny_tokenizer_path)


def runs(mask: list[bool]) -> list[tuple[bool, int, int]]:
    """Maximal runs of equal mask values as (value, start, end)."""
    out, start = [], 0
    for value, group in itertools.groupby(mask):
        n = len(list(group))
        out.append((value, start, start + n))
        start += n
    return out


def test_loss_mask_covers_exactly_each_answer_and_its_eos(tok):
    (example,) = build_examples(tok, [MULTI_TURN], seq_len=256)
    assert len(example.ids) == len(example.loss_mask)
    learned = [(start, end) for value, start, end in runs(example.loss_mask) if value]
    answers = [m["content"] for m in MULTI_TURN if m["role"] == "assistant"]
    assert len(learned) == len(answers)
    for (start, end), answer in zip(learned, answers):
        assert example.ids[end - 1] == tok.eos_id
        assert tok.decode(example.ids[start : end - 1]).strip() == answer
        if end < len(example.ids):
            assert example.ids[end] == tok.bos_id  # the next exchange starts right after the EOS
    prompt_text = tok.decode([i for i, m in zip(example.ids, example.loss_mask) if not m])
    for message in MULTI_TURN:
        if message["role"] != "assistant":
            assert message["content"] in prompt_text
    assert not any(answer in prompt_text for answer in answers)
    assert example.ids[0] == tok.bos_id and not example.loss_mask[0]


def test_too_long_dialogs_raise_with_their_source_or_are_dropped_with_a_count(tok):
    named = [SFTDialog(d, f"data.jsonl:{i + 1}") for i, d in enumerate(DIALOGS)]
    lengths = [len(e) for e in build_examples(tok, named, seq_len=256)]
    limit = sorted(lengths)[1]
    longest = lengths.index(max(lengths))
    with pytest.raises(DataError, match=rf"data.jsonl:{longest + 1}: the dialog is {max(lengths)} tokens, longer than seq_len {limit}"):
        build_examples(tok, named, seq_len=limit)
    with pytest.warns(UserWarning, match=rf"dropped 1 of 3 dialogs longer than seq_len {limit}; first: data.jsonl:{longest + 1}"):
        kept = build_examples(tok, named, seq_len=limit, truncate="drop")
    assert len(kept) == 2
    with pytest.raises(DataError, match="dialog 0: message 2: the dialog ends with role 'user'"):
        build_examples(tok, [DIALOGS[0] + [{"role": "user", "content": "more"}]], seq_len=256)
    with pytest.raises(ConfigError, match="unknown truncate 'cut'"):
        build_examples(tok, DIALOGS, seq_len=256, truncate="cut")


def example(n: int, start: int = 10) -> SFTExample:
    ids = list(range(start, start + n))
    return SFTExample(ids, [i % 2 == 1 for i in range(n)])


def test_first_fit_packing_layout():
    examples = [example(5, 10), example(4, 20), example(3, 30), example(2, 40), example(8, 50)]
    rows = pack_examples(examples, seq_len=8)
    # First fit: [5, 3] | [4, 2] | [8]
    assert len(rows) == 3
    assert rows.tokens[0].tolist() == [10, 11, 12, 13, 14, 30, 31, 32]
    assert rows.tokens[1].tolist() == [20, 21, 22, 23, 40, 41, PAD_ID, PAD_ID]
    assert rows.positions[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert rows.positions[1].tolist() == [0, 1, 2, 3, 0, 1, 0, 1]
    assert rows.segment_ids[1].tolist() == [0, 0, 0, 0, 1, 1, -1, -1]
    # Target t is token t+1 of the same example; an example's last position and padding have none.
    assert rows.targets[0].tolist() == [11, 12, 13, 14, PAD_ID, 31, 32, PAD_ID]
    # Example masks are [F T F T F] and [F T F]; the target mask is each shifted left by one.
    assert rows.loss_mask[0].tolist() == [True, False, True, False, False, True, False, False]
    assert not rows.loss_mask[1, 5:].any()
    assert rows.fill == pytest.approx(22 / 24)
    assert rows.num_loss_tokens == sum(sum(e.loss_mask[1:]) for e in examples)
    again = pack_examples(examples, seq_len=8)
    assert all(np.array_equal(getattr(rows, k), getattr(again, k)) for k in ("tokens", "targets", "loss_mask", "positions", "segment_ids"))
    row = rows[1]
    assert row["tokens"].shape == (8,) and row["tokens"].dtype == torch.int64 and row["loss_mask"].dtype == torch.bool


def test_concatenate_mode_is_one_segment_with_running_positions():
    rows = pack_examples([example(5), example(2)], seq_len=8, mode="concatenate")
    assert rows.positions[0].tolist() == list(range(8))
    assert rows.segment_ids[0].tolist() == [0] * 7 + [-1]
    mask = attention_mask(*(rows.batch([0])[k] for k in ("segment_ids", "positions")))
    assert torch.equal(mask[0, 0, :7, :7], torch.ones(7, 7, dtype=torch.bool).tril())


def test_pack_rejects_bad_input():
    with pytest.raises(DataError, match="example 1 has 9 tokens; packing needs 1..seq_len=8"):
        pack_examples([example(2), example(9)], seq_len=8)
    with pytest.raises(ConfigError, match="unknown packing mode 'greedy'"):
        pack_examples([example(2)], seq_len=8, mode="greedy")
    with pytest.raises(DataError, match="no SFT examples"):
        pack_examples([], seq_len=8)


def test_attention_mask_is_block_diagonal_causal():
    segments = torch.tensor([[0, 0, 1, 1, 1, -1]])
    positions = torch.tensor([[0, 1, 0, 1, 2, 0]])
    mask = attention_mask(segments, positions)
    assert mask.shape == (1, 1, 6, 6) and mask.dtype == torch.bool
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],
    ], dtype=torch.bool)
    assert torch.equal(mask[0, 0], expected)


@pytest.fixture(scope="module")
def model() -> Transformer:
    model = Transformer(get_preset("tiny"))
    model.init_weights(torch.Generator().manual_seed(0))
    return model.eval()


def masked_loss_sums(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-position masked cross-entropy `(B, T)`."""
    losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)
    return losses * mask


@torch.no_grad()
def test_packed_loss_equals_unpacked_and_concatenation_differs(tok, model):
    examples = build_examples(tok, DIALOGS, seq_len=256)
    alone = []
    for e in examples:
        ids = torch.tensor([e.ids])
        logits = model(ids[:, :-1])
        alone.append(masked_loss_sums(logits, ids[:, 1:], torch.tensor([e.loss_mask[1:]])).sum())

    seq_len = sum(len(e) for e in examples) + 5  # one row with padding at the end
    for mode in ("block_diagonal", "concatenate"):
        rows = pack_examples(examples, seq_len, mode=mode)
        assert len(rows) == 1
        batch = rows.batch([0])
        mask = attention_mask(batch["segment_ids"], batch["positions"])
        logits = model(batch["tokens"], positions=batch["positions"], mask=mask)
        assert torch.isfinite(logits).all()
        losses = masked_loss_sums(logits, batch["targets"], batch["loss_mask"])[0]
        starts = np.cumsum([0] + [len(e) for e in examples])
        packed = [losses[a:b].sum() for a, b in zip(starts[:-1], starts[1:])]
        if mode == "block_diagonal":
            for one, other in zip(packed, alone):
                torch.testing.assert_close(one, other, atol=1e-5, rtol=1e-5)
        else:
            # The first dialog sees nothing before it either way; the later ones attend across.
            torch.testing.assert_close(packed[0], alone[0], atol=1e-5, rtol=1e-5)
            assert all(abs(p - a) > 1e-3 for p, a in zip(packed[1:], alone[1:]))
