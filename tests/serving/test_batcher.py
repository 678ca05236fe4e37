"""Micro-batching: concurrent submissions share one scoring call, within the size and time limits."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from genrec.serving.batcher import MicroBatcher


class Recorder:
    """A scoring function that doubles its items and remembers each batch it got."""

    def __init__(self, delay_s: float = 0.0):
        self.batches: list[list] = []
        self.delay_s = delay_s

    def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        time.sleep(self.delay_s)
        return [2 * x for x in items]


def run(coro):
    return asyncio.run(coro)


async def _submit_all(batcher, fn, items):
    try:
        return await asyncio.gather(*(batcher.submit(fn, x) for x in items))
    finally:
        await batcher.aclose()


def test_concurrent_submissions_are_scored_in_one_call_and_each_gets_its_own_result():
    fn = Recorder()
    results = run(_submit_all(MicroBatcher(max_batch=64, max_wait_s=0.05), fn, range(20)))
    assert results == [2 * x for x in range(20)]
    assert len(fn.batches) == 1 and sorted(fn.batches[0]) == list(range(20))


def test_a_batch_never_exceeds_max_batch():
    fn = Recorder()
    run(_submit_all(MicroBatcher(max_batch=8, max_wait_s=0.05), fn, range(20)))
    assert [len(b) for b in fn.batches] == [8, 8, 4]


def test_requests_arriving_while_the_worker_is_busy_form_the_next_batch():
    fn = Recorder(delay_s=0.05)

    async def staggered():
        batcher = MicroBatcher(max_batch=64, max_wait_s=0.0)
        first = asyncio.ensure_future(batcher.submit(fn, 0))
        await asyncio.sleep(0.01)  # the first batch is being scored now
        rest = await asyncio.gather(*(batcher.submit(fn, x) for x in range(1, 10)))
        await first
        await batcher.aclose()
        return rest

    assert run(staggered()) == [2 * x for x in range(1, 10)]
    assert [len(b) for b in fn.batches] == [1, 9]


def test_without_a_window_requests_of_the_same_loop_turn_still_share_a_batch():
    fn = Recorder()

    async def later(batcher, x):
        await asyncio.sleep(0)  # submitted one loop turn after the first: as a request parsed just after it
        return await batcher.submit(fn, x)

    async def scenario():
        batcher = MicroBatcher(max_batch=64)  # default max_wait_s=0: no timer at all
        try:
            await batcher.submit(fn, -1)  # the batcher is up and waiting for work
            return await asyncio.gather(batcher.submit(fn, 0), later(batcher, 1))
        finally:
            await batcher.aclose()

    assert run(scenario()) == [0, 2]
    assert [sorted(b) for b in fn.batches] == [[-1], [0, 1]]


def test_a_lone_request_waits_at_most_about_max_wait():
    fn = Recorder()

    async def lone():
        batcher = MicroBatcher(max_batch=64, max_wait_s=0.01)
        start = time.perf_counter()
        await batcher.submit(fn, 1)
        elapsed = time.perf_counter() - start
        await batcher.aclose()
        return elapsed

    assert run(lone()) < 0.5  # generous: a shared machine may stall; without the timeout it would hang


def test_requests_for_different_models_are_never_mixed():
    old, new = Recorder(), Recorder()

    async def both():
        batcher = MicroBatcher(max_batch=64, max_wait_s=0.05)
        try:
            return await asyncio.gather(*(batcher.submit(old if x % 2 else new, x) for x in range(10)))
        finally:
            await batcher.aclose()

    assert run(both()) == [2 * x for x in range(10)]
    assert [sorted(b) for b in old.batches] == [[1, 3, 5, 7, 9]]
    assert [sorted(b) for b in new.batches] == [[0, 2, 4, 6, 8]]


def test_a_failing_batch_fails_its_requests_and_the_batcher_goes_on():
    def broken(items):
        raise RuntimeError("model exploded")

    fn = Recorder()

    async def scenario():
        batcher = MicroBatcher(max_batch=64, max_wait_s=0.01)
        try:
            with pytest.raises(RuntimeError, match="exploded"):
                await batcher.submit(broken, 1)
            return await batcher.submit(fn, 2)
        finally:
            await batcher.aclose()

    assert run(scenario()) == 4


def test_batch_sizes_are_reported():
    sizes = []
    run(_submit_all(MicroBatcher(max_batch=4, max_wait_s=0.05, on_batch=sizes.append), Recorder(), range(10)))
    assert sizes == [4, 4, 2]


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(max_batch=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        MicroBatcher(max_wait_s=-1)
    with pytest.raises(ValueError, match="concurrency"):
        MicroBatcher(concurrency=0)


def test_a_coroutine_scoring_function_is_awaited_on_the_event_loop_without_a_thread():
    threads = []

    async def score(items):  # as a child process's score_rows_async: the work happens elsewhere
        threads.append(threading.current_thread())
        await asyncio.sleep(0.001)
        return [2 * x for x in items]

    assert run(_submit_all(MicroBatcher(max_batch=64, max_wait_s=0.01), score, range(5))) == [0, 2, 4, 6, 8]
    assert threads == [threading.main_thread()]


def test_with_concurrency_two_batches_are_scored_at_once_and_never_more():
    in_flight, peak = 0, 0

    async def score(items):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return [2 * x for x in items]

    assert run(_submit_all(MicroBatcher(max_batch=2, concurrency=2), score, range(8))) == [2 * x for x in range(8)]
    assert peak == 2
