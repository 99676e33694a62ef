"""The machinery API providers share: rate limiting, usage totals, all-or-nothing gathering."""

from __future__ import annotations

import asyncio
import time

import pytest

from llama2.providers.base import Completion
from llama2.providers.remote import RateLimiter, Usage, gather_all, normalize_finish_reason


def test_rate_limiter_spaces_request_starts():
    async def starts(limiter, n):
        times = []
        for _ in range(n):
            await limiter.acquire()
            times.append(time.monotonic())
        return times

    times = asyncio.run(starts(RateLimiter(1200), 4))  # one every 50 ms
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.045
    unlimited = asyncio.run(starts(RateLimiter(None), 50))
    assert unlimited[-1] - unlimited[0] < 0.05


def test_concurrent_waiters_are_spaced_too():
    async def run():
        limiter = RateLimiter(1200)
        stamps = []

        async def one():
            await limiter.acquire()
            stamps.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(4)))
        return sorted(stamps)

    stamps = asyncio.run(run())
    assert stamps[-1] - stamps[0] >= 3 * 0.045


def test_usage_totals_and_unknown_cost():
    usage = Usage()
    usage.record(Completion("a", "stop", 10, 2, latency_s=0.5))
    assert usage.cost_usd is None
    usage.record(Completion("b", "length", 5, 1, latency_s=0.25, cost_usd=0.001))
    assert (usage.requests, usage.prompt_tokens, usage.completion_tokens) == (2, 15, 3)
    assert usage.latencies_s == [0.5, 0.25] and usage.cost_usd == pytest.approx(0.001)


def test_gather_all_cancels_the_rest_on_failure():
    finished = []

    async def slow():
        await asyncio.sleep(0.5)
        finished.append("slow")

    async def failing():
        raise ValueError("boom")

    async def run():
        with pytest.raises(ValueError):
            await gather_all([slow(), failing()])
        await asyncio.sleep(0.6)

    asyncio.run(run())
    assert finished == []
    assert asyncio.run(gather_all([asyncio.sleep(0, result=i) for i in range(3)])) == [0, 1, 2]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("stop", "stop"), ("end_turn", "stop"), ("stop_sequence", "stop"), ("length", "length"),
     ("max_tokens", "length"), ("content_filter", "content_filter"), (None, "stop")],
)
def test_finish_reasons_are_normalized(reason, expected):
    assert normalize_finish_reason(reason) == expected
