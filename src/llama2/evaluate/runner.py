"""The evaluation runner: every request of every sample, deduplicated, answered from the cache or
sent to the provider concurrently, then scored by the task.

Flow of `run_task` (lm-evaluation-harness's split: tasks build requests, the runner answers them):
1. load the samples; pick the mode (log-likelihood where task and provider both can, else generation);
2. build each sample's requests and key them (`cache.request_key`); identical deterministic
   requests collapse into one (MMLU's shared few-shot contexts, tasks sharing prompts);
3. answer what the cache holds; send the rest in chunks of `batch_size` with up to `concurrency`
   chunks in flight. A local provider batches a whole chunk in one engine call (default chunks of
   32); an API provider gets one request per call (its calls are separate HTTP requests anyway, and
   one failure would lose the rest of a bigger call's answers) with as many in flight as its own
   concurrency setting allows. Each answered chunk is committed to the cache at once, so a killed
   run resumes where it stopped;
4. score each sample whose requests were all answered, aggregate, and time and price the run.

A request that fails after the provider's own retries (`ProviderError`, or a prompt longer than the
context window) is isolated — a failing chunk is retried one request at a time — and its sample is
recorded as failed; the run goes on and the failure is never cached. `UnsupportedError` (a task
asking what the backend cannot do) stops the run, and so do `max_consecutive_failures` failures in a
row: that is a provider that is down, not a bad request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from llama2.errors import ConfigError, ContextLengthError, DataError, ProviderError, UnsupportedError
from llama2.evaluate.benchmarks.base import Mode, Request, Response, Sample, SampleResult, Task
from llama2.evaluate.cache import ResponseCache, is_random_draw, request_key, request_kind
from llama2.evaluate.results import SampleFailure, TaskResult, Usage, write_result
from llama2.progress import ProgressBar
from llama2.providers.base import Completion, Provider
from llama2.providers.remote import RemoteProvider

DEFAULT_CONCURRENCY = 8
DEFAULT_BATCH_SIZE = 256  # a local engine shares few-shot prefixes within one call: 1.5x faster than 32 on MMLU
MAX_CONSECUTIVE_FAILURES = 32
# Errors that concern one request: recorded against its sample, the run goes on.
_REQUEST_ERRORS = (ProviderError, ContextLengthError)


@dataclass
class _Plan:
    """Each sample's request keys (in the task's order) and the distinct requests behind them."""

    keys: dict[str, list[str]] = field(default_factory=dict)
    requests: dict[str, Request] = field(default_factory=dict)
    asked: int = 0


def plan_requests(task: Task, samples: Sequence[Sample], mode: Mode, provider: Provider) -> _Plan:
    """Key every request of every sample; random draws are keyed per task, sample and position so
    they are never merged (see `cache`)."""
    plan = _Plan()
    identity = provider.identity
    for sample in samples:
        if sample.id in plan.keys:
            raise DataError(f"{task.name}: sample id {sample.id!r} occurs twice; sample ids must be unique")
        keys = []
        for position, request in enumerate(task.requests(sample, mode, provider.capabilities)):
            draw = f"{task.name}\x1f{sample.id}\x1f{position}" if is_random_draw(request) else None
            key = request_key(identity, request, draw)
            plan.requests.setdefault(key, request)
            keys.append(key)
        plan.keys[sample.id] = keys
        plan.asked += len(keys)
    return plan


async def run_task(
    provider: Provider,
    task: Task,
    *,
    cache: ResponseCache,
    data_dir: Path | None = None,
    limit: int | None = None,
    samples: Sequence[Sample] | None = None,
    concurrency: int | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    max_consecutive_failures: int = MAX_CONSECUTIVE_FAILURES,
) -> TaskResult:
    """Evaluate `provider` on `task`: the samples given, or those `task.load(data_dir, limit)` reads.
    `concurrency` and `batch_size` default to what suits the provider (`default_chunking`)."""
    default_concurrency, default_batch = default_chunking(provider)
    concurrency = default_concurrency if concurrency is None else concurrency
    batch_size = default_batch if batch_size is None else batch_size
    _check_positive(concurrency=concurrency, batch_size=batch_size, max_consecutive_failures=max_consecutive_failures)
    started_at, clock = _now(), time.perf_counter()
    if samples is None:
        if data_dir is None:
            raise ConfigError(f"{task.name}: give the samples or a data folder to read them from")
        samples = task.load(Path(data_dir), limit)
    mode = task.mode_for(provider.capabilities)
    plan = plan_requests(task, samples, mode, provider)
    responses = cache.get_many(plan.requests)
    cached = len(responses)
    misses = [(key, request) for key, request in plan.requests.items() if key not in responses]

    with _Display(progress, f"{task.name} · {provider.spec}", len(misses), provider) as display:
        display.message(f"{task.name} on {provider.spec}: {mode} mode, {len(samples)} samples, "
                        f"{len(plan.requests)} requests ({cached} cached)")
        sender = _Sender(provider, cache, responses, concurrency, max_consecutive_failures, display)
        await sender.send_all(misses, batch_size)

    scored, failures = _score(task, samples, mode, plan, responses, sender.errors)
    return TaskResult(
        task=task.name, mode=mode, spec=provider.spec, identity=provider.identity, primary_metric=task.metrics[0],
        metrics=task.aggregate(scored) if scored else {}, samples=scored, failures=failures, n_samples=len(samples),
        requests={"asked": plan.asked, "unique": len(plan.requests), "cached": cached, "sent": len(misses),
                  "failed": len(sender.errors)},
        usage=_usage([responses[key] for key in plan.requests if key in responses]),
        started_at=started_at, finished_at=_now(), seconds=time.perf_counter() - clock,
        settings={"data_dir": None if data_dir is None else str(data_dir), "limit": limit,
                  "concurrency": concurrency, "batch_size": batch_size, **task.options()},
    )


async def evaluate(
    specs: Sequence[str],
    task_names: Sequence[str],
    *,
    output: Path,
    cache_path: Path,
    data_dir: Path | None = None,
    limit: int | None = None,
    concurrency: int | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    num_fewshot: int | None = None,
) -> list[TaskResult]:
    """Run every task on every model and write each result under `output` as it finishes.

    `num_fewshot` sets the exemplar count of tasks that take one (`benchmarks.FEWSHOT_TASKS`);
    naming another task with it is a ConfigError.

    `data_dir`, when given, is a parent folder holding one subfolder per task (`DIR/mmlu`,
    `DIR/gsm8k`, ...), or with one task that task's own folder; otherwise each task reads its default
    data folder (`benchmarks.data_dir_for`). Tasks and their data are loaded before any model, so a
    missing file fails in a second, not after loading weights.
    """
    from llama2.evaluate.benchmarks import data_dir_for, get_task
    from llama2.providers.registry import canonical_spec, load_provider

    _check_positive(**{name: value for name, value in (("concurrency", concurrency), ("batch_size", batch_size))
                       if value is not None})
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1; got {limit}")
    seen: dict[str, str] = {}
    for spec in specs:
        if canonical_spec(spec) in seen:
            raise ConfigError(f"models {seen[canonical_spec(spec)]!r} and {spec!r} are the same model; name each model once")
        seen[canonical_spec(spec)] = spec
    task_names = list(dict.fromkeys(task_names))
    tasks = [get_task(name, num_fewshot=num_fewshot) for name in task_names]
    folders = {task.name: data_dir_for(name, data_dir) for name, task in zip(task_names, tasks)}
    samples = {task.name: task.load(folders[task.name], limit) for task in tasks}
    results = []
    with ResponseCache(cache_path) as cache:
        for spec in specs:
            async with load_provider(spec) as provider:
                for task in tasks:
                    result = await run_task(provider, task, cache=cache, data_dir=folders[task.name], limit=limit,
                                            samples=samples[task.name], concurrency=concurrency,
                                            batch_size=batch_size, progress=progress)
                    write_result(output, result)
                    results.append(result)
    return results


def default_chunking(provider: Provider) -> tuple[int, int]:
    """(concurrency, batch size) for a provider: API providers one request per call, as many calls
    in flight as their own concurrency setting; others (a local engine batches) chunks of 256."""
    if isinstance(provider, RemoteProvider):
        return provider.settings.concurrency, 1
    return DEFAULT_CONCURRENCY, DEFAULT_BATCH_SIZE


class _Sender:
    """Sends the cache misses, committing each answered chunk to the cache as it arrives."""

    def __init__(self, provider: Provider, cache: ResponseCache, responses: dict[str, Response], concurrency: int,
                 max_consecutive_failures: int, display: "_Display") -> None:
        self.provider, self.cache, self.responses, self.display = provider, cache, responses, display
        self.identity = provider.identity
        self.semaphore = asyncio.Semaphore(concurrency)
        self.max_consecutive_failures = max_consecutive_failures
        self.consecutive_failures = 0
        self.errors: dict[str, str] = {}

    async def send_all(self, misses: Sequence[tuple[str, Request]], batch_size: int) -> None:
        chunks = []
        for kind in ("loglikelihood", "generate"):
            items = [item for item in misses if request_kind(item[1]) == kind]
            chunks += [items[start:start + batch_size] for start in range(0, len(items), batch_size)]
        await _gather_or_cancel([self._send(chunk) for chunk in chunks])

    async def _send(self, chunk: list[tuple[str, Request]]) -> None:
        async with self.semaphore:
            try:
                answers = await self._call([request for _, request in chunk])
            except UnsupportedError:
                raise
            except _REQUEST_ERRORS as error:
                failure = error
            else:
                self._record(chunk, answers)
                return
        if len(chunk) == 1:
            self._fail(chunk[0][0], failure)
        else:  # find which request failed; the others cost one more call each
            await _gather_or_cancel([self._send([item]) for item in chunk])

    async def _call(self, requests: list[Request]) -> list[Response]:
        call = self.provider.loglikelihood if request_kind(requests[0]) == "loglikelihood" else self.provider.generate
        answers = await call(requests)
        if len(answers) != len(requests):
            raise ProviderError(f"{self.provider.spec}: returned {len(answers)} responses for {len(requests)} requests")
        return answers

    def _record(self, chunk: list[tuple[str, Request]], answers: list[Response]) -> None:
        self.cache.put_many(self.identity, [(key, request, answer) for (key, request), answer in zip(chunk, answers)])
        for (key, _), answer in zip(chunk, answers):
            self.responses[key] = answer
        self.consecutive_failures = 0
        self.display.advance(len(chunk), [a.cost_usd for a in answers if isinstance(a, Completion)])

    def _fail(self, key: str, error: Exception) -> None:
        self.errors[key] = str(error)
        self.consecutive_failures += 1
        self.display.advance(1, [])
        if self.consecutive_failures >= self.max_consecutive_failures:
            raise ProviderError(f"{self.provider.spec}: {self.consecutive_failures} requests in a row failed "
                                f"(last: {error}); stopped — answered requests are cached, rerun to resume")


async def _gather_or_cancel(coroutines: list[Awaitable[None]]) -> None:
    """Run all; if one raises (or we are cancelled), cancel the rest and wait for them before re-raising."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _score(task: Task, samples: Sequence[Sample], mode: Mode, plan: _Plan, responses: dict[str, Response],
           errors: dict[str, str]) -> tuple[list[SampleResult], list[SampleFailure]]:
    scored, failures = [], []
    for sample in samples:
        keys = plan.keys[sample.id]
        failed = [errors[key] for key in keys if key in errors]
        if failed:
            failures.append(SampleFailure(sample.id, sample.group, failed[0]))
            continue
        result = task.score(sample, mode, [responses[key] for key in keys])
        if result.group is None:
            result.group = sample.group
        scored.append(result)
    return scored, failures


def _usage(responses: list[Response]) -> Usage:
    completions = [r for r in responses if isinstance(r, Completion)]
    costs = [c.cost_usd for c in completions if c.cost_usd is not None]
    latencies = [c.latency_s for c in completions]
    p50, p95 = np.percentile(latencies, [50, 95]).tolist() if latencies else (None, None)
    return Usage(prompt_tokens=sum(c.prompt_tokens for c in completions),
                 completion_tokens=sum(c.completion_tokens for c in completions),
                 cost_usd=sum(costs) if costs else None, latency_p50_s=p50, latency_p95_s=p95)


def running_cost(provider: Provider, own: float | None) -> float | None:
    """Dollars spent so far: the provider's own meter (`provider.usage.cost_usd`) when it keeps one,
    else the sum over completions this run received."""
    usage = getattr(provider, "usage", None)
    meter = usage.get("cost_usd") if isinstance(usage, dict) else getattr(usage, "cost_usd", None)
    return meter if meter is not None else own


class _Display:
    """When `enabled`: a line on stderr saying the mode and how much is cached, then, on a terminal, a
    progress bar (requests answered, rate, ETA, running cost)."""

    def __init__(self, enabled: bool, description: str, total: int, provider: Provider) -> None:
        self.enabled = enabled
        self.provider = provider
        self.own_cost: float | None = None
        self.bar = ProgressBar(description, total, unit="req", enabled=enabled, fields=("cost",))

    def __enter__(self) -> "_Display":
        self.bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bar.close()

    def message(self, text: str) -> None:
        if self.enabled:
            self.bar.print(text)

    def advance(self, count: int, costs: list[float | None]) -> None:
        known = [c for c in costs if c is not None]
        if known:
            self.own_cost = (self.own_cost or 0.0) + sum(known)
        cost = running_cost(self.provider, self.own_cost)
        self.bar.advance(count, cost="" if cost is None else f"${cost:,.4f}")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ConfigError(f"{name.replace('_', '-')} must be at least 1; got {value}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

