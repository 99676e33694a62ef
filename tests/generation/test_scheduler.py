"""Continuous batching: requests that join a running batch at any step get exactly what they would
have got alone, cancelled ones free their rows, and overload is refused rather than queued forever."""

import asyncio
import threading
import time

import pytest

from llama2.errors import OverloadedError
from llama2.generation.engine import DecodeBatch, Engine
from llama2.generation.scheduler import LoopSink, Scheduler
from llama2.model.config import get_preset
from llama2.model.transformer import Transformer
from llama2.types import GenerationResult, SamplingParams, StreamDelta

GREEDY = SamplingParams(max_new_tokens=12, temperature=0)
PROMPTS = [[1, 5, 9, 33], [1, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [1, 40, 41], [1, 99, 98, 97, 96, 95]]


@pytest.fixture(scope="module")
def engine():
    return Engine(Transformer.random(get_preset("tiny"), seed=0).eval())


class Collector:
    """A sink that keeps every event of one request and signals when it ends."""

    def __init__(self):
        self.events = []
        self.done = threading.Event()

    def __call__(self, event):
        self.events.append(event)
        if isinstance(event, (GenerationResult, BaseException)):
            self.done.set()

    def result(self, timeout=30.0):
        assert self.done.wait(timeout), "request never finished"
        last = self.events[-1]
        if isinstance(last, BaseException):
            raise last
        return last


@pytest.fixture
def scheduler(engine):
    scheduler = Scheduler(engine, max_batch_size=3, max_queue=8)
    yield scheduler
    scheduler.close()


def test_staggered_requests_equal_a_static_batch(engine, scheduler):
    expected = engine.generate(PROMPTS, GREEDY)
    collectors = []
    for prompt in PROMPTS:  # arrive one by one while others decode
        collectors.append(Collector())
        scheduler.submit(prompt, GREEDY, collectors[-1])
        time.sleep(0.005)
    for collector, want in zip(collectors, expected):
        assert collector.result().tokens == want.tokens


def test_stream_deltas_add_up_to_the_result_and_end_with_usage(engine, scheduler):
    collector = Collector()
    scheduler.submit(PROMPTS[0], GREEDY, collector)
    result = collector.result()
    deltas = [e for e in collector.events if isinstance(e, StreamDelta)]
    assert sum((d.tokens for d in deltas), []) == result.tokens
    assert deltas[-1].finish_reason == "length"
    assert (deltas[-1].prompt_tokens, deltas[-1].completion_tokens) == (len(PROMPTS[0]), 12)


def test_seeded_sampling_does_not_depend_on_who_joins(engine, scheduler):
    sampled = SamplingParams(max_new_tokens=10, temperature=1.0, seed=7)
    alone = engine.generate([PROMPTS[1]], sampled)[0].tokens
    others = [Collector() for _ in PROMPTS]
    for prompt, collector in zip(PROMPTS, others):
        scheduler.submit(prompt, SamplingParams(max_new_tokens=6, temperature=0.9), collector)
    mine = Collector()
    scheduler.submit(PROMPTS[1], sampled, mine)
    assert mine.result().tokens == alone
    for collector in others:
        collector.result()


def test_a_cancelled_request_frees_its_row_for_the_next(engine):
    scheduler = Scheduler(engine, max_batch_size=1)
    try:
        endless = Collector()
        ticket = scheduler.submit([1, 2], SamplingParams(max_new_tokens=250, temperature=0), endless)
        while not endless.events:
            time.sleep(0.001)
        ticket.cancel()
        follower = Collector()
        scheduler.submit([1, 3], SamplingParams(max_new_tokens=3, temperature=0), follower)
        assert len(follower.result(timeout=10).tokens) == 3
        assert not any(isinstance(e, GenerationResult) for e in endless.events)
        assert scheduler.active == 0 and scheduler.queue_depth == 0
    finally:
        scheduler.close()


def test_a_full_queue_is_refused_all_or_none(engine):
    scheduler = Scheduler(engine, max_batch_size=1, max_queue=2)
    try:
        long = SamplingParams(max_new_tokens=250, temperature=0)
        running = Collector()
        ticket = scheduler.submit([1, 2], long, running)
        while not running.events:
            time.sleep(0.001)
        waiting = [scheduler.submit([1, 4], long, Collector()) for _ in range(2)]
        with pytest.raises(OverloadedError, match="busy"):
            scheduler.submit_many([([1, 5], long, Collector())])
        assert scheduler.queue_depth == 2
        for t in [ticket, *waiting]:
            t.cancel()
    finally:
        scheduler.close()


def test_jobs_run_on_the_model_thread_between_steps(engine, scheduler):
    collector = Collector()
    scheduler.submit(PROMPTS[2], GREEDY, collector)
    names = scheduler.call(lambda: threading.current_thread().name).result(timeout=10)
    assert names == "llama2-scheduler"
    with pytest.raises(ZeroDivisionError):
        scheduler.call(lambda: 1 / 0).result(timeout=10)
    collector.result()


def test_close_fails_what_is_still_waiting(engine):
    scheduler = Scheduler(engine, max_batch_size=1)
    first, second = Collector(), Collector()
    scheduler.submit([1, 2], SamplingParams(max_new_tokens=250, temperature=0), first)
    scheduler.submit([1, 3], SamplingParams(max_new_tokens=250, temperature=0), second)
    scheduler.close()
    with pytest.raises(OverloadedError, match="shut down"):
        second.result(timeout=10)
    with pytest.raises(OverloadedError):
        scheduler.submit([1, 2], GREEDY, Collector())


class _WorkerKilled(BaseException):
    """Stands for anything a step should never raise (not an Exception, so no step catches it)."""


def test_a_worker_that_dies_answers_everyone_and_a_new_one_takes_over(engine, monkeypatch):
    scheduler = Scheduler(engine, max_batch_size=1)
    deaths = []
    monkeypatch.setattr(threading, "excepthook", lambda args: deaths.append(args.exc_type))
    original_step = DecodeBatch.step

    def step_then_die(self):
        if self.rows[0].params.max_new_tokens == 250:
            raise _WorkerKilled()
        return original_step(self)

    monkeypatch.setattr(DecodeBatch, "step", step_then_die)
    try:
        running, waiting = Collector(), Collector()
        scheduler.submit([1, 2], SamplingParams(max_new_tokens=250, temperature=0), running)
        scheduler.submit([1, 3], SamplingParams(max_new_tokens=250, temperature=0), waiting)
        for collector in (running, waiting):
            with pytest.raises(OverloadedError, match="stopped unexpectedly"):
                collector.result(timeout=10)
        after = Collector()
        scheduler.submit(PROMPTS[0], GREEDY, after)
        assert after.result(timeout=10).finish_reason == "length"
    finally:
        scheduler.close()
    assert deaths == [_WorkerKilled]


def test_a_sink_that_raises_does_not_stop_the_others(engine, scheduler, monkeypatch):
    monkeypatch.setattr(threading, "excepthook", lambda args: None)

    def broken(event):
        raise ValueError("a broken sink")

    healthy = Collector()
    scheduler.submit(PROMPTS[1], GREEDY, broken)
    scheduler.submit(PROMPTS[0], GREEDY, healthy)
    assert healthy.result(timeout=10).finish_reason == "length"


def test_a_loop_receiver_that_raises_does_not_starve_the_others_on_its_loop(engine, scheduler):
    """One step's events for a loop arrive in one callback; a failing receiver is reported there."""

    async def main():
        loop = asyncio.get_running_loop()
        reported, finished = [], loop.create_future()
        loop.set_exception_handler(lambda _, context: reported.append(context["exception"]))

        def broken(event):
            raise ValueError("a broken receiver")

        def healthy(event):
            if isinstance(event, GenerationResult) and not finished.done():
                finished.set_result(event)

        scheduler.submit_many([(PROMPTS[1], GREEDY, LoopSink(loop, broken)),
                               (PROMPTS[0], GREEDY, LoopSink(loop, healthy))])
        result = await asyncio.wait_for(finished, 10)
        return result, reported

    result, reported = asyncio.run(main())
    assert result.finish_reason == "length"
    assert reported and all(isinstance(exc, ValueError) for exc in reported)


def test_the_cache_grows_when_a_longer_request_joins(engine):
    batch = DecodeBatch(engine)
    short, long = engine.sequences([[1, 2], [1, 3, 4]], [SamplingParams(max_new_tokens=4, temperature=0),
                                                          SamplingParams(max_new_tokens=40, temperature=0)])
    batch.admit([short])
    capacity = batch.cache.max_seq_len
    batch.step()
    batch.admit([long])
    assert batch.cache.max_seq_len > capacity
    while batch.rows:
        batch.step()
    assert long.result().tokens == engine.generate([[1, 3, 4]], SamplingParams(max_new_tokens=40, temperature=0))[0].tokens
