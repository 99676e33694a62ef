"""Drive a task the way the runner does (requests -> provider -> score), with a scripted provider."""

from __future__ import annotations

import asyncio
from pathlib import Path

from llama2.evaluate.benchmarks.base import Sample, SampleResult, Task
from llama2.providers.base import Capabilities
from llama2.providers.fake import FakeProvider

DATA = Path(__file__).resolve().parents[1] / "data"
CHAT_API = Capabilities(chat=True, text_completion=False, loglikelihood=False)
COMPLETION_API = Capabilities(chat=True, text_completion=True, loglikelihood=False)


def run(task: Task, samples: list[Sample], provider: FakeProvider) -> list[SampleResult]:
    """Score every sample through `provider` in the mode the task picks for it."""
    mode = task.mode_for(provider.capabilities)

    async def one(sample: Sample) -> SampleResult:
        requests = task.requests(sample, mode, provider.capabilities)
        call = provider.loglikelihood if mode == "loglikelihood" else provider.generate
        return task.score(sample, mode, await call(requests))

    return [asyncio.run(one(sample)) for sample in samples]
