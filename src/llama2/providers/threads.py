"""Run a blocking iterator (the engine's token stream) in a worker thread and consume it from the
event loop, so streaming one answer never stalls other coroutines (the server's other users)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


async def iterate_in_thread(make_iterator: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Yield the items of `make_iterator()`, which is created and advanced in a worker thread.

    Items pass through an `asyncio.Queue`; an exception in the thread is re-raised here. When the
    consumer stops early (closes this generator) the thread stops at its next item, and this
    generator returns only once the thread has finished, so the caller's lock on the model is
    released after the model is idle.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in make_iterator():
                loop.call_soon_threadsafe(queue.put_nowait, (item, None))
                if stop.is_set():
                    break
        except BaseException as exc:  # handed to the consumer, re-raised there
            loop.call_soon_threadsafe(queue.put_nowait, (_DONE, exc))
        else:
            loop.call_soon_threadsafe(queue.put_nowait, (_DONE, None))

    worker = asyncio.ensure_future(asyncio.to_thread(produce))
    try:
        while True:
            item, error = await queue.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        await asyncio.shield(worker)
