"""GSM8K: Wei et al.'s 8-shot prompt as lm-eval's gsm8k_cot builds it, answer extraction, exact match."""

from __future__ import annotations

import pytest

from llama2.errors import ConfigError, DataError
from llama2.evaluate.benchmarks.gsm8k import (
    CHAT_INSTRUCTION, GSM8K, STOP, build_prompt, exemplars, extract_answer, normalize_number, reference_answer,
)
from llama2.providers.fake import FakeProvider

from .drive import CHAT_API, COMPLETION_API, DATA, run

GSM8K_DATA = DATA / "gsm8k"


def test_exemplars_are_wei_et_als_eight():
    shots = exemplars()
    assert len(shots) == 8
    assert shots[0]["question"].startswith("There are 15 trees in the grove.")
    assert shots[0]["target"].endswith("So there must have been 21 - 15 = 6. The answer is 6.")
    assert shots[-1]["target"].endswith("23 - 15 is 8. The answer is 8.")


def test_prompt_layout():
    prompt = build_prompt("What is 2 + 2?", [{"question": "What is 1 + 1?", "target": "1 + 1 = 2. The answer is 2."}])
    assert prompt == "Q: What is 1 + 1?\nA: 1 + 1 = 2. The answer is 2.\n\nQ: What is 2 + 2?\nA:"
    full = build_prompt("What is 2 + 2?")
    assert full.startswith("Q: There are 15 trees in the grove.") and full.endswith("\n\nQ: What is 2 + 2?\nA:")
    assert full.count("\n\nQ: ") == 8


def test_num_fewshot_keeps_the_first_exemplars_and_names_the_task():
    question = "What is 2 + 2?"
    samples = GSM8K().load(GSM8K_DATA, limit=1)
    for shots, name in ((8, "gsm8k"), (2, "gsm8k-2shot"), (0, "gsm8k-0shot")):
        task = GSM8K(num_fewshot=shots)
        provider = FakeProvider(answer=lambda r: "The answer is 7.", capabilities=COMPLETION_API)
        run(task, samples, provider)
        assert provider.calls[0].prompt == build_prompt(samples[0].doc["question"], exemplars()[:shots])
        assert (task.name, task.options()) == (name, {"num_fewshot": shots})
    assert build_prompt(question, exemplars()[:0]) == f"Q: {question}\nA:"
    assert GSM8K().num_fewshot == 8  # the paper's protocol by default
    for bad in (9, -1, 2.0, True):
        with pytest.raises(ConfigError, match="from 0 to 8"):
            GSM8K(num_fewshot=bad)


def test_load_and_reference_answers():
    samples = GSM8K().load(GSM8K_DATA)
    assert [s.id for s in samples] == ["test/0", "test/1", "test/2"]
    assert [s.doc["target"] for s in samples] == ["7", "48", "1550"]
    assert len(GSM8K().load(GSM8K_DATA, limit=2)) == 2


@pytest.mark.parametrize("text, number", [
    ("1,550", "1550"), ("$48", "48"), ("7.", "7"), ("7.0", "7"), ("7.00", "7"), ("0.50", "0.5"), ("-3", "-3"),
    ("$1,234.00", "1234"), ("abc", "abc"),
])
def test_normalize_number(text, number):
    assert normalize_number(text) == number


@pytest.mark.parametrize("completion, answer, how", [
    ("12 - 5 = 7. The answer is 7.", "7", "strict"),
    ("The answer is $1,550.\n\nQ: next", "1550", "strict"),
    ("the answer is 48 dollars, not 50.", "48", "strict"),
    ("So 3 * 4 = 12 and then 12 - 5 = 7 pencils.", "7", "last number"),
    ("She pays $1,550.00 in total", "1550", "last number"),
    ("I do not know.", "", "none"),
])
def test_extract_answer(completion, answer, how):
    assert extract_answer(completion) == (answer, how)


def test_reference_answer_takes_the_last_marked_number():
    assert reference_answer("He has 2 + 3 = 5.\n#### 5") == "5"
    assert reference_answer("... #### 1,000") == "1000"


def test_completion_mode_generates_greedily_until_q_or_a_blank_line():
    task = GSM8K()
    samples = task.load(GSM8K_DATA)
    answers = {"Mia": "She has 12 - 5 = 7 left. The answer is 7.", "shirt": "It costs $48.", "library": "The answer is 1550."}
    asked = lambda request: request.prompt.rsplit("Q: ", 1)[1]  # noqa: E731 - the question being asked
    provider = FakeProvider(answer=lambda r: next(v for k, v in answers.items() if k in asked(r)), capabilities=COMPLETION_API)
    results = run(task, samples, provider)
    request = provider.calls[0]
    assert request.prompt == build_prompt(samples[0].doc["question"])
    assert request.params.stop == STOP == ("Q:", "\n\n") and request.params.temperature == 0.0
    assert [r.metrics["exact_match"] for r in results] == [1.0, 1.0, 1.0]
    assert [r.extra["extraction"] for r in results] == ["strict", "last number", "strict"]
    assert "greedy" in results[0].extra["maj@1"]
    assert task.aggregate(results) == {"exact_match": 1.0}


def test_chat_mode_sends_the_prompt_as_a_user_message():
    task = GSM8K()
    samples = task.load(GSM8K_DATA, limit=1)
    provider = FakeProvider(answer=lambda r: "Let me think.\nThe answer is 8.", capabilities=CHAT_API)
    (result,) = run(task, samples, provider)
    (request,) = provider.calls
    assert request.prompt == [{"role": "user", "content": CHAT_INSTRUCTION + build_prompt(samples[0].doc["question"])}]
    assert (result.prediction, result.target, result.metrics["exact_match"]) == ("8", "7", 0.0)


def test_bad_data_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="llama2 data fetch gsm8k"):
        GSM8K().load(tmp_path)
    (tmp_path / "test.jsonl").write_text('{"question": "q", "answer": "no marker"}\n')
    with pytest.raises(DataError, match="#### N"):
        GSM8K().load(tmp_path)
    (tmp_path / "test.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(DataError, match="'answer'"):
        GSM8K().load(tmp_path)
    (tmp_path / "test.jsonl").write_text('{"question": \n')
    with pytest.raises(DataError, match="test.jsonl:1"):
        GSM8K().load(tmp_path)
