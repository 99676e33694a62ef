"""Continuous batching for a served model: requests arrive from many clients at any time and join
the running decode batch between steps (iteration-level scheduling, Orca/vLLM), so sixteen
concurrent streams share each forward pass instead of queueing one behind another.

One worker thread owns the engine; it is the only thread that touches the model. Callers submit
prompts from any thread and get their results through a `sink` callback (the server's event loop
hops them over with `call_soon_threadsafe`). Other model work — scoring — runs on the same thread
between steps (`call`), so nothing ever computes on the model concurrently. The waiting queue is
bounded: a full queue is an `OverloadedError` at once (the server's 429), never unbounded memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from llama2.errors import OverloadedError
from llama2.generation.engine import DecodeBatch, Engine, _Sequence
from llama2.types import GenerationResult, SamplingParams, StreamDelta

T = TypeVar("T")

# What a sink receives, in order: deltas as they come, then the result — or one exception.
Event = StreamDelta | GenerationResult | BaseException
Sink = Callable[[Event], None]


@dataclass(frozen=True)
class LoopSink:
    """A sink whose `receive` runs on an asyncio event loop. The scheduler hands all of one decode
    step's events for a loop over in a single `call_soon_threadsafe`, rather than one per row: with
    sixteen streams, per-token thread hops otherwise cost the model thread a good part of a step."""

    loop: asyncio.AbstractEventLoop
    receive: Callable[[Event], None]

    def __call__(self, event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self.loop.call_soon_threadsafe(self.receive, event)


def _receive_all(events: list[tuple[Callable[[Event], None], Event]]) -> None:
    """Runs on the loop: one receiver that raises must not keep the others' events from them."""
    for receive, event in events:
        try:
            receive(event)
        except Exception as exc:  # reported like any failed callback; the rest are still delivered
            asyncio.get_running_loop().call_exception_handler(
                {"message": "a scheduler sink failed", "exception": exc})


def _send_safely(sink: Sink, event: Event) -> None:
    """Hand `event` to a sink from the model thread; a sink that raises is reported, not fatal."""
    try:
        sink(event)
    except Exception:
        threading.excepthook(threading.ExceptHookArgs((*sys.exc_info(), threading.current_thread())))


class Ticket:
    """A submitted request. `cancel()` (a client went away) frees its row at the next step."""

    def __init__(self, scheduler: "Scheduler", sequence: _Sequence, sink: Sink) -> None:
        self._scheduler = scheduler
        self.sequence = sequence
        self.sink = sink

    def cancel(self) -> None:
        self._scheduler._cancel(self)


class Scheduler:
    """Admits waiting requests into one engine's running batch between decode steps.

    `max_batch_size` rows decode together; up to `max_queue` more wait. Results are the engine's:
    the same sampling, stop strings and streaming deltas as `Engine.generate` and `Engine.stream`.
    """

    def __init__(self, engine: Engine, *, max_batch_size: int | None = None, max_queue: int = 256) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size or engine.max_batch_size
        self.max_queue = max_queue
        self._waiting: deque[Ticket] = deque()
        self._jobs: deque[tuple[Callable[[], Any], Future]] = deque()
        self._running: dict[int, Ticket] = {}  # id(sequence) -> ticket, for the rows in the batch
        self._cancelled: set[Ticket] = set()
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    # ---- callers (any thread) ---------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a row."""
        return len(self._waiting)

    @property
    def active(self) -> int:
        """Requests decoding now."""
        return len(self._running)

    def submit(self, prompt: Sequence[int], params: SamplingParams, sink: Sink) -> Ticket:
        """Queue one prompt (token ids). Bad input raises here, in the caller's thread."""
        return self.submit_many([(prompt, params, sink)])[0]

    def submit_many(self, items: Sequence[tuple[Sequence[int], SamplingParams, Sink]]) -> list[Ticket]:
        """Queue several prompts all or none: if they do not all fit in the queue, none is queued."""
        tickets = [
            Ticket(self, self.engine.new_sequence(i, list(prompt), params), sink)
            for i, (prompt, params, sink) in enumerate(items)
        ]
        with self._wake:
            self._check_open()
            if self._waiting and len(self._waiting) + len(tickets) > self.max_queue:
                raise OverloadedError(
                    f"the model is busy: {len(self._waiting)} requests are waiting (limit {self.max_queue}); retry shortly",
                    retry_after_s=1.0,
                )
            self._waiting.extend(tickets)
            self._start()
            self._wake.notify()
        return tickets

    def call(self, work: Callable[[], T]) -> "Future[T]":
        """Run `work` on the model's thread between decode steps; its result comes in the future."""
        future: Future[T] = Future()
        with self._wake:
            self._check_open()
            self._jobs.append((work, future))
            self._start()
            self._wake.notify()
        return future

    def close(self) -> None:
        """Stop the worker; waiting and running requests get an error. Safe to call twice."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _cancel(self, ticket: Ticket) -> None:
        with self._wake:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
            else:
                self._cancelled.add(ticket)
            self._wake.notify()

    def _check_open(self) -> None:
        if self._closed:
            raise OverloadedError("the model is shutting down; send the request again to a running server")

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="llama2-scheduler", daemon=True)
            self._thread.start()

    # ---- the worker thread ------------------------------------------------------------------

    def _work(self) -> None:
        """The worker's whole life. Whatever ends it — close, or an error no step should raise —
        every waiting and running request gets an answer (an error), and a later submit starts a
        new worker: a request never waits on a thread that is gone."""
        batch = DecodeBatch(self.engine)
        try:
            self._serve(batch)
        finally:
            self._shut_down()

    def _serve(self, batch: DecodeBatch) -> None:
        while True:
            with self._wake:
                while not (self._closed or self._waiting or self._jobs or batch.rows):
                    self._wake.wait()
                if self._closed:
                    break
                jobs = list(self._jobs)
                self._jobs.clear()
                room = self.max_batch_size - len(batch.rows)
                joining = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
                self._running.update((id(t.sequence), t) for t in joining)  # from here on, _shut_down sees them
                cancelled, self._cancelled = self._cancelled, set()
            for work, future in jobs:
                self._run_job(work, future)
            try:
                gone = {id(ticket.sequence) for ticket in cancelled}
                for seq in [seq for seq in batch.rows if id(seq) in gone]:
                    batch.remove(seq)
                    del self._running[id(seq)]
                if joining:
                    self._deliver(batch.admit([t.sequence for t in joining]))
                if batch.rows:
                    self._deliver(batch.step())
            except Exception as exc:  # a failed forward pass fails the requests in it, not the server
                failed = list(self._running.values())
                self._running.clear()
                batch = DecodeBatch(self.engine)
                for ticket in failed:
                    _send_safely(ticket.sink, exc)

    def _deliver(self, stepped: list[tuple[_Sequence, int | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Callable[[Event], None], Event]]] = {}

        def send(sink: Sink, event: Event) -> None:
            if isinstance(sink, LoopSink):
                by_loop.setdefault(sink.loop, []).append((sink.receive, event))
            else:
                _send_safely(sink, event)

        try:
            for seq, token in stepped:
                ticket = self._running.get(id(seq))
                if ticket is None:
                    continue
                delta = seq.delta(token)
                if delta is not None:
                    send(ticket.sink, delta)
                if seq.finish_reason is not None:
                    send(ticket.sink, seq.result())
                    del self._running[id(seq)]
        finally:  # even if a later row fails, what was collected (results included) is handed over
            for loop, events in by_loop.items():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_receive_all, events)

    @staticmethod
    def _run_job(work: Callable[[], Any], future: Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(work())
        except BaseException as exc:  # handed to the caller, who re-raises it
            future.set_exception(exc)

    def _shut_down(self) -> None:
        with self._wake:
            if self._closed:
                error = OverloadedError("the model was shut down before this request finished; send it again")
            else:  # the worker failed: what it held is lost, the next submit starts a new one
                error = OverloadedError("the model's worker stopped unexpectedly; send the request again")
                self._thread = None
            pending = list(self._waiting) + list(self._running.values())
            self._waiting.clear()
            self._running.clear()
            self._cancelled.clear()
            jobs = list(self._jobs)
            self._jobs.clear()
        for ticket in pending:
            _send_safely(ticket.sink, error)
        for _, future in jobs:
            if future.set_running_or_notify_cancel():
                future.set_exception(error)
