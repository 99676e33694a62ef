"""Prompt sets: single- and multi-turn records, the derived turn count, errors naming file and line,
and the bundled starter set."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from llama2.errors import DataError
from llama2.evaluate.prompts import load_prompts, starter_path


def write(tmp_path, *records):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_single_and_multi_turn_records(tmp_path):
    path = write(tmp_path, {"id": "a", "prompt": "Hi?", "category": "talk"},
                 "",
                 {"id": "b", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1"},
                                          {"role": "assistant", "content": "2"}, {"role": "user", "content": "3"}],
                  "turns": 2})
    a, b = load_prompts(path)
    assert (a.id, a.category, a.turns, a.dialog) == ("a", "talk", 1, [{"role": "user", "content": "Hi?"}])
    assert (b.id, b.category, b.turns, b.dialog[-1]["content"]) == ("b", None, 2, "3")
    assert [item.id for item in load_prompts(path, limit=1)] == ["a"]
    # to_dict is what the loader reads back
    again = write(tmp_path, *[item.to_dict() for item in (a, b)])
    assert load_prompts(again) == [a, b]


@pytest.mark.parametrize("record, message", [
    ({"prompt": "x"}, r"prompts.jsonl:1: 'id' must be a non-empty string"),
    ({"id": "a", "prompt": "x", "messages": [{"role": "user", "content": "x"}]}, "exactly one of 'prompt'.*not both"),
    ({"id": "a"}, "exactly one of 'prompt'.*neither"),
    ({"id": "a", "prompt": "  "}, "'prompt' must be a non-empty string"),
    ({"id": "a", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
     "ends with role 'assistant'"),
    ({"id": "a", "messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]},
     "role is 'assistant' but 'user' was expected"),
    ({"id": "a", "messages": [{"role": "bot", "content": "q"}]}, "unknown role 'bot'"),
    ({"id": "a", "messages": [{"role": "user", "content": "q", "name": "x"}]}, "message 0 has fields"),
    ({"id": "a", "prompt": "x", "answer": "y"}, r"unknown field\(s\) 'answer'"),
    ({"id": "a", "prompt": "x", "turns": 2}, "'turns' is 2 but the messages hold 1"),
    ({"id": "a", "prompt": "x", "category": 3}, "'category' must be a non-empty string"),
    ({"id": "a", "prompt": "[INST] x"}, "special tag"),
])
def test_bad_records_are_errors_naming_file_and_line(tmp_path, record, message):
    path = write(tmp_path, record)
    with pytest.raises(DataError, match=message) as caught:
        load_prompts(path)
    assert f"{path}:1:" in str(caught.value)


def test_duplicate_ids_bad_json_and_missing_files(tmp_path):
    path = write(tmp_path, {"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"})
    with pytest.raises(DataError, match=r"prompts.jsonl:2: prompt id 'a' already used at .*prompts.jsonl:1"):
        load_prompts(path)
    with pytest.raises(DataError, match=r"prompts.jsonl:2: not valid JSON"):
        load_prompts(write(tmp_path, {"id": "a", "prompt": "x"}, "{oops"))
    with pytest.raises(DataError, match="prompt set not found.*starter"):
        load_prompts(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="no prompts"):
        load_prompts(write(tmp_path, ""))


def test_the_starter_set_is_varied_and_valid():
    items = load_prompts("starter")
    assert 40 <= len(items) <= 60 and starter_path().is_file()
    categories = Counter(item.category for item in items)
    assert {"factual", "writing", "reasoning", "coding", "advice", "language"} <= set(categories)
    assert min(categories.values()) >= 4
    multi = [item for item in items if item.turns > 1]
    assert len(multi) >= 6 and any(item.turns >= 3 for item in multi)
    assert any(item.messages[0]["role"] == "system" for item in items)
