"""Preference pairs: the JSONL pair form and HH-RLHF transcripts load; Table 27's margins; bad records
fail with file:line and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llama2.data.preference import MARGINS, STRENGTHS, PreferencePair, margin, parse_hh_transcript, read_preferences
from llama2.errors import DataError


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


PAIR = {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."}
HH = {
    "chosen": "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Name a colour.\n\nAssistant: Blue.",
    "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Name a colour.\n\nAssistant: I won't.",
}


def test_pair_form_with_defaults_and_all_labels(tmp_path):
    full = {
        "prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
        "chosen": "Hello!", "rejected": "Go away.", "strength": "significantly_better",
        "category": "safety", "chosen_safe": True, "rejected_safe": False,
    }
    path = write_jsonl(tmp_path / "p.jsonl", [PAIR, full])
    first, second = read_preferences(path)
    assert first == PreferencePair(
        prompt=[{"role": "user", "content": "Name a colour."}], chosen="Blue.", rejected="Seven.",
        strength="better", category=None, chosen_safe=None, rejected_safe=None, source=f"{path}:1",
    )
    assert second.prompt == full["prompt"]
    assert (second.strength, second.category, second.chosen_safe, second.rejected_safe) == ("significantly_better", "safety", True, False)


def test_hh_rlhf_transcripts_split_into_shared_prompt_and_two_replies(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [HH])
    (pair,) = read_preferences(path)
    assert pair.prompt == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Name a colour."},
    ]
    assert (pair.chosen, pair.rejected, pair.strength) == ("Blue.", "I won't.", "better")


def test_hh_transcript_without_leading_blank_lines():
    assert parse_hh_transcript("Human: a\n\nAssistant: b", where="x:1", field="chosen") == [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]


def test_parquet_preferences(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist([{**PAIR, "strength": "slightly_better"}]), path)
    assert read_preferences(path)[0].strength == "slightly_better"


def test_margins_are_table_27():
    assert MARGINS["small"] == pytest.approx({"significantly_better": 1, "better": 2 / 3, "slightly_better": 1 / 3, "negligibly_better": 0})
    assert MARGINS["large"] == {"significantly_better": 3, "better": 2, "slightly_better": 1, "negligibly_better": 0}
    assert all(tuple(table) == STRENGTHS for table in MARGINS.values())
    assert margin("better", "large") == 2
    with pytest.raises(DataError, match="unknown margin variant 'huge'; use one of small, large"):
        margin("better", "huge")


BAD = [
    ({**PAIR, "strength": "much_better"},
     "field 'strength' is 'much_better'; use one of significantly_better, better, slightly_better, negligibly_better"),
    ({"prompt": "a", "chosen": "b"}, "field 'rejected' is missing"),
    ({**PAIR, "chosen": ""}, "field 'chosen' is an empty reply"),
    ({**PAIR, "rejected": 3}, "field 'rejected' must be a string, got int"),
    ({**PAIR, "chosen": "Seven."}, "fields 'chosen' and 'rejected' are the same reply"),
    ({**PAIR, "chosen": "[INST] x"}, "field 'chosen' contains the special tag '[INST]'"),
    ({**PAIR, "chosen_safe": "yes"}, "field 'chosen_safe' must be true or false"),
    ({**PAIR, "category": 1}, "field 'category' must be a string"),
    ({**PAIR, "prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
     "field 'prompt': message 1: the dialog ends with role 'assistant'"),
    ({**PAIR, "prompt": [{"role": "robot", "content": "a"}]}, "field 'prompt': message 0: unknown role 'robot'"),
    ({**PAIR, "prompt": [{"content": "a"}]}, "field 'prompt': message 0: expected a dict with 'role' and 'content'"),
    ({**PAIR, "prompt": 5}, "field 'prompt' must be a string or a list"),
    ({**HH, "rejected": HH["rejected"].replace("Hi there", "Hello there")},
     "fields 'chosen' and 'rejected' differ before their last 'Assistant:' turn"),
    ({**HH, "chosen": "Hello"}, "field 'chosen' is not an HH-RLHF transcript"),
    ({**HH, "chosen": HH["chosen"] + "\n\nHuman: more?"}, "field 'chosen' ends with a Human turn"),
    ({**HH, "rejected": HH["rejected"].rsplit(" ", 2)[0] + " "}, "field 'rejected' is an empty reply"),
    ({"chosen": HH["chosen"]}, "no field 'rejected'"),
    ({"chosen": "\n\nHuman: a\n\nHuman: b\n\nAssistant: c", "rejected": "\n\nHuman: a\n\nHuman: b\n\nAssistant: d"},
     "field 'chosen': message 1: role is 'user' but 'assistant' was expected"),
]


@pytest.mark.parametrize("record, message", BAD)
def test_bad_records_fail_with_file_line_and_field(tmp_path, record, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [PAIR, record])
    with pytest.raises(DataError) as error:
        read_preferences(path)
    assert str(error.value).startswith(f"{path}:2: ")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_bad_json_and_skipping(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [PAIR, "{oops", {**PAIR, "strength": "best"}])
    with pytest.raises(DataError, match=rf"{path}:2: not valid JSON"):
        read_preferences(path)
    with pytest.raises(DataError, match="unknown preference format 'dpo'"):
        read_preferences(tmp_path / "p.jsonl", format="dpo")
    write_jsonl(path, [PAIR, {**PAIR, "strength": "best"}, {**PAIR, "chosen": ""}])
    with pytest.warns(UserWarning, match=rf"skipped 2 bad preference records; first: {path}:2: field 'strength'"):
        assert len(read_preferences(path, on_error="skip")) == 1
