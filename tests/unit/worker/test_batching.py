"""The micro-batcher: concurrent callers share forward passes, rows go back to the right caller,
one caller's failure does not fail the others, and the event loop keeps running during a pass."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from shared.dev.fakes import FakeBackend
from shared.worker.batching import Arrivals, MicroBatcher

pytestmark = pytest.mark.unit


class CountingModel:
    """fn(items) -> rows, recording every call; items containing "BAD" make the whole call fail."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.delay = delay
        self.fake = FakeBackend(8)
        self.threads: set[str] = set()

    def __call__(self, items: list[str]) -> np.ndarray:
        self.calls.append(list(items))
        self.threads.add(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        if any("BAD" in x for x in items):
            raise ValueError("bad item in batch")
        return self.fake.embed(items)


def run(coro):
    return asyncio.run(coro)


def test_concurrent_callers_share_one_forward_pass_and_get_their_own_rows():
    model = CountingModel()
    batcher = MicroBatcher(model, window_ms=50, max_batch=64)

    async def main():
        return await asyncio.gather(*(batcher.submit([f"text {i}"]) for i in range(32)))

    results = run(main())
    assert len(model.calls) < 32
    assert len(model.calls) <= 2  # all 32 arrive well inside a 50 ms window
    for i, (rows, info) in enumerate(results):
        assert rows.shape == (1, 8)
        np.testing.assert_allclose(rows[0], model.fake.embed([f"text {i}"])[0], rtol=1e-6)
        assert 1 <= info.size <= 32
    assert batcher.stats.passes == len(model.calls)
    assert batcher.stats.items == 32 and batcher.stats.requests == 32


def test_max_batch_caps_every_pass_and_nothing_is_lost():
    model = CountingModel()
    batcher = MicroBatcher(model, window_ms=30, max_batch=16)

    async def main():
        return await asyncio.gather(*(batcher.submit([f"t{i}", f"u{i}", f"v{i}"]) for i in range(20)))

    results = run(main())
    assert all(len(call) <= 16 for call in model.calls)
    assert sum(len(call) for call in model.calls) == 60
    assert len(model.calls) >= 4  # 60 items / 16
    for i, (rows, _) in enumerate(results):
        np.testing.assert_allclose(rows, model.fake.embed([f"t{i}", f"u{i}", f"v{i}"]), rtol=1e-6)


def test_a_request_larger_than_max_batch_is_split_in_order():
    model = CountingModel()
    batcher = MicroBatcher(model, window_ms=0, max_batch=10)
    items = [f"x{i}" for i in range(25)]
    rows, _ = run(batcher.submit(items))
    assert [len(c) for c in model.calls] == [10, 10, 5]
    np.testing.assert_allclose(rows, model.fake.embed(items), rtol=1e-6)


def test_one_bad_caller_fails_alone():
    model = CountingModel()
    batcher = MicroBatcher(model, window_ms=50, max_batch=64)

    async def main():
        return await asyncio.gather(
            batcher.submit(["good 1"]),
            batcher.submit(["BAD"]),
            batcher.submit(["good 2", "good 3"]),
            return_exceptions=True,
        )

    good1, bad, good23 = run(main())
    assert isinstance(bad, ValueError)
    np.testing.assert_allclose(good1[0], model.fake.embed(["good 1"]), rtol=1e-6)
    np.testing.assert_allclose(good23[0], model.fake.embed(["good 2", "good 3"]), rtol=1e-6)
    assert batcher.stats.retries == 1
    assert model.calls[0] == ["good 1", "BAD", "good 2", "good 3"]  # tried together first


def test_a_lone_caller_gets_the_exception():
    batcher = MicroBatcher(CountingModel(), window_ms=0)
    with pytest.raises(ValueError, match="bad item"):
        run(batcher.submit(["BAD"]))


def test_a_wrong_shape_from_the_model_is_an_error_not_a_misrouted_row():
    batcher = MicroBatcher(lambda items: np.zeros((len(items) + 1, 4), np.float32), window_ms=0)
    with pytest.raises(RuntimeError, match="shape"):
        run(batcher.submit(["a", "b"]))


def test_the_event_loop_keeps_running_during_a_forward_pass():
    model = CountingModel(delay=0.3)
    executor = ThreadPoolExecutor(1, thread_name_prefix="model-test")
    batcher = MicroBatcher(model, window_ms=0, executor=executor)
    ticks = []

    async def ticker():
        for _ in range(10):
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    async def main():
        started = time.perf_counter()
        await asyncio.gather(batcher.submit(["slow"]), ticker())
        return started

    started = run(main())
    executor.shutdown()
    assert len(ticks) == 10
    assert ticks[-1] - started < 0.3  # the ticker finished while the model was still busy
    assert model.threads == {"model-test_0"}


def test_requests_arriving_during_a_pass_form_the_next_batch():
    model = CountingModel(delay=0.2)
    batcher = MicroBatcher(model, window_ms=5, max_batch=64)

    async def main():
        first = asyncio.ensure_future(batcher.submit(["first"]))
        await asyncio.sleep(0.05)  # the first pass is running now
        rest = await asyncio.gather(*(batcher.submit([f"later {i}"]) for i in range(10)))
        return await first, rest

    _, rest = run(main())
    assert model.calls[0] == ["first"]
    assert len(model.calls) == 2 and len(model.calls[1]) == 10
    assert {info.pass_id for _, info in rest} == {2}


def test_a_cancelled_caller_does_not_break_the_others():
    model = CountingModel(delay=0.05)
    batcher = MicroBatcher(model, window_ms=20)

    async def main():
        doomed = asyncio.ensure_future(batcher.submit(["doomed"]))
        kept = asyncio.ensure_future(batcher.submit(["kept"]))
        await asyncio.sleep(0)
        doomed.cancel()
        return await kept

    rows, _ = run(main())
    np.testing.assert_allclose(rows, model.fake.embed(["kept"]), rtol=1e-6)


def test_works_under_successive_event_loops():
    model = CountingModel()
    batcher = MicroBatcher(model, window_ms=0)
    for i in range(3):
        rows, info = run(batcher.submit([f"loop {i}"]))
        assert rows.shape == (1, 8)
        assert info.pass_id == i + 1


def test_empty_submit_is_refused():
    with pytest.raises(ValueError):
        run(MicroBatcher(CountingModel()).submit([]))


def test_the_window_counts_from_arrival_so_a_queue_built_during_a_pass_runs_at_once():
    """Requests that waited through a busy pass are not made to wait a whole extra window."""
    model = CountingModel(delay=0.3)
    batcher = MicroBatcher(model, window_ms=250, max_batch=64)
    starts: list[float] = []
    real = model.__call__

    def timed(items):
        starts.append(time.perf_counter())
        return real(items)

    batcher._fn = timed

    async def main():
        first = asyncio.ensure_future(batcher.submit(["first"]))
        await asyncio.sleep(0.27)  # first pass starts at ~0.25 s (window) and is busy until ~0.55 s
        later = await asyncio.gather(*(batcher.submit([f"later {i}"]) for i in range(5)))
        return await first, later

    run(main())
    assert [len(c) for c in model.calls] == [1, 5]
    gap = starts[1] - starts[0]
    # second pass begins when the first ends (0.3 s), not 0.25 s after that (was ~0.55 s)
    assert 0.29 <= gap < 0.45, gap


# -- early close: a batch runs once no job inside the worker can still join it -----------------


def early(window_ms: float = 500, **kw):
    model = CountingModel()
    arrivals = Arrivals()
    return model, arrivals, MicroBatcher(model, window_ms=window_ms, arrivals=arrivals, **kw)


def test_a_burst_runs_as_one_pass_as_soon_as_its_last_member_submits():
    model, arrivals, batcher = early()

    async def job(i):
        with arrivals.job():
            await asyncio.sleep(0.001 * (i % 4))  # parsing etc.: members arrive a few ms apart
            return await batcher.submit([f"text {i}"])

    async def main():
        started = time.perf_counter()
        await asyncio.gather(*(job(i) for i in range(32)))
        return time.perf_counter() - started

    took = run(main())
    assert [len(c) for c in model.calls] == [32]  # still one shared pass
    assert took < 0.25  # not the 500 ms window
    assert batcher.stats.early_closes == 1 and arrivals.pending == 0


def test_a_lone_query_does_not_wait_out_the_window():
    _, arrivals, batcher = early()

    async def main():
        with arrivals.job():
            started = time.perf_counter()
            await batcher.submit(["alone"])
            return time.perf_counter() - started

    assert run(main()) < 0.25


def test_without_arrivals_the_whole_window_is_waited():
    model = CountingModel()
    batcher = MicroBatcher(model, window_ms=300)

    async def main():
        started = time.perf_counter()
        await batcher.submit(["alone"])
        return time.perf_counter() - started

    assert run(main()) >= 0.29


def test_a_job_still_on_its_way_keeps_the_batch_open():
    model, arrivals, batcher = early(window_ms=800)

    async def fast():
        with arrivals.job():
            return await batcher.submit(["fast"])

    async def slow():
        with arrivals.job():
            await asyncio.sleep(0.15)  # e.g. still fetching its image
            return await batcher.submit(["slow"])

    async def main():
        return await asyncio.gather(fast(), slow())

    (_, a), (_, b) = run(main())
    assert [sorted(c) for c in model.calls] == [["fast", "slow"]]
    assert a.pass_id == b.pass_id == 1


def test_a_job_that_leaves_without_submitting_releases_the_batch():
    _, arrivals, batcher = early(window_ms=2000)

    async def submits():
        with arrivals.job():
            return await batcher.submit(["ok"])

    async def fails():
        with arrivals.job():
            await asyncio.sleep(0.05)
            raise ValueError("bad input: never submits")

    async def main():
        started = time.perf_counter()
        results = await asyncio.gather(submits(), fails(), return_exceptions=True)
        return results, time.perf_counter() - started

    results, took = run(main())
    assert isinstance(results[1], ValueError)
    assert results[0][0].shape == (1, 8)
    assert took < 0.5  # closed ~when the failing job left, not after 2 s
    assert arrivals.pending == 0


def test_release_marks_a_job_that_will_never_batch():
    _, arrivals, batcher = early(window_ms=2000)

    async def other_task():
        with arrivals.job():
            arrivals.release()  # e.g. a transcribe job
            await asyncio.sleep(0.5)

    async def query():
        with arrivals.job():
            started = time.perf_counter()
            await batcher.submit(["q"])
            return time.perf_counter() - started

    async def main():
        return await asyncio.gather(other_task(), query())

    _, waited = run(main())
    assert waited < 0.25
    assert arrivals.pending == 0


def test_a_pass_is_charged_to_its_callers_by_their_share_of_its_items():
    """The model seconds of one shared pass (timed on the model's thread) are split among its callers
    by item count, each into its own account (shared.worker.model_time); nothing of the window or the
    wait for the model is charged."""
    from shared.worker import model_time

    model = CountingModel(delay=0.3)
    batcher = MicroBatcher(model, window_ms=100, max_batch=64, executor=ThreadPoolExecutor(1))

    async def caller(n: int) -> tuple[float, float]:
        with model_time.measure() as spent:
            _, info = await batcher.submit([f"t{n}-{i}" for i in range(n)])
        return spent(), info.seconds

    async def main():
        return await asyncio.gather(caller(1), caller(3))

    (one, pass_s), (three, pass_s3) = run(main())
    assert len(model.calls) == 1 and pass_s == pass_s3 >= 0.3
    assert one == pytest.approx(pass_s / 4) and three == pytest.approx(pass_s * 3 / 4)
    assert batcher.stats.busy_s == pytest.approx(pass_s)
