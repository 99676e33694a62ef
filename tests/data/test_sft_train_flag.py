"""The per-message `"train": false` flag: read and checked from every source with file:line, and the
loss mask of `build_examples` then covers exactly the trained assistant turns."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llama2.data.sft import read_sft
from llama2.data.sft_examples import build_examples
from llama2.errors import DataError
from llama2.model.tokenizer import Tokenizer


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str, **flags: bool) -> dict:
    return {"role": "assistant", "content": text, **flags}


THREE_TURNS = [
    {"role": "system", "content": "Be brief."},
    user("What is the capital of France?"), assistant("Paris.", train=False),
    user("And a quick brown fox?"), assistant("It jumps over the lazy dog.", train=True),
    user("Thanks"), assistant("def add(a, b): return a + b"),
]


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_path: Path) -> Tokenizer:
    return Tokenizer(tiny_tokenizer_path)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def trained_text(tok: Tokenizer, ids: list[int], mask: list[bool]) -> str:
    return tok.decode([i for i, keep in zip(ids, mask) if keep])


def test_reading_keeps_only_false_flags(tmp_path):
    (dialog,) = read_sft(write_jsonl(tmp_path / "d.jsonl", [{"messages": THREE_TURNS}]))
    assert [m.get("train") for m in dialog.messages] == [None, None, False, None, None, None, None]


@pytest.mark.parametrize("trained", [(True, True, True), (False, True, True), (False, False, True), (True, False, False)])
def test_mask_equals_exactly_the_trained_assistant_turns(tok, tmp_path, trained):
    messages = [dict(m) for m in THREE_TURNS]
    for message, flag in zip([m for m in messages if m["role"] == "assistant"], trained):
        message["train"] = flag
    (dialog,) = read_sft(write_jsonl(tmp_path / "d.jsonl", [{"messages": messages}]))
    (example,) = build_examples(tok, [dialog], seq_len=256)
    plain = [{"role": m["role"], "content": m["content"]} for m in THREE_TURNS]
    (full,) = build_examples(tok, [plain], seq_len=256)
    assert example.ids == full.ids  # the flag changes the mask only, never the tokens
    # The expected mask: the all-answers mask, restricted to the spans of the trained answers.
    expected, answer = [], -1
    for t, keep in enumerate(full.loss_mask):
        answer += keep and (t == 0 or not full.loss_mask[t - 1])
        expected.append(keep and trained[answer])
    assert example.loss_mask == expected
    answers = [m["content"] for m in THREE_TURNS if m["role"] == "assistant"]
    text = trained_text(tok, example.ids, example.loss_mask)
    assert text.split() == " ".join(a for a, keep in zip(answers, trained) if keep).split()


def test_in_memory_dialogs_honour_the_flag_too(tok):
    (example,) = build_examples(tok, [[user("Hi"), assistant("Hello.", train=False), user("Bye"), assistant("Goodbye.")]], 256)
    assert trained_text(tok, example.ids, example.loss_mask).strip() == "Goodbye."
    with pytest.raises(DataError, match=r"dialog 0: message 1: 'train' must be True or False"):
        build_examples(tok, [[user("Hi"), {"role": "assistant", "content": "Hello.", "train": "no"}]], 256)


@pytest.mark.parametrize("message, error", [
    (assistant("Hello.", train="false"), r"d\.jsonl:1: field 'messages': message 1: 'train' must be true or false"),
    ({"role": "user", "content": "Hi", "train": False}, r"d\.jsonl:1: field 'messages': message 0: 'train' applies to assistant"),
])
def test_bad_flags_fail_with_file_line_and_message(tmp_path, message, error):
    messages = [message, assistant("Hello.")] if message["role"] == "user" else [user("Hi"), message]
    with pytest.raises(DataError, match=error):
        read_sft(write_jsonl(tmp_path / "d.jsonl", [{"messages": messages}]))


def test_a_dialog_with_no_trained_answer_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": [user("Hi"), assistant("Hello.")]},
                                             {"messages": [user("Hi"), assistant("Hello.", train=False)]}])
    with pytest.raises(DataError, match=r"d\.jsonl:2: .*nothing is left to learn"):
        read_sft(path)


def test_parquet_null_flags_mean_trained(tmp_path, tok):
    """Parquet gives every message of a column the same fields, so messages without a flag read as null."""
    table = pa.Table.from_pylist([{"messages": THREE_TURNS}, {"messages": [user("Hi"), assistant("Hello.")]}])
    pq.write_table(table, tmp_path / "d.parquet")
    first, second = read_sft(tmp_path / "d.parquet")
    assert [m.get("train") for m in first.messages if m["role"] == "assistant"] == [False, None, None]
    assert "train" not in second.messages[1]
