"""Micro-batching: concurrent requests are scored together, in one call (on a worker thread, or awaited).

Scoring one user and scoring 32 cost far less than 32 times one for a model whose last layer is a (hidden,
n_items) matrix: the time goes into reading the weights, not into the arithmetic. So requests queue, and the
scoring function gets them as one list (at most `max_batch`), on a single worker thread that keeps the event
loop free for HTTP. While the worker is busy the next batch fills up, so under load batches grow by
themselves, with no timer. A scoring function that is a coroutine function (a child process's
`score_rows_async`, which does its work elsewhere) is awaited on the event loop instead: no thread hop.

When the worker is idle a batch goes at once (default `max_wait_s=0`): after one turn of the event loop, so
that requests which arrived together are scored together, but without waiting for later ones. A positive
`max_wait_s` makes a lone request wait up to that long for company (less CPU per request at moderate load,
more latency).

`concurrency` batches may be scored at once (for a scorer with that many child processes; 1, the default,
for anything scored on the worker thread): the next batch goes as soon as a slot is free.

Requests carry their own scoring function (a bound method of the model being served), and one call only ever
gets requests with the same function: a request is scored by the model that was current when it arrived,
even if a new one was swapped in since.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

ScoreBatch = Callable[[list[Any]], list[Any]]


@dataclass
class _Pending:
    fn: ScoreBatch
    item: Any
    future: asyncio.Future
    enqueued: float


class MicroBatcher:
    """`await batcher.submit(fn, item)` returns `fn([... item ...])[i]`, where fn got up to `max_batch` items
    submitted within `max_wait_s` of each other. `on_batch(n)` is called with each batch's size."""

    def __init__(self, max_batch: int = 64, max_wait_s: float = 0.0, on_batch: Callable[[int], None] | None = None,
                 concurrency: int = 1):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.max_batch, self.max_wait_s, self.on_batch = max_batch, max_wait_s, on_batch
        self.concurrency = concurrency
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="genrec-score")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task] = set()
        self._start_lock = threading.Lock()

    async def submit(self, fn: ScoreBatch, item: Any) -> Any:
        """Queue `item` for `fn` and wait for its result (or its exception)."""
        loop = asyncio.get_running_loop()
        self._ensure_running(loop)
        future = loop.create_future()
        self._queue.put_nowait(_Pending(fn, item, future, loop.time()))
        return await future

    def _ensure_running(self, loop: asyncio.AbstractEventLoop) -> None:
        # started lazily on the loop that serves requests (a test client may bring a new loop)
        with self._start_lock:
            if self._loop is not loop or self._task is None or self._task.done():
                self._loop, self._queue, self._slots = loop, asyncio.Queue(), asyncio.Semaphore(self.concurrency)
                self._task = loop.create_task(self._collect(), name="genrec-micro-batcher")

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        queue, slots = self._queue, self._slots
        while True:
            await slots.acquire()  # a batch forms once it can be scored: until then requests queue up
            batch = [await queue.get()]
            if queue.empty():
                await asyncio.sleep(0)  # one loop turn: requests parsed in this one join the batch
            deadline = batch[0].enqueued + self.max_wait_s
            while len(batch) < self.max_batch:
                while len(batch) < self.max_batch and not queue.empty():
                    batch.append(queue.get_nowait())
                remaining = deadline - loop.time()
                if len(batch) >= self.max_batch or remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            task = loop.create_task(self._run(loop, batch))
            self._running.add(task)
            task.add_done_callback(lambda done: (self._running.discard(done), slots.release()))

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        groups: dict[Any, list[_Pending]] = {}
        for pending in batch:
            if not pending.future.done():  # a cancelled request (client went away) is not scored
                groups.setdefault(pending.fn, []).append(pending)
        for fn, group in groups.items():
            if self.on_batch is not None:
                self.on_batch(len(group))
            items = [p.item for p in group]
            try:
                if inspect.iscoroutinefunction(fn):
                    results = await fn(items)
                else:
                    results = await loop.run_in_executor(self._executor, fn, items)
            except Exception as error:  # the requests fail, the batcher goes on
                for p in group:
                    if not p.future.done():
                        p.future.set_exception(error)
                continue
            for p, result in zip(group, results):
                if not p.future.done():
                    p.future.set_result(result)

    async def aclose(self) -> None:
        """Stop collecting and let the worker thread finish what it started."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.wait(list(self._running))
        self._executor.shutdown(wait=True)
