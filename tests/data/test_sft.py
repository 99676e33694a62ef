"""SFT data: each record form and source type loads into dialogs; bad records fail with file:line and
the field; weighted mixing is deterministic under its seed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llama2.data.sft import SFTDialog, dialog_from_record, mix_sft, parse_mixture, read_sft
from llama2.errors import DataError


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


MESSAGES = {"messages": [{"role": "system", "content": "Be brief."}, user("Hi"), assistant("Hello."), user("2+2?"), assistant("4")]}
PROMPT_COMPLETION = {"prompt": "Capital of France?", "completion": "Paris."}
ALPACA = {"instruction": "Translate to French.", "input": "cat", "output": "chat"}


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def messages_of(dialogs: list[SFTDialog]) -> list:
    return [d.messages for d in dialogs]


def test_each_record_form_loads_from_one_jsonl_file(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        MESSAGES,
        "",  # blank lines are skipped but still counted
        PROMPT_COMPLETION,
        {"prompt": [user("Hi"), assistant("Hello."), user("Bye")], "completion": "Goodbye."},
        ALPACA,
        {"instruction": "Say hi.", "input": "  ", "output": "Hi!"},
    ])
    dialogs = read_sft(path)
    assert messages_of(dialogs) == [
        MESSAGES["messages"],
        [user("Capital of France?"), assistant("Paris.")],
        [user("Hi"), assistant("Hello."), user("Bye"), assistant("Goodbye.")],
        [user("Translate to French.\n\ncat"), assistant("chat")],
        [user("Say hi."), assistant("Hi!")],
    ]
    assert [d.source for d in dialogs] == [f"{path}:{n}" for n in (1, 3, 4, 5, 6)]


def test_gzipped_jsonl(tmp_path):
    import gzip

    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(ALPACA) + "\n").encode()))
    assert messages_of(read_sft(path)) == [[user("Translate to French.\n\ncat"), assistant("chat")]]


def test_forced_format_names_the_missing_field(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [PROMPT_COMPLETION])
    with pytest.raises(DataError, match=rf"{path}:1: no 'messages' field"):
        read_sft(path, format="messages")
    assert read_sft(path, format="prompt_completion")[0].messages[1] == assistant("Paris.")


def test_parquet_with_the_same_columns_and_nulls_for_other_forms(tmp_path):
    path = tmp_path / "a.parquet"
    rows = [MESSAGES, PROMPT_COMPLETION, ALPACA]
    table = pa.Table.from_pylist([{**{k: None for k in ("messages", "prompt", "completion", "instruction", "input", "output")}, **r} for r in rows])
    pq.write_table(table, path)
    dialogs = read_sft(path)
    assert messages_of(dialogs) == [MESSAGES["messages"], [user("Capital of France?"), assistant("Paris.")],
                                    [user("Translate to French.\n\ncat"), assistant("chat")]]
    assert dialogs[2].source == f"{path}:3"


def test_parquet_bad_row_is_named_by_row(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist([ALPACA, {**ALPACA, "output": ""}]), path)
    with pytest.raises(DataError, match=rf"{path}:2: field 'output' is empty"):
        read_sft(path)


def test_datasets_objects_and_saved_folders(tmp_path):
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_list([PROMPT_COMPLETION, PROMPT_COMPLETION])
    assert len(read_sft(dataset)) == 2
    splits = datasets.DatasetDict({"train": dataset, "test": datasets.Dataset.from_list([ALPACA])})
    assert read_sft(splits, split="test")[0].source == "<dataset>[test]:1"
    splits.save_to_disk(str(tmp_path / "saved"))
    loaded = read_sft(tmp_path / "saved", split="test")
    assert loaded[0].messages == [user("Translate to French.\n\ncat"), assistant("chat")]
    with pytest.raises(DataError, match=r"no split 'validation' \(splits: train, test\)"):
        read_sft(tmp_path / "saved", split="validation")


def test_a_folder_that_is_not_a_saved_dataset(tmp_path):
    with pytest.raises(DataError, match="not one written by datasets' save_to_disk"):
        read_sft(tmp_path)


BAD_RECORDS = [
    ('{"messages": [', "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ({"text": "hi"}, "unknown SFT record (fields: text)"),
    ({"messages": "hi"}, "field 'messages' must be a non-empty list"),
    ({"messages": [{"content": "hi"}, assistant("a")]}, "field 'messages': message 0 has no 'role'"),
    ({"messages": [user("hi"), {"role": "assistant"}]}, "field 'messages': message 1 has no 'content'"),
    ({"messages": [{"role": "bot", "content": "x"}, assistant("a")]}, "field 'messages': message 0: unknown role 'bot'"),
    ({"messages": [user("a"), user("b"), assistant("c")]}, "field 'messages': message 1: role is 'user' but 'assistant' was expected"),
    ({"messages": [user("a"), assistant("b"), user("c")]}, "field 'messages': message 2: the dialog ends with role 'user'"),
    ({"messages": [user("a"), assistant("  ")]}, "field 'messages': message 1 is an empty assistant reply"),
    ({"messages": [user("a [INST] b"), assistant("c")]}, "field 'messages': message 0: content contains the special tag '[INST]'"),
    ({"prompt": [user("a"), assistant("b")], "completion": "c"}, "field 'prompt': message 1: the dialog ends with role 'assistant'"),
    ({"prompt": "a", "completion": ""}, "field 'completion': message 1 is an empty assistant reply"),
    ({"prompt": "a <<SYS>>", "completion": "b"}, "field 'prompt' contains the special tag '<<SYS>>'"),
    ({"prompt": 3, "completion": "b"}, "field 'prompt' must be a non-empty list"),
    ({"instruction": "a", "output": ""}, "field 'output' is empty"),
    ({"instruction": "a", "input": 5, "output": "b"}, "field 'input' must be a string, got int"),
    ({"instruction": "a", "output": "b [/INST]"}, "field 'output' contains the special tag '[/INST]'"),
]


@pytest.mark.parametrize("record, message", BAD_RECORDS)
def test_bad_records_fail_with_file_line_and_field(tmp_path, record, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [ALPACA, "", record])
    with pytest.raises(DataError) as error:
        read_sft(path)
    assert str(error.value).startswith(f"{path}:3: ")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_skip_bad_records_warns_with_a_count(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [ALPACA, {"instruction": "x", "output": ""}, {"text": "?"}])
    with pytest.warns(UserWarning, match=rf"skipped 2 bad SFT records of .*first: {path}:2: field 'output' is empty"):
        assert len(read_sft(path, on_error="skip")) == 1


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_sft(tmp_path / "nope.jsonl")
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(DataError, match="unknown file type"):
        read_sft(tmp_path / "a.csv")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="holds no SFT records"):
        read_sft(tmp_path / "empty.jsonl")


def test_dialog_from_record_rejects_an_unknown_format():
    with pytest.raises(DataError, match="unknown SFT format 'chatml'"):
        dialog_from_record(ALPACA, where="x:1", format="chatml")


@pytest.fixture
def two_files(tmp_path) -> tuple[Path, Path]:
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"a{i}", "completion": "x"} for i in range(10)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"b{i}", "completion": "x"} for i in range(4)])
    return a, b


def prompts(dialogs: list[SFTDialog]) -> list[str]:
    return [d.messages[0]["content"] for d in dialogs]


def test_mixing_weights_are_per_file_proportions(two_files):
    a, b = two_files
    mixed = mix_sft([(a, 0.5), (b, 2)], seed=3)
    counts = Counter(prompts(mixed))
    assert sum(c for p, c in counts.items() if p.startswith("a")) == 5
    assert all(c == 1 for p, c in counts.items() if p.startswith("a"))  # a sample without replacement
    assert {p: c for p, c in counts.items() if p.startswith("b")} == {f"b{i}": 2 for i in range(4)}


def test_mixing_is_deterministic_under_the_seed(two_files):
    a, b = two_files
    first = prompts(mix_sft({str(a): 0.7, str(b): 0.3}, seed=1))
    assert first == prompts(mix_sft([(a, 0.7), [str(b), 0.3]], seed=1))
    assert first == prompts(mix_sft([{"path": a, "weight": 0.7}, {"path": b, "weight": 0.3}], seed=1))
    assert first != prompts(mix_sft({str(a): 0.7, str(b): 0.3}, seed=2))
    assert prompts(mix_sft([a, b], shuffle=False)) == [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(4)]


@pytest.mark.parametrize("data, message", [
    ([("a.jsonl", 0)], "weight of a.jsonl is 0; use a positive number"),
    ([("a.jsonl", "x")], "weight of a.jsonl is 'x'"),
    ([("a.jsonl", 1, 2)], r"expected a \(path, weight\) pair"),
    ([{"file": "a.jsonl"}], "a mapping item needs 'path'"),
    ([], "expected a file, a list of files"),
])
def test_bad_mixtures(data, message):
    with pytest.raises(DataError, match=message):
        parse_mixture(data)


def test_a_mixture_that_selects_nothing(two_files):
    with pytest.raises(DataError, match="the weights select no dialogs"):
        mix_sft([(two_files[1], 0.01)])
