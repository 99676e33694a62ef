"""MMLU: the release's CSV layout, lm-eval's prompt to the character, both scoring modes, the averages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llama2.errors import DataError
from llama2.evaluate.benchmarks.base import SampleResult
from llama2.evaluate.benchmarks.mmlu import CHAT_INSTRUCTION, MMLU, extract_letter, read_csv
from llama2.providers.base import Capabilities, GenerateRequest, LoglikelihoodRequest
from llama2.providers.fake import FakeProvider

from .drive import CHAT_API, COMPLETION_API, DATA, run

MMLU_DATA = DATA / "mmlu"
ASTRONOMY_PROMPT = (
    "The following are multiple choice questions (with answers) about astronomy.\n\n"
    "Which planet is closest to the Sun?\nA. Venus\nB. Mercury\nC. Earth\nD. Mars\nAnswer: B\n\n"
    "How many planets are in the Solar System?\nA. 7\nB. 8\nC. 9\nD. 10\nAnswer: B\n\n"
    "Which of these is a gas giant, not a rocky planet?\nA. Mars\nB. Venus\nC. Jupiter\nD. Mercury\nAnswer: C\n\n"
    "What does a light-year measure?\nA. Time\nB. Brightness\nC. Distance\nD. Mass\nAnswer: C\n\n"
    'Which star is the "Pole Star"?\nA. Sirius\nB. Vega\nC. Betelgeuse\nD. Polaris\nAnswer: D\n\n'
    "What is the largest planet in the Solar System?\nA. Saturn\nB. Jupiter\nC. Neptune\nD. Earth\nAnswer:"
)


def answers_by_question(task: MMLU, samples) -> dict[str, str]:
    return {task.context(s): s.doc["answer"] for s in samples}


def test_load_reads_quoted_fields_and_groups_by_subject():
    task = MMLU()
    samples = task.load(MMLU_DATA)
    assert [s.id for s in samples] == [f"{subject}/{i}" for subject in ("astronomy", "high_school_geography") for i in range(3)]
    assert {s.group for s in samples} == {"astronomy", "high_school_geography"}
    multiline = samples[1].doc
    assert multiline["question"] == "Which object orbits the Earth?\n(Pick one.)" and multiline["answer"] == "C"
    assert samples[2].doc["choices"][0] == "A ball of gas, mostly hydrogen"
    assert samples[5].doc["choices"][1] == "Bolivia, in South America"


def test_prompt_is_lm_evals_mmlu_prompt_exactly():
    task = MMLU()
    sample = task.load(MMLU_DATA)[0]
    assert task.context(sample) == ASTRONOMY_PROMPT
    requests = task.requests(sample, "loglikelihood", Capabilities(loglikelihood=True))
    assert requests == [LoglikelihoodRequest(ASTRONOMY_PROMPT, f" {letter}") for letter in "ABCD"]


def test_question_is_stripped_and_subject_underscores_become_spaces():
    task = MMLU(num_fewshot=0)
    geography = task.load(MMLU_DATA)[3]
    assert task.context(geography) == (
        "The following are multiple choice questions (with answers) about high school geography.\n\n"
        "Which country has the most people?\nA. India\nB. Brazil\nC. Russia\nD. Norway\nAnswer:"
    )


def test_loglikelihood_mode_predicts_the_argmax():
    task = MMLU()
    samples = task.load(MMLU_DATA)
    truth = answers_by_question(task, samples)
    oracle = FakeProvider(score=lambda r: 0.0 if r.continuation == f" {truth[r.context]}" else -2.0)
    results = run(task, samples, oracle)
    assert [r.metrics["acc"] for r in results] == [1.0] * 6
    assert results[0].extra == {"mode": "loglikelihood", "shots": 5, "logprobs": [-2.0, 0.0, -2.0, -2.0]}
    always_b = FakeProvider(score=lambda r: -1.0 if r.continuation == " B" else -3.0)
    results = run(task, samples, always_b)
    assert [r.prediction for r in results] == ["B"] * 6
    assert [r.metrics["acc"] for r in results] == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_ties_go_to_the_first_choice_like_argmax():
    task = MMLU()
    samples = task.load(MMLU_DATA, limit=1)
    (result,) = run(task, samples, FakeProvider(score=lambda r: -1.0))
    assert result.prediction == "A" and result.metrics["acc"] == 0.0


def test_chat_api_gets_one_dialog_and_the_letter_is_extracted():
    task = MMLU()
    samples = task.load(MMLU_DATA)
    provider = FakeProvider(answer=lambda r: "The answer is (B).", capabilities=CHAT_API)
    results = run(task, samples, provider)
    (request,) = [c for c in provider.calls if isinstance(c, GenerateRequest)][:1]
    assert request.prompt == [{"role": "user", "content": CHAT_INSTRUCTION + ASTRONOMY_PROMPT}]
    assert request.params.temperature == 0.0 and len(provider.calls) == 6
    assert results[0].extra["mode"] == "generate" and "first standalone letter" in results[0].extra["extraction"]
    assert [r.metrics["acc"] for r in results] == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_completion_api_without_loglikelihoods_continues_the_text():
    task = MMLU()
    samples = task.load(MMLU_DATA, limit=1)
    provider = FakeProvider(answer=lambda r: " B", capabilities=COMPLETION_API)
    (result,) = run(task, samples, provider)
    (request,) = provider.calls
    assert request.prompt == ASTRONOMY_PROMPT and request.params.stop == ("\n",)
    assert result.prediction == "B" and result.metrics["acc"] == 1.0


@pytest.mark.parametrize("text, letter", [
    ("B", "B"), (" C\n", "C"), ("(D) Polaris", "D"), ("Answer: A.", "A"), ("I think C or D", "C"),
    ("Bob says a lot", None), ("none of them", None), ("", None),
])
def test_extract_letter(text, letter):
    assert extract_letter(text) == letter


def test_aggregate_reports_macro_micro_category_and_subject():
    def result(subject, acc):
        return SampleResult(f"{subject}/x", {"acc": acc}, "A", "A", subject)

    results = [result("astronomy", 1.0), result("astronomy", 1.0), result("astronomy", 0.0), result("high_school_geography", 0.0)]
    scores = MMLU().aggregate(results)
    assert scores["acc"] == pytest.approx((2 / 3 + 0.0) / 2)
    assert scores["acc_micro"] == pytest.approx(0.5)
    assert scores["acc,subject=astronomy"] == pytest.approx(2 / 3)
    assert scores["acc,category=stem"] == pytest.approx(2 / 3) and scores["acc,category=social_sciences"] == 0.0
    assert MMLU().aggregate([]) == {}


def test_limit_takes_subjects_in_turn():
    samples = MMLU().load(MMLU_DATA, limit=3)
    assert [s.id for s in samples] == ["astronomy/0", "astronomy/1", "high_school_geography/0"]


def test_missing_and_malformed_data_are_one_line_data_errors(tmp_path):
    with pytest.raises(DataError, match="llama2 data fetch mmlu"):
        MMLU().load(tmp_path)
    data = tmp_path / "mmlu"
    shutil.copytree(MMLU_DATA, data)
    (data / "dev" / "astronomy_dev.csv").unlink()
    with pytest.raises(DataError, match="dev/astronomy_dev.csv"):
        MMLU().load(data)
    assert len(MMLU(num_fewshot=0).load(data)) == 6
    (data / "test" / "astronomy_test.csv").write_text("question,A,B,C,D,answer\n")
    with pytest.raises(DataError, match="answer 'answer'"):
        MMLU(num_fewshot=0).load(data)
    (data / "test" / "astronomy_test.csv").write_text("only,four,columns,here\n")
    with pytest.raises(DataError, match="4 columns"):
        MMLU(num_fewshot=0).load(data)


def test_contexts_and_continuations_equal_lm_evals(tmp_path, monkeypatch):
    """lm-eval's own `mmlu` template over the same questions builds the same (context, continuation)s."""
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    from lm_eval.tasks import TaskManager

    task = MMLU()
    samples = [s for s in task.load(MMLU_DATA) if s.group == "astronomy"]
    dev = read_csv(MMLU_DATA / "dev" / "astronomy_dev.csv")
    for split, docs in (("dev", dev), ("test", [s.doc for s in samples])):
        rows = [{"question": d["question"], "choices": d["choices"], "answer": "ABCD".index(d["answer"])} for d in docs]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    template = Path(__import__("lm_eval").__file__).parent / "tasks" / "mmlu" / "default" / "_default_template_yaml"
    config = template.read_text().replace("dataset_path: cais/mmlu", (
        f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    dev: {tmp_path}/dev.jsonl\n    test: {tmp_path}/test.jsonl"))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "local_mmlu.yaml").write_text(config + (
        '\ntask: local_mmlu\nnum_fewshot: 5\n'
        'description: "The following are multiple choice questions (with answers) about astronomy.\\n\\n"\n'))
    reference = TaskManager(include_path=str(tmp_path / "tasks")).load(["local_mmlu"])["tasks"]["local_mmlu"]
    reference.build_all_requests(limit=None, rank=0, world_size=1)
    theirs = [tuple(instance.args) for instance in reference.instances]
    ours = [(r.context, r.continuation) for s in samples for r in task.requests(s, "loglikelihood", Capabilities(loglikelihood=True))]
    assert ours == theirs
