"""`llama2 eval run` end to end: scripted models side by side, resume through the cache, one-line
errors, and the bundled model on a small MMLU-format set."""

from __future__ import annotations

import csv
import json
import re

import pytest

import llama2.evaluate.benchmarks as benchmarks
import llama2.providers.registry as registry
from llama2.cli.main import main
from llama2.providers.fake import FakeProvider

from .runner_doubles import CHOICES, FailingProvider, QuizTask, write_quiz


def knows_the_answer(request):
    """Scores the right choice of "question i" (choice i % 4) highest."""
    number = int(re.search(r"question (\d+)", request.context).group(1))
    return 0.0 if request.continuation == f" {CHOICES[number % 4]}" else -1.0


@pytest.fixture
def fake_models(monkeypatch):
    """`fake:short` picks the shortest choice (right on 1 question in 4), `fake:smart` always the
    right one, `fake:flaky` is `fake:short` failing on question 3; the task `quiz` is `QuizTask`.
    Other specs and tasks go to the real registries."""
    made: dict[str, FakeProvider] = {}
    real_load, real_canonical, real_get_task = registry.load_provider, registry.canonical_spec, benchmarks.get_task

    def load_provider(spec, **overrides):
        if spec == "fake:short":
            made[spec] = FakeProvider(spec)
        elif spec == "fake:smart":
            made[spec] = FakeProvider(spec, score=knows_the_answer)
        elif spec == "fake:flaky":
            made[spec] = FailingProvider(spec=spec, marker="question 3")
        else:
            return real_load(spec, **overrides)
        return made[spec]

    monkeypatch.setattr(registry, "load_provider", load_provider)
    monkeypatch.setattr(registry, "canonical_spec", lambda spec: spec if spec.startswith("fake:") else real_canonical(spec))
    monkeypatch.setattr(benchmarks, "get_task",
                        lambda name, **options: QuizTask() if name == "quiz" else real_get_task(name, **options))
    return made


def test_two_models_side_by_side_with_paired_difference(tmp_path, capsys, fake_models):
    write_quiz(tmp_path / "data" / "quiz", 40)
    out = tmp_path / "out"
    assert main(["eval", "run", "--model", "fake:short", "--model", "fake:smart", "--tasks", "quiz",
                 "--data-dir", str(tmp_path / "data"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fake:short" in printed and "fake:smart" in printed and "(paired)" in printed
    assert "0.250" in printed and "[1.000, 1.000]" in printed and "+0.750" in printed
    assert "loglikelihood" in printed and f"results in {out}/" in printed
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json*")) == [
        "fake-short/quiz/samples.jsonl", "fake-short/quiz/summary.json",
        "fake-smart/quiz/samples.jsonl", "fake-smart/quiz/summary.json"]
    assert (out / "cache.sqlite").is_file()


def test_json_output_and_a_rerun_answers_everything_from_the_cache(tmp_path, capsys, fake_models):
    write_quiz(tmp_path / "quiz", 12)
    args = ["eval", "run", "-m", "fake:short", "-m", "fake:smart", "--tasks", "quiz", "--data-dir", str(tmp_path / "quiz"),
            "--output", str(tmp_path / "out"), "--limit", "8", "--batch-size", "3", "--concurrency", "2", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert [(r["model"], r["task"], r["mode"], r["n_samples"]) for r in first["results"]] == \
        [("fake:short", "quiz", "loglikelihood", 8), ("fake:smart", "quiz", "loglikelihood", 8)]
    assert first["results"][0]["requests"]["sent"] == 32 and first["results"][0]["settings"]["batch_size"] == 3
    (difference,) = first["differences"]
    assert (difference["first"], difference["second"], difference["n_paired"]) == ("fake:short", "fake:smart", 8)
    assert difference["estimate"] == pytest.approx(0.75) and difference["low"] > 0

    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert fake_models["fake:short"].calls == [] and fake_models["fake:smart"].calls == []
    assert [r["requests"]["cached"] for r in second["results"]] == [32, 32]
    assert [r["metrics"] for r in second["results"]] == [r["metrics"] for r in first["results"]]


def test_one_model_prints_one_line_per_task(tmp_path, capsys, fake_models, monkeypatch):
    write_quiz(tmp_path / "data" / "quiz", 8)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert main(["eval", "run", "--model", "fake:short", "--tasks", "quiz", "--data-dir", "data"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("quiz: acc 0.250 [") and "(macro, 95% CI) by loglikelihood; 8/8 samples scored" in printed
    assert (tmp_path / "eval-results" / "fake-short" / "quiz" / "summary.json").is_file()
    assert (tmp_path / "home" / ".cache" / "llama2" / "eval-cache.sqlite").is_file()  # no --output: the shared cache


def test_failed_samples_are_reported_and_left_out_of_the_pairing(tmp_path, capsys, fake_models):
    write_quiz(tmp_path / "quiz", 8)
    assert main(["eval", "run", "-m", "fake:flaky", "-m", "fake:smart", "--tasks", "quiz", "--data-dir",
                 str(tmp_path / "quiz"), "--output", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "│ 1 failed" in printed and "n=7" in printed
    assert "1 sample(s) failed after retries and were left out; rerun to retry them" in printed


@pytest.mark.parametrize("args, message", [
    (["--tasks", "nonsense"], "unknown task 'nonsense'"),
    (["--tasks", " , "], "--tasks: name at least one benchmark"),
    (["--tasks", "quiz", "--limit", "0"], "limit must be at least 1"),
    (["--tasks", "quiz", "--concurrency", "0"], "concurrency must be at least 1"),
    (["--tasks", "quiz", "--data-dir", "missing"], "quiz.jsonl: quiz data not found"),
    (["--tasks", "quiz", "--model", "nope:model"], "unknown provider 'nope'"),
    (["--tasks", "quiz", "--model", "local:default", "--model", "default"], "are the same model; name each model once"),
    (["--tasks", "mmlu", "--num-fewshot", "2"], "--num-fewshot applies to gsm8k only; 'mmlu' keeps its fixed protocol"),
    (["--tasks", "gsm8k", "--num-fewshot", "9"], "gsm8k: --num-fewshot must be a whole number from 0 to 8"),
])
def test_errors_are_one_line(tmp_path, capsys, fake_models, monkeypatch, args, message):
    write_quiz(tmp_path / "quiz", 4)
    monkeypatch.chdir(tmp_path)
    if "--model" not in args:
        args = [*args, "--model", "fake:short"]
    if "--data-dir" not in args:
        args = [*args, "--data-dir", "."]
    assert main(["eval", "run", *args, "--output", "out"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llama2: error: ") and message in err and err.count("\n") == 1


def write_mmlu(folder, subjects=("anatomy", "astronomy"), questions=3):
    """MMLU's release layout: dev/{subject}_dev.csv (5 shots) and test/{subject}_test.csv, no header."""
    for split, count in (("dev", 5), ("test", questions)):
        (folder / split).mkdir(parents=True, exist_ok=True)
        for subject in subjects:
            with open(folder / split / f"{subject}_{split}.csv", "w", newline="") as handle:
                csv.writer(handle).writerows(
                    [f"What is {i} plus {i}, in {subject}?", str(2 * i), str(i), str(i + 1), "none", "A"]
                    for i in range(count))


def test_the_bundled_model_on_mmlu_format_data(tmp_path, capsys):
    write_mmlu(tmp_path / "data" / "mmlu")
    args = ["eval", "run", "--model", "local:default", "--tasks", "mmlu", "--data-dir", str(tmp_path / "data"),
            "--output", str(tmp_path / "out"), "--json"]
    assert main(args) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert (result["task"], result["mode"], result["n_scored"], result["failures"]["count"]) == ("mmlu", "loglikelihood", 6, 0)
    assert result["identity"].startswith("local:default@")
    assert result["requests"] == {"asked": 24, "unique": 24, "cached": 0, "sent": 24, "failed": 0}
    assert result["primary"]["estimator"] == "macro"  # MMLU's acc is the mean over subjects; so is its CI's
    assert result["primary"]["estimate"] == pytest.approx(result["metrics"]["acc"])
    samples = [json.loads(line) for line in (tmp_path / "out" / "local-default" / "mmlu" / "samples.jsonl").open()]
    assert len(samples) == 6 and {s["group"] for s in samples} == {"anatomy", "astronomy"}

    assert main(args) == 0  # resumed: every log-likelihood comes from the cache
    (again,) = json.loads(capsys.readouterr().out)["results"]
    assert again["requests"]["sent"] == 0 and again["metrics"] == result["metrics"]


def test_num_fewshot_gives_gsm8k_its_own_results_and_cache_entries(tmp_path, capsys, fake_models):
    """`--num-fewshot 2` sends two exemplars, names the task gsm8k-2shot (its own folder) and records the
    count; the 8-shot default then finds none of those answers in the cache."""
    data = tmp_path / "gsm8k"
    data.mkdir()
    data.joinpath("test.jsonl").write_text("".join(
        json.dumps({"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}) + "\n" for i in range(3)))
    base = ["eval", "run", "--model", "fake:short", "--tasks", "gsm8k", "--data-dir", str(data),
            "--output", str(tmp_path / "out"), "--json"]
    assert main([*base, "--num-fewshot", "2"]) == 0
    (two,) = json.loads(capsys.readouterr().out)["results"]
    assert two["task"] == "gsm8k-2shot" and two["settings"]["num_fewshot"] == 2
    assert fake_models["fake:short"].calls[0].prompt.count("Q: ") == 3  # two exemplars and the question
    assert main(base) == 0
    (eight,) = json.loads(capsys.readouterr().out)["results"]
    assert eight["task"] == "gsm8k" and eight["settings"]["num_fewshot"] == 8
    assert eight["requests"]["cached"] == 0 and eight["requests"]["sent"] == 3
    assert fake_models["fake:short"].calls[0].prompt.count("Q: ") == 9
    folders = sorted(p.parent.name for p in (tmp_path / "out").glob("*/*/summary.json"))
    assert folders == ["gsm8k", "gsm8k-2shot"]
