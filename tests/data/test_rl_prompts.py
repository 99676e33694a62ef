"""Prompt sets for RLHF sampling: every record form becomes a dialog ending with a user turn; the
safety tag comes from the record, else the source (borderline prompts are never tagged); repeated
prompts of a file count once; bad records fail with file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama2.data.rl_prompts import mix_prompts, read_prompts
from llama2.errors import DataError


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_record_forms_tags_and_duplicates(tmp_path):
    user = {"role": "user", "content": "Name a fox."}
    path = write(tmp_path / "p.jsonl", [
        {"id": "a", "prompt": "Say yes.", "category": "illicit_criminal/theft"},
        {"prompt": [{"role": "system", "content": "Be brief."}, user]},
        {"messages": [user, {"role": "assistant", "content": "A red fox."}]},  # SFT dialogs serve as prompts
        {"instruction": "Add", "input": "2 and 3"},
        {"prompt": "Say yes.", "chosen": "yes", "rejected": "no"},  # a preference pair; a repeat of the first
        {"prompt": "How do I kill a Python process?", "category": "borderline"},
        {"prompt": "Hi", "safety": False},
    ])
    prompts = read_prompts(path, safety=True)
    assert [p.messages[-1]["content"] for p in prompts] == ["Say yes.", "Name a fox.", "Name a fox.", "Add\n\n2 and 3",
                                                           "How do I kill a Python process?", "Hi"]
    assert prompts[1].messages[0] == {"role": "system", "content": "Be brief."} and len(prompts[2].messages) == 1
    assert [p.safety for p in prompts] == [True, True, True, True, False, False]
    assert prompts[0].id == "a" and prompts[1].id == f"{path}:2" and prompts[0].category == "illicit_criminal/theft"
    assert not any(p.safety for p in read_prompts(path))


def test_mixture_weights_take_shares_of_distinct_prompts(tmp_path):
    a = write(tmp_path / "a.jsonl", [{"prompt": f"question {i}"} for i in range(10)] * 2)
    b = write(tmp_path / "b.jsonl", [{"prompt": f"other {i}"} for i in range(4)])
    mixed = mix_prompts({str(a): 0.5, str(b): 2}, seed=1)
    texts = [p.messages[0]["content"] for p in mixed]
    assert sum(t.startswith("question") for t in texts) == 5 and sum(t.startswith("other") for t in texts) == 8
    assert mixed == mix_prompts({str(a): 0.5, str(b): 2}, seed=1)


@pytest.mark.parametrize(("record", "message"), [
    ({"completion": "x"}, "no prompt in the record"),
    ({"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "must end with 'user'"),
    ({"prompt": "  "}, "a user message is empty"),
    ({"prompt": "hi", "safety": "yes"}, "'safety' must be true or false"),
    ({"prompt": "hi [INST] there"}, "special tag"),
])
def test_bad_records_name_file_and_line(tmp_path, record, message):
    path = write(tmp_path / "p.jsonl", [{"prompt": "fine"}, record])
    with pytest.raises(DataError, match=message) as error:
        read_prompts(path)
    assert f"{path}:2" in str(error.value)
