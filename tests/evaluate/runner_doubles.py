"""Small tasks and providers for the runner's tests: a multiple-choice quiz read from JSONL (both
modes), a sampling task whose requests are random draws, providers that fail or stall on cue, and an
API provider built on the real `RemoteProvider`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

from llama2.errors import DataError, ProviderError
from llama2.evaluate.benchmarks.base import Mode, Sample, SampleResult, Task
from llama2.providers.base import Capabilities, GenerateRequest, LoglikelihoodRequest
from llama2.providers.fake import FakeProvider
from llama2.providers.prices import Price
from llama2.providers.remote import Answer, Piece, RemoteProvider
from llama2.providers.settings import ProviderSettings
from llama2.types import SamplingParams

CHOICES = ["a", "bb", "ccc", "dddd"]


def write_quiz(folder: Path, n: int, *, groups: Sequence[str] = ("g1", "g2"), duplicate_of: dict[int, int] | None = None) -> Path:
    """`folder/quiz.jsonl` with `n` questions; question i's answer is choice i % 4, so a FakeProvider
    (which prefers the shortest continuation, choice 0) gets exactly those with i % 4 == 0 right.
    `duplicate_of` {i: j} gives question i the text of question j (identical requests)."""
    folder.mkdir(parents=True, exist_ok=True)
    duplicate_of = duplicate_of or {}
    rows = [{"id": f"q{i}", "question": f"question {duplicate_of.get(i, i)}", "choices": CHOICES, "answer": i % 4,
             "group": groups[i % len(groups)]} for i in range(n)]
    (folder / "quiz.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


class QuizTask(Task):
    """Multiple choice: by the log-likelihood of each choice, or by generating the choice's text."""

    name = "quiz"
    modes = ("loglikelihood", "generate")
    metrics = ("acc",)

    def load(self, data_dir: Path, limit: int | None = None) -> list[Sample]:
        path = Path(data_dir) / "quiz.jsonl"
        if not path.is_file():
            raise DataError(f"{path}: quiz data not found; write it with write_quiz")
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [Sample(row["id"], row, row["group"]) for row in rows][:limit]

    def requests(self, sample: Sample, mode: Mode, capabilities: Capabilities):
        prompt = f"Q: {sample.doc['question']}\nA:"
        if mode == "loglikelihood":
            return [LoglikelihoodRequest(prompt, f" {choice}") for choice in sample.doc["choices"]]
        params = SamplingParams(temperature=0, max_new_tokens=8)
        return [GenerateRequest(prompt if capabilities.text_completion else [{"role": "user", "content": prompt}], params)]

    def score(self, sample: Sample, mode: Mode, responses) -> SampleResult:
        choices = sample.doc["choices"]
        if mode == "loglikelihood":
            picked = max(range(len(choices)), key=lambda i: responses[i].logprob)
        else:
            text = responses[0].text.strip()
            picked = choices.index(text) if text in choices else -1
        target = choices[sample.doc["answer"]]
        return SampleResult(sample.id, {"acc": float(picked == sample.doc["answer"])},
                            choices[picked] if picked >= 0 else responses[0].text, target)


class DrawTask(Task):
    """Each sample asks the same prompt `k` times at temperature 0.8 (pass@k style); with `seed` set
    the requests are seeded instead."""

    name = "draws"
    modes = ("generate",)
    metrics = ("hit",)

    def __init__(self, n: int = 2, k: int = 3, seed: int | None = None) -> None:
        self.n, self.k, self.seed = n, k, seed

    def load(self, data_dir: Path, limit: int | None = None) -> list[Sample]:
        return [Sample(f"s{i}", {"prompt": "roll a die:"}) for i in range(self.n)][:limit]

    def requests(self, sample: Sample, mode: Mode, capabilities: Capabilities):
        params = SamplingParams(temperature=0.8, max_new_tokens=4, seed=self.seed)
        return [GenerateRequest(sample.doc["prompt"], params) for _ in range(self.k)]

    def score(self, sample: Sample, mode: Mode, responses) -> SampleResult:
        texts = [r.text for r in responses]
        return SampleResult(sample.id, {"hit": float("6" in texts)}, ",".join(texts), "6")


def die_roller():
    """An `answer` function returning 1, 2, 3, ... on successive calls: each draw differs."""
    counter = iter(range(1, 10_000))
    return lambda request: str(next(counter))


class FailingProvider(FakeProvider):
    """Raises `error` on log-likelihood requests whose context contains `marker` (the whole call
    fails, as an API call does), or on every call after `fail_after` successful calls."""

    def __init__(self, *, marker: str | None = None, fail_after: int | None = None,
                 error: Exception = ProviderError("upstream 503 after 3 retries"), **kwargs) -> None:
        super().__init__(**kwargs)
        self.marker, self.fail_after, self.error = marker, fail_after, error
        self.call_sizes: list[int] = []

    async def loglikelihood(self, requests):
        if self.fail_after is not None and len(self.call_sizes) >= self.fail_after:
            raise self.error
        if self.marker and any(self.marker in r.context for r in requests):
            raise self.error
        self.call_sizes.append(len(requests))
        return await super().loglikelihood(requests)


class SlowProvider(FakeProvider):
    """Sleeps `delay` seconds per call and records the largest number of calls in flight at once."""

    def __init__(self, delay: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        self.delay, self.in_flight, self.max_in_flight = delay, 0, 0
        self.call_sizes: list[int] = []

    async def loglikelihood(self, requests):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.call_sizes.append(len(requests))
        try:
            await asyncio.sleep(self.delay)
            return await super().loglikelihood(requests)
        finally:
            self.in_flight -= 1


class ScriptedAPI(RemoteProvider):
    """An API provider (the real `RemoteProvider` machinery: slots, accounting) whose endpoint is a
    coroutine: each answer takes `delay` seconds, costs $0.01 and is choice "ccc"."""

    capabilities = Capabilities(chat=True, text_completion=False, loglikelihood=False)

    def __init__(self, concurrency: int, delay: float = 0.01) -> None:
        super().__init__("api:scripted", "scripted", ProviderSettings(concurrency=concurrency,
                                                                      prices={"scripted": Price(1000.0, 0.0)}))
        self.delay, self.in_flight, self.max_in_flight = delay, 0, 0
        self.call_sizes: list[int] = []

    async def generate(self, requests):
        self.call_sizes.append(len(requests))
        return await super().generate(requests)

    async def _answer(self, request) -> Answer:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return Answer("ccc", "stop", 10, 1, "scripted")

    async def _pieces(self, request):
        yield Piece("ccc", "stop", 10, 1, "scripted")
