"""OpenAI evals registry format: specs, the registry YAML, sample files, and the three basic graders."""

from __future__ import annotations

import json

import pytest

from llama2.errors import ConfigError, DataError
from llama2.evaluate.benchmarks import get_task
from llama2.evaluate.benchmarks.openai_evals import (
    OpenAIEval, chat_to_text, f1_score, fuzzy_match, includes, match, normalize, parse_spec,
)
from llama2.providers.base import Capabilities
from llama2.providers.fake import FakeProvider

from .drive import CHAT_API, DATA, run

REGISTRY = DATA / "evals" / "registry"
YAML = REGISTRY / "evals" / "capitals.yaml"
SAMPLES = REGISTRY / "data" / "capitals" / "samples.jsonl"
TEXT_ONLY = Capabilities(chat=False, text_completion=True)


@pytest.mark.parametrize("answer, ideals, expected", [
    ("Paris", ["Paris"], True), ("  Paris is the capital.", ["Paris"], True), ("The capital is Paris", ["Paris"], False),
    ("Tōkyō", ["Tokyo", "Tōkyō"], True), ("paris", ["Paris"], False),
])
def test_match_is_a_prefix_test_after_stripping(answer, ideals, expected):
    assert match(answer, ideals) is expected


def test_includes_with_and_without_case():
    assert includes("The capital is Paris.", ["Paris"]) and not includes("the capital is paris", ["Paris"])
    assert includes("the capital is paris", ["Paris"], ignore_case=True)


def test_fuzzy_match_uses_evals_normalization():
    assert normalize("The  Eiffel-Tower, in Paris!") == "eiffeltower in paris"
    assert fuzzy_match("It's the city of Rome.", ["rome"]) and fuzzy_match("Rome", ["The ancient city of Rome"])
    assert not fuzzy_match("Milan", ["Rome"]) and fuzzy_match("", ["the"]) and not fuzzy_match("", ["Rome"])


def test_f1_score_against_hand_values():
    assert f1_score("the city of Rome", ["Rome"]) == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    assert f1_score("Rome", ["Milan", "rome"]) == 1.0 and f1_score("Milan", ["Rome"]) == 0.0


def test_chat_prompts_render_for_completion_models_as_evals_does():
    assert chat_to_text([{"role": "user", "content": "Hi"}]) == "Hi"
    assert chat_to_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]) == (
        "Be brief.\nUser: Capital of France?\nAssistant:")


def test_registry_entries_by_name_and_by_id():
    spec = parse_spec(f"evals:{YAML}#capitals")
    assert (spec.name, spec.grader, spec.samples_path, spec.max_tokens) == ("capitals", "match", SAMPLES, 500)
    assert parse_spec(f"evals:{YAML}#capitals-includes.dev.v0").ignore_case is True
    fuzzy = parse_spec(f"evals:{YAML}#capitals-fuzzy")
    assert (fuzzy.grader, fuzzy.max_tokens) == ("fuzzy_match", 20)


def test_registry_errors_name_the_choices():
    with pytest.raises(ConfigError, match="defines 4 evals .*pick one with #NAME"):
        parse_spec(f"evals:{YAML}")
    with pytest.raises(ConfigError, match="no eval 'nope'; choose one of capitals, capitals-includes"):
        parse_spec(f"evals:{YAML}#nope")
    with pytest.raises(ConfigError, match="ModelBasedClassify.*supported: evals.elsuite.basic.match:Match"):
        parse_spec(f"evals:{YAML}#capitals-model-graded")
    with pytest.raises(DataError, match="not found"):
        parse_spec("evals:/no/such/eval.yaml#x")
    with pytest.raises(ConfigError, match="unknown grader 'exact'"):
        parse_spec(f"evals:{SAMPLES}#exact")


def test_match_eval_end_to_end_on_a_chat_api():
    task = get_task(f"evals:{YAML}#capitals")
    assert isinstance(task, OpenAIEval) and task.name == "evals:capitals" and task.metrics == ("accuracy",)
    samples = task.load(None)
    answers = {"France": "Paris.", "Japan": "Kyoto", "Italy": " Rome"}
    provider = FakeProvider(answer=lambda r: next(v for k, v in answers.items() if k in r.prompt[-1]["content"]), capabilities=CHAT_API)
    results = run(task, samples, provider)
    assert provider.calls[0].prompt == [{"role": "system", "content": "Answer with the name of the city only."},
                                        {"role": "user", "content": "What is the capital of France?"}]
    assert provider.calls[2].prompt == [{"role": "user", "content": "Q: What is the capital of Italy?\nA:"}]
    assert provider.calls[0].params.temperature == 0.0 and provider.calls[0].params.max_new_tokens == 500
    assert [r.metrics["accuracy"] for r in results] == [1.0, 0.0, 1.0]
    assert results[1].target == "Tokyo | Tōkyō" and task.aggregate(results)["accuracy"] == pytest.approx(2 / 3)


def test_completion_models_get_chat_inputs_as_text():
    task = OpenAIEval(f"evals:{YAML}#capitals-includes")
    samples = task.load(None)
    provider = FakeProvider(answer=lambda r: "I believe it is PARIS.", capabilities=TEXT_ONLY)
    results = run(task, samples, provider)
    assert provider.calls[0].prompt == "Answer with the name of the city only.\nUser: What is the capital of France?\nAssistant:"
    assert provider.calls[2].prompt == "Q: What is the capital of Italy?\nA:"
    assert [r.metrics["accuracy"] for r in results] == [1.0, 0.0, 0.0]


def test_fuzzy_match_reports_accuracy_and_f1():
    task = OpenAIEval(f"evals:{YAML}#capitals-fuzzy")
    assert task.metrics == ("accuracy", "f1_score")
    results = run(task, task.load(None), FakeProvider(answer=lambda r: "the city of Paris", capabilities=CHAT_API))
    assert results[0].metrics == {"accuracy": 1.0, "f1_score": pytest.approx(0.5)}
    assert results[1].metrics == {"accuracy": 0.0, "f1_score": 0.0}


def test_a_samples_file_with_a_grader_and_few_shot(tmp_path):
    samples = tmp_path / "quiz.jsonl"
    samples.write_text(json.dumps({"input": [{"role": "user", "content": "2+2?"}], "ideal": "4"}) + "\n")
    task = get_task(f"evals:{samples}#includes")
    assert task.name == "evals:quiz" and task.spec.grader == "includes"
    assert get_task(f"evals:{samples}").spec.grader == "match"
    shots = tmp_path / "shots.jsonl"
    shots.write_text(json.dumps({"sample": [{"role": "system", "name": "example_user", "content": "1+1?"},
                                            {"role": "system", "name": "example_assistant", "content": "2"}]}) + "\n")
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "quiz.yaml").write_text(
        f"quiz:\n  id: quiz.v0\nquiz.v0:\n  class: evals.elsuite.basic.match:Match\n"
        f"  args:\n    samples_jsonl: {samples}\n    num_few_shot: 1\n    few_shot_jsonl: {shots}\n")
    few = get_task(f"evals:{tmp_path / 'evals' / 'quiz.yaml'}")
    (sample,) = few.load(None)
    (request,) = few.requests(sample, "generate", CHAT_API)
    assert request.prompt == [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
                              {"role": "user", "content": "2+2?"}]


@pytest.mark.parametrize("line, message", [
    ('{"input": "q"}', "'ideal' must be a string or a non-empty list"),
    ('{"input": [{"role": "robot", "content": "hi"}], "ideal": "x"}', "unknown chat role 'robot'"),
    ('{"input": [], "ideal": "x"}', "'input' must be a string or a non-empty list"),
    ('{"input": "q", "ideal": [1]}', "'ideal' must be a string"),
])
def test_malformed_samples_name_the_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"input": "ok", "ideal": "ok"}\n' + line + "\n")
    with pytest.raises(DataError, match=f"bad.jsonl:2: {message}"):
        OpenAIEval(f"evals:{path}#match").load(None)
