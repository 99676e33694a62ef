"""The runner: dedupe, cache, resume after a kill, failures, concurrency, random draws, results folders."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llama2.errors import ConfigError, DataError, ProviderError, UnsupportedError
from llama2.evaluate.cache import ResponseCache
from llama2.evaluate.results import read_result, read_results, result_folder, write_result
from llama2.evaluate.runner import run_task, running_cost
from llama2.providers.base import Capabilities, Completion, LoglikelihoodRequest
from llama2.providers.fake import FakeProvider

from .runner_doubles import DrawTask, FailingProvider, QuizTask, ScriptedAPI, SlowProvider, die_roller, write_quiz

HERE = Path(__file__).resolve().parent


def run(provider, task, data_dir, cache, **kwargs):
    return asyncio.run(run_task(provider, task, data_dir=data_dir, cache=cache, **kwargs))


def test_scores_by_loglikelihood_and_dedupes_identical_requests(tmp_path):
    data = write_quiz(tmp_path / "quiz", 12, duplicate_of={5: 1})  # q5 asks exactly what q1 asks
    provider = FakeProvider()
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        result = run(provider, QuizTask(), data, cache, batch_size=5)
    assert result.mode == "loglikelihood"
    assert result.metrics == {"acc": pytest.approx(3 / 12)}  # q0, q4, q8: answer is the shortest choice
    assert result.requests == {"asked": 48, "unique": 44, "cached": 0, "sent": 44, "failed": 0}
    assert len(provider.calls) == 44 and len(set(provider.calls)) == 44
    assert [s.group for s in result.samples[:3]] == ["g1", "g2", "g1"]  # taken from the sample
    assert result.failures == [] and result.n_samples == 12


def test_chat_only_provider_is_scored_by_generation(tmp_path):
    data = write_quiz(tmp_path / "quiz", 8)
    chat_only = Capabilities(chat=True, text_completion=False, loglikelihood=False)
    provider = FakeProvider(answer=lambda r: " ccc", capabilities=chat_only)
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        result = run(provider, QuizTask(), data, cache, limit=8)
    assert result.mode == "generate"
    assert result.metrics["acc"] == pytest.approx(2 / 8)  # answer index 2 for q2, q6
    assert all(isinstance(call.prompt, list) for call in provider.calls)
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens == 8


def test_a_killed_run_resumes_without_repeating_answered_requests(tmp_path):
    data = write_quiz(tmp_path / "quiz", 10)
    cache_path = tmp_path / "c.sqlite"
    dying = FailingProvider(fail_after=3, error=RuntimeError("killed"))
    with ResponseCache(cache_path) as cache, pytest.raises(RuntimeError, match="killed"):
        run(dying, QuizTask(), data, cache, batch_size=4, concurrency=1)
    answered = [request for call in range(3) for request in dying.calls[4 * call:4 * call + 4]]
    assert len(answered) == 12

    resumed = FakeProvider()
    with ResponseCache(cache_path) as cache:
        result = run(resumed, QuizTask(), data, cache, batch_size=4)
    assert len(resumed.calls) == 40 - 12 and not set(resumed.calls) & set(answered)
    assert result.requests["cached"] == 12 and result.requests["sent"] == 28

    with ResponseCache(tmp_path / "fresh.sqlite") as cache:
        uninterrupted = run(FakeProvider(), QuizTask(), data, cache)
    assert [s.metrics for s in result.samples] == [s.metrics for s in uninterrupted.samples]


def test_a_cancelled_run_keeps_what_it_answered(tmp_path):
    data = write_quiz(tmp_path / "quiz", 20)
    provider = SlowProvider(delay=0.02)

    async def cancel_midway():
        with ResponseCache(tmp_path / "c.sqlite") as cache:
            job = asyncio.ensure_future(run_task(provider, QuizTask(), data_dir=data, cache=cache, batch_size=4,
                                                 concurrency=2))
            while len(provider.call_sizes) < 6:
                await asyncio.sleep(0.005)
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job
            return len(cache)

    stored = asyncio.run(cancel_midway())
    assert 4 <= stored < 80
    resumed = FakeProvider()
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        run(resumed, QuizTask(), data, cache)
    assert len(resumed.calls) == 80 - stored


KILLED_RUN = """
import asyncio, sys
sys.path.insert(0, {here!r})
from runner_doubles import QuizTask, SlowProvider
from llama2.evaluate.cache import ResponseCache
from llama2.evaluate.runner import run_task
provider = SlowProvider(delay=0.05)
with ResponseCache({cache!r}) as cache:
    asyncio.run(run_task(provider, QuizTask(), data_dir={data!r}, cache=cache, batch_size=2, concurrency=1))
"""


def stored_count(path: Path) -> int:
    with ResponseCache(path) as cache:
        return len(cache)


def test_sigkill_loses_no_committed_response(tmp_path):
    data = write_quiz(tmp_path / "quiz", 40)
    cache_path = tmp_path / "c.sqlite"
    script = KILLED_RUN.format(here=str(HERE), cache=str(cache_path), data=str(data))
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if cache_path.exists() and stored_count(cache_path) >= 10:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    with ResponseCache(cache_path) as cache:
        stored = len(cache)
        resumed = FakeProvider()
        result = asyncio.run(run_task(resumed, QuizTask(), data_dir=data, cache=cache))
    assert 10 <= stored < 160
    assert len(resumed.calls) == 160 - stored and result.requests["cached"] == stored


def test_failed_requests_fail_their_sample_and_are_not_cached(tmp_path):
    data = write_quiz(tmp_path / "quiz", 8)
    provider = FailingProvider(marker="question 3")
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        result = run(provider, QuizTask(), data, cache, batch_size=8, concurrency=1)
        assert [(f.sample_id, f.group, f.error) for f in result.failures] == [("q3", "g2", "upstream 503 after 3 retries")]
        assert [s.sample_id for s in result.samples] == [f"q{i}" for i in range(8) if i != 3]
        assert result.requests["failed"] == 4 and result.metrics["acc"] == pytest.approx(2 / 7)
        # the chunk holding q3 failed whole; its other requests were asked again one by one and cached
        assert len(cache) == 28

        retry = FakeProvider()
        again = run(retry, QuizTask(), data, cache)
    assert {call.context for call in retry.calls} == {"Q: question 3\nA:"} and len(retry.calls) == 4
    assert again.failures == [] and again.metrics["acc"] == pytest.approx(2 / 8)


def test_a_provider_that_keeps_failing_stops_the_run(tmp_path):
    data = write_quiz(tmp_path / "quiz", 20)
    provider = FailingProvider(fail_after=0)
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(ProviderError, match="5 requests in a row failed .*rerun to resume"):
            run(provider, QuizTask(), data, cache, batch_size=1, concurrency=1, max_consecutive_failures=5)
        assert len(cache) == 0


def test_unsupported_requests_stop_the_run(tmp_path):
    data = write_quiz(tmp_path / "quiz", 4)
    provider = FailingProvider(fail_after=0, error=UnsupportedError("fake: cannot score log-likelihoods"))
    with ResponseCache(tmp_path / "c.sqlite") as cache, pytest.raises(UnsupportedError):
        run(provider, QuizTask(), data, cache)


def test_chunks_respect_batch_size_and_concurrency(tmp_path):
    data = write_quiz(tmp_path / "quiz", 30)
    provider = SlowProvider(delay=0.01)
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        run(provider, QuizTask(), data, cache, batch_size=7, concurrency=3)
    assert max(provider.call_sizes) == 7 and sum(provider.call_sizes) == 120
    assert provider.max_in_flight == 3


def test_random_draws_stay_distinct_and_resume(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        provider = FakeProvider(answer=die_roller())
        first = run(provider, DrawTask(n=2, k=3), None, cache, samples=DrawTask(n=2, k=3).load(tmp_path))
        assert len(provider.calls) == 6  # the same prompt six times: six draws, none merged
        assert [s.prediction for s in first.samples] == ["1,2,3", "4,5,6"] and first.metrics["hit"] == 0.5

        again = FakeProvider(answer=die_roller())
        second = run(again, DrawTask(n=2, k=3), tmp_path, cache)
        assert again.calls == [] and [s.prediction for s in second.samples] == ["1,2,3", "4,5,6"]

        seeded = FakeProvider(answer=die_roller())
        run(seeded, DrawTask(n=2, k=3, seed=0), tmp_path, cache)
        assert len(seeded.calls) == 1  # a seeded request is deterministic: asked once, shared


def test_usage_and_running_cost(tmp_path):
    class PricedProvider(FakeProvider):
        async def generate(self, requests):
            completions = await super().generate(requests)
            return [Completion(c.text, c.finish_reason, 10, 2, latency_s=0.1 * (i + 1), cost_usd=0.5)
                    for i, c in enumerate(completions)]

    data = write_quiz(tmp_path / "quiz", 4)
    provider = PricedProvider(capabilities=Capabilities(loglikelihood=False))
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        result = run(provider, QuizTask(), data, cache, batch_size=4)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.cost_usd) == (40, 8, 2.0)
    assert result.usage.latency_p50_s == pytest.approx(0.25) and result.usage.latency_p95_s == pytest.approx(0.385)

    assert running_cost(provider, 1.25) == 1.25
    provider.usage = {"cost_usd": 3.0}
    assert running_cost(provider, 1.25) == 3.0


def test_bad_settings_are_config_errors(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(ConfigError, match="concurrency must be at least 1"):
            run(FakeProvider(), QuizTask(), tmp_path, cache, concurrency=0)
        with pytest.raises(ConfigError, match="quiz: give the samples or a data folder"):
            run(FakeProvider(), QuizTask(), None, cache)


def test_results_folder_round_trip(tmp_path):
    data = write_quiz(tmp_path / "quiz", 12, groups=("algebra", "biology", "chemistry"))
    provider = FailingProvider(marker="question 7", spec="local:/ckpt/llama-2-7b")
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        result = run(provider, QuizTask(), data, cache, limit=12)
    folder = write_result(tmp_path / "out", result)
    assert folder == result_folder(tmp_path / "out", "local:/ckpt/llama-2-7b", "quiz")
    assert folder == tmp_path / "out" / "local-ckpt-llama-2-7b" / "quiz"
    assert sorted(p.name for p in folder.iterdir()) == ["samples.jsonl", "summary.json"]

    summary = json.loads((folder / "summary.json").read_text())
    assert (summary["model"], summary["identity"], summary["task"], summary["mode"]) == \
        ("local:/ckpt/llama-2-7b", "local:/ckpt/llama-2-7b", "quiz", "loglikelihood")
    assert (summary["n_samples"], summary["n_scored"], summary["failures"]["count"]) == (12, 11, 1)
    assert summary["failures"]["samples"] == [{"id": "q7", "group": "biology", "error": "upstream 503 after 3 retries"}]
    primary = summary["primary"]
    assert primary["metric"] == "acc" and primary["estimator"] == "macro"
    assert primary["low"] <= primary["estimate"] <= primary["high"]
    assert set(summary["usage"]) == {"prompt_tokens", "completion_tokens", "cost_usd", "latency_p50_s", "latency_p95_s"}
    assert summary["settings"]["limit"] == 12 and summary["llama2_version"]
    assert summary["started_at"] <= summary["finished_at"]

    lines = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 11 and set(lines[0]) == {"id", "group", "metrics", "prediction", "target", "extra"}
    assert lines[0] == {"id": "q0", "group": "algebra", "metrics": {"acc": 1.0}, "prediction": "a", "target": "a",
                        "extra": {}}

    stored = read_results(tmp_path / "out")
    assert [(s.spec, s.task, s.primary_metric) for s in stored] == [("local:/ckpt/llama-2-7b", "quiz", "acc")]
    assert stored[0].samples() == result.samples

    write_result(tmp_path / "out", result)  # a rerun replaces the folder whole
    assert read_result(folder).summary["n_scored"] == 11
    assert not [p for p in (tmp_path / "out" / "local-ckpt-llama-2-7b").iterdir() if p.name.startswith(".")]


def test_reading_missing_or_broken_results_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="results folder not found"):
        read_results(tmp_path / "none")
    broken = tmp_path / "out" / "m" / "t"
    broken.mkdir(parents=True)
    (broken / "summary.json").write_text("{")
    with pytest.raises(DataError, match="summary.json: not valid JSON"):
        read_results(tmp_path / "out")
    (broken / "summary.json").write_text("{}")
    (broken / "samples.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(DataError, match="samples.jsonl:1: not a per-sample result line"):
        read_result(broken).samples()


def test_loglikelihood_requests_are_sent_before_generation(tmp_path):
    # a task mixing kinds would get one provider call per kind and chunk, never a mixed list
    class Mixed(QuizTask):
        def requests(self, sample, mode, capabilities):
            return [LoglikelihoodRequest("c", sample.id), *super().requests(sample, "generate", capabilities)]

        def score(self, sample, mode, responses):
            return super().score(sample, "generate", responses[1:])

    data = write_quiz(tmp_path / "quiz", 3)
    provider = FakeProvider()
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        run(provider, Mixed(), data, cache, batch_size=10)
    kinds = [type(call).__name__ for call in provider.calls]
    assert kinds == ["LoglikelihoodRequest"] * 3 + ["GenerateRequest"] * 3


def test_progress_says_the_mode_and_draws_a_bar_on_a_terminal(tmp_path, capsys, monkeypatch):
    data = write_quiz(tmp_path / "quiz", 4)
    priced = FakeProvider(capabilities=Capabilities(loglikelihood=False))
    priced.usage = {"cost_usd": 0.0123}
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        run(FakeProvider(), QuizTask(), data, cache, progress=True)
        assert capsys.readouterr().err == "quiz on fake:scripted: loglikelihood mode, 4 samples, 16 requests (0 cached)\n"
        monkeypatch.setenv("FORCE_COLOR", "1")  # rich then treats stderr as a terminal
        monkeypatch.setenv("COLUMNS", "160")
        run(priced, QuizTask(), data, cache, progress=True)
    err = capsys.readouterr().err
    assert "generate mode, 4 samples, 4 requests (0 cached)" in err
    assert "4/4" in err and "req/s" in err and "$0.0123" in err


def test_duplicate_sample_ids_are_a_data_error(tmp_path):
    class Twice(QuizTask):
        def load(self, data_dir, limit=None):
            return super().load(data_dir, limit) * 2

    data = write_quiz(tmp_path / "quiz", 2)
    with ResponseCache(tmp_path / "c.sqlite") as cache, pytest.raises(DataError, match="sample id 'q0' occurs twice"):
        run(FakeProvider(), Twice(), data, cache)


def test_api_providers_get_one_request_per_call_within_their_concurrency(tmp_path):
    data = write_quiz(tmp_path / "quiz", 12)
    api = ScriptedAPI(concurrency=3)
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        result = asyncio.run(run_task(api, QuizTask(), data_dir=data, cache=cache))
    assert api.call_sizes == [1] * 12 and api.max_in_flight == 3
    assert (result.settings["concurrency"], result.settings["batch_size"]) == (3, 1)
    assert result.mode == "generate" and result.metrics["acc"] == pytest.approx(3 / 12)
    assert result.usage.cost_usd == pytest.approx(0.12) and running_cost(api, None) == pytest.approx(0.12)
    assert result.usage.latency_p50_s >= 0.01
