"""BIG-Bench Hard: the repository's layout, the Codex-output prompt format, answer extraction, per-task scores."""

from __future__ import annotations

import shutil

import pytest

from llama2.errors import DataError
from llama2.evaluate.benchmarks.base import SampleResult
from llama2.evaluate.benchmarks.bbh import BBH, CHAT_INSTRUCTION, STOP, TASKS, build_prompt, extract_answer, read_prompt
from llama2.providers.fake import FakeProvider

from .drive import CHAT_API, COMPLETION_API, DATA, run

BBH_DATA = DATA / "bbh"
BOOLEAN_PROMPT = (
    "Evaluate the result of a random Boolean expression.\n\n"
    "Q: not True is\nA: Let's think step by step.\nnot True = False. So the answer is False.\n\n"
    "Q: True or False is\nA: Let's think step by step.\nTrue or False = True. So the answer is True."
)


def test_the_27_files_of_the_release():
    assert len(TASKS) == 27 and "logical_deduction_seven_objects" in TASKS


def test_prompt_file_header_is_dropped():
    assert read_prompt(BBH_DATA / "cot-prompts" / "boolean_expressions.txt") == BOOLEAN_PROMPT


def test_prompt_matches_the_released_codex_inputs():
    task = BBH()
    sample = task.load(BBH_DATA)[0]
    assert sample.id == "boolean_expressions/0" and sample.group == "boolean_expressions"
    assert task.prompt(sample) == BOOLEAN_PROMPT + "\n\nQ: not ( True ) and ( True ) is\nA: Let's think step by step."
    assert build_prompt("P", "x") == "P\n\nQ: x\nA: Let's think step by step."


@pytest.mark.parametrize("completion, answer", [
    ("not True = False. So the answer is False.", "False"),
    ("Yesterday was 02/29/2020. So the answer is (B).\n\nQ: more", "(B)"),
    ("So the answer is (C) 07/11/2021.", "(C)"),
    ("... so the answer is ] ) }.", "] ) }"),
    ("so THE ANSWER IS valid", "valid"),
    ("I cannot tell.", ""),
])
def test_extract_answer(completion, answer):
    assert extract_answer(completion) == answer


def test_completion_mode_scores_by_exact_match_per_task():
    task = BBH()
    samples = task.load(BBH_DATA)
    provider = FakeProvider(answer=lambda r: "Thinking. So the answer is (A).", capabilities=COMPLETION_API)
    results = run(task, samples, provider)
    assert provider.calls[0].params.stop == STOP == ("\n\nQ:",) and provider.calls[0].params.temperature == 0.0
    assert [r.metrics["exact_match"] for r in results] == [0.0, 0.0, 0.0, 1.0, 1.0]
    scores = task.aggregate(results)
    assert scores["exact_match,task=boolean_expressions"] == 0.0
    assert scores["exact_match,task=date_understanding"] == pytest.approx(2 / 3)
    assert scores["exact_match"] == pytest.approx(1 / 3) and scores["exact_match_micro"] == pytest.approx(2 / 5)


def test_chat_mode_asks_for_the_answer_phrase():
    task = BBH()
    samples = task.load(BBH_DATA, limit=1)
    provider = FakeProvider(answer=lambda r: "Step by step... So the answer is False.", capabilities=CHAT_API)
    (result,) = run(task, samples, provider)
    assert provider.calls[0].prompt == [{"role": "user", "content": CHAT_INSTRUCTION + task.prompt(samples[0])}]
    assert result.prediction == "False" and result.metrics["exact_match"] == 1.0


def test_limit_takes_tasks_in_turn():
    assert [s.id for s in BBH().load(BBH_DATA, limit=3)] == ["boolean_expressions/0", "boolean_expressions/1", "date_understanding/0"]


def test_aggregate_weighs_tasks_equally():
    results = [SampleResult("a/0", {"exact_match": 1.0}, "", "", "a")] + [SampleResult(f"b/{i}", {"exact_match": 0.0}, "", "", "b") for i in range(3)]
    scores = BBH().aggregate(results)
    assert scores["exact_match"] == 0.5 and scores["exact_match_micro"] == 0.25


def test_missing_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="llama2 data fetch bbh"):
        BBH().load(tmp_path)
    shutil.copytree(BBH_DATA, tmp_path / "bbh_data")
    (tmp_path / "bbh_data" / "cot-prompts" / "date_understanding.txt").unlink()
    with pytest.raises(DataError, match="cot-prompts/date_understanding.txt"):
        BBH().load(tmp_path / "bbh_data")
    (tmp_path / "bbh_data" / "bbh" / "date_understanding.json").write_text('{"examples": [{"input": "x"}]}')
    with pytest.raises(DataError, match="'input' and 'target'"):
        BBH().load(tmp_path / "bbh_data")
