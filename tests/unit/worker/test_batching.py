"""The micro-batcher: concurrent callers share forward passes, rows go back to the right caller,
one caller's failure does not fail the others, and the event loop keeps running during a pass.

Nothing here asserts wall-clock seconds. What depends on the window runs on `VirtualTimeLoop`, whose
clock jumps to the next timer when nothing can run, and whose model threads "run" for their delay in
that clock (`spend`): the timeline is exact, so the tests assert it exactly (which pass ran when,
which caller waited for which) and a busy machine cannot change it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import pytest

from shared.dev.fakes import FakeBackend
from shared.worker import model_time
from shared.worker.batching import Arrivals, MicroBatcher

pytestmark = pytest.mark.unit

R = TypeVar("R")


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time, from 0. When no callback is ready and no executor job is at work,
    the clock jumps to the next timer instead of sleeping; while a job works, the clock stands still
    and the loop waits for it for real. A job "runs for" s seconds with `spend(s)`: it stops counting
    as at work until the clock has moved on by s, so callers, windows and passes interleave exactly
    as they would in real time, minus the noise."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self._working = 0  # executor jobs submitted and not finished, less those inside spend()
        select = self._selector.select

        def virtual_select(timeout: float | None = None) -> list:
            ready = select(0)
            if not ready and timeout != 0:
                if self._working or timeout is None:
                    ready = select(None)  # the job (or a thread of asyncio's) wakes the loop when done
                else:
                    self.now += timeout  # nothing can happen before the next timer: go there
            # asyncio fires the timers due within its clock's resolution; the clock reaches the first
            # of them, so that a wait shorter than the resolution still moves time on
            if self._scheduled and self._scheduled[0].when() < self.now + self._clock_resolution:
                self.now = max(self.now, self._scheduled[0].when())
            return ready

        self._selector.select = virtual_select  # type: ignore[method-assign]

    def time(self) -> float:
        return self.now

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future:
        self._working += 1
        future = super().run_in_executor(executor, func, *args)
        future.add_done_callback(self._rest)  # once its result is on the loop, not merely computed
        return future

    def _rest(self, _: object) -> None:
        self._working -= 1

    def spend(self, seconds: float) -> None:
        """On an executor thread: take `seconds` of the loop's time (the loop runs on meanwhile)."""
        back = threading.Event()

        def park() -> None:
            self._working -= 1
            self.call_later(seconds, resume)

        def resume() -> None:
            self._working += 1
            back.set()

        self.call_soon_threadsafe(park)
        back.wait()


def run_virtual(loop: VirtualTimeLoop, coro: Coroutine[Any, Any, R]) -> R:
    with asyncio.Runner(loop_factory=lambda: loop) as runner:
        return runner.run(coro)


def now() -> float:
    return asyncio.get_running_loop().time()


class CountingModel:
    """fn(items) -> rows, recording every call (and, on a VirtualTimeLoop, the time it began); items
    containing "BAD" make the whole call fail. A call takes `delay` seconds of `sleep`."""

    def __init__(self, delay: float = 0.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.calls: list[list[str]] = []
        self.started: list[float] = []  # the loop's time at each call (frozen while a call works)
        self.delay = delay
        self.sleep = sleep
        self.fake = FakeBackend(8)
        self.threads: set[str] = set()
        self.loop: asyncio.AbstractEventLoop | None = None

    def __call__(self, items: list[str]) -> np.ndarray:
        self.calls.append(list(items))
        if self.loop is not None:
            self.started.append(self.loop.time())
        self.threads.add(threading.current_thread().name)
        if self.delay:
            self.sleep(self.delay)
        if any("BAD" in x for x in items):
            raise ValueError("bad item in batch")
        return self.fake.embed(items)


def virtual_model(delay: float = 0.0) -> tuple[VirtualTimeLoop, CountingModel]:
    loop = VirtualTimeLoop()
    model = CountingModel(delay, sleep=loop.spend)
    model.loop = loop
    return loop, model


def run(coro):
    return asyncio.run(coro)


def test_the_virtual_loop_jumps_over_waits_and_a_model_call_takes_its_delay():
    loop, model = virtual_model(delay=0.3)

    async def main():
        await asyncio.sleep(5)
        at_5 = now()
        await asyncio.to_thread(model, ["x"])
        return at_5, now()

    started = time.perf_counter()
    assert run_virtual(loop, main()) == (5.0, pytest.approx(5.3))
    assert model.started == [5.0]
    assert time.perf_counter() - started < 5  # the 5 s were jumped (a guard, not a timing)


def test_concurrent_callers_share_one_forward_pass_and_get_their_own_rows():
    loop, model = virtual_model()
    batcher = MicroBatcher(model, window_ms=50, max_batch=64)

    async def main():
        return await asyncio.gather(*(batcher.submit([f"text {i}"]) for i in range(32)))

    results = run_virtual(loop, main())
    assert [len(c) for c in model.calls] == [32]  # all 32 arrive inside the 50 ms window: one pass
    assert model.started == [pytest.approx(0.05)]  # when the window after the first arrival ended
    for i, (rows, info) in enumerate(results):
        assert rows.shape == (1, 8)
        np.testing.assert_allclose(rows[0], model.fake.embed([f"text {i}"])[0], rtol=1e-6)
        assert info.size == 32
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
    """The pass holds its thread until the ticker, on the loop, has ticked ten times: it can only
    end if the loop kept running while it was busy."""
    events: list[str] = []
    busy, ticked = threading.Event(), threading.Event()

    def hold(_delay: float) -> None:
        events.append("pass busy")
        busy.set()
        assert ticked.wait(30), "the loop stood still during the pass"
        events.append("pass ends")

    model = CountingModel(delay=1, sleep=hold)
    executor = ThreadPoolExecutor(1, thread_name_prefix="model-test")
    batcher = MicroBatcher(model, window_ms=0, executor=executor)

    async def ticker():
        await asyncio.to_thread(busy.wait, 30)
        for _ in range(10):
            events.append("tick")
            await asyncio.sleep(0.01)
        ticked.set()

    async def main():
        await asyncio.gather(batcher.submit(["slow"]), ticker())

    run(main())
    executor.shutdown()
    assert events == [
        "pass busy",
        *["tick"] * 10,
        "pass ends",
    ]  # the ticker finished while the model was busy
    assert model.threads == {"model-test_0"}


def test_requests_arriving_during_a_pass_form_the_next_batch():
    loop, model = virtual_model(delay=0.2)
    batcher = MicroBatcher(model, window_ms=5, max_batch=64)

    async def main():
        first = asyncio.ensure_future(batcher.submit(["first"]))
        await asyncio.sleep(0.05)  # the first pass is running now (0.005 s to 0.205 s)
        assert len(model.calls) == 1 and not first.done()
        rest = await asyncio.gather(*(batcher.submit([f"later {i}"]) for i in range(10)))
        return await first, rest

    _, rest = run_virtual(loop, main())
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
    loop, model = virtual_model(delay=0.3)
    batcher = MicroBatcher(model, window_ms=250, max_batch=64)

    async def main():
        first = asyncio.ensure_future(batcher.submit(["first"]))
        await asyncio.sleep(0.27)  # first pass starts at 0.25 s (window) and is busy until 0.55 s
        later = await asyncio.gather(*(batcher.submit([f"later {i}"]) for i in range(5)))
        return await first, later

    run_virtual(loop, main())
    assert [len(c) for c in model.calls] == [1, 5]
    # the second pass begins when the first ends (0.55 s), not a window after that (0.80 s)
    assert model.started == [pytest.approx(0.25), pytest.approx(0.55)]


# -- early close: a batch runs once no job inside the worker can still join it -----------------


def early(window_ms: float = 500, **kw):
    loop, model = virtual_model()
    arrivals = Arrivals()
    return loop, model, arrivals, MicroBatcher(model, window_ms=window_ms, arrivals=arrivals, **kw)


def test_a_burst_runs_as_one_pass_as_soon_as_its_last_member_submits():
    loop, model, arrivals, batcher = early()
    submitted: list[float] = []

    async def job(i):
        with arrivals.job():
            await asyncio.sleep(0.001 * (i % 4))  # parsing etc.: members arrive a few ms apart
            submitted.append(now())
            return await batcher.submit([f"text {i}"])

    async def main():
        await asyncio.gather(*(job(i) for i in range(32)))
        return now()

    done = run_virtual(loop, main())
    assert [len(c) for c in model.calls] == [32]  # still one shared pass
    # it ran when its last member submitted (3 ms), not when the 500 ms window ended
    assert model.started == [max(submitted)] == [pytest.approx(0.003)] and done == model.started[0]
    assert batcher.stats.early_closes == 1 and arrivals.pending == 0


def test_a_lone_query_does_not_wait_out_the_window():
    loop, model, arrivals, batcher = early()

    async def main():
        with arrivals.job():
            await batcher.submit(["alone"])
            return now()

    assert run_virtual(loop, main()) == 0.0 and model.started == [0.0]  # no wait at all


def test_without_arrivals_the_whole_window_is_waited():
    loop, model = virtual_model()
    batcher = MicroBatcher(model, window_ms=300)

    async def main():
        await batcher.submit(["alone"])
        return now()

    assert run_virtual(loop, main()) == pytest.approx(0.3)  # all of it, and the pass took no time
    assert model.started == [pytest.approx(0.3)]


def test_a_job_still_on_its_way_keeps_the_batch_open():
    loop, model, arrivals, batcher = early(window_ms=800)

    async def fast():
        with arrivals.job():
            return await batcher.submit(["fast"])

    async def slow():
        with arrivals.job():
            await asyncio.sleep(0.15)  # e.g. still fetching its image
            return await batcher.submit(["slow"])

    async def main():
        return await asyncio.gather(fast(), slow())

    (_, a), (_, b) = run_virtual(loop, main())
    assert [sorted(c) for c in model.calls] == [["fast", "slow"]]
    assert a.pass_id == b.pass_id == 1
    assert model.started == [pytest.approx(0.15)]  # when the slow one arrived, not at 0.8 s


def test_a_job_that_leaves_without_submitting_releases_the_batch():
    loop, model, arrivals, batcher = early(window_ms=2000)

    async def submits():
        with arrivals.job():
            return await batcher.submit(["ok"])

    async def fails():
        with arrivals.job():
            await asyncio.sleep(0.05)
            raise ValueError("bad input: never submits")

    async def main():
        return await asyncio.gather(submits(), fails(), return_exceptions=True)

    results = run_virtual(loop, main())
    assert isinstance(results[1], ValueError)
    assert results[0][0].shape == (1, 8)
    # closed when the failing job left (at 0.05 s; the batcher looks again every ms), not after 2 s
    [ran] = model.started
    assert 0.05 <= ran <= 0.051 + 1e-9, ran
    assert arrivals.pending == 0


def test_release_marks_a_job_that_will_never_batch():
    loop, model, arrivals, batcher = early(window_ms=2000)

    async def other_task():
        with arrivals.job():
            arrivals.release()  # e.g. a transcribe job
            await asyncio.sleep(0.5)
            return now()

    async def query():
        with arrivals.job():
            await batcher.submit(["q"])
            return now()

    async def main():
        return await asyncio.gather(other_task(), query())

    other_left, answered = run_virtual(loop, main())
    # the query did not wait for the other job (still in the worker until 0.5 s), nor for the window
    assert answered == 0.0 and model.started == [0.0] and other_left == pytest.approx(0.5)
    assert arrivals.pending == 0


def test_a_pass_is_charged_to_its_callers_by_their_share_of_its_items():
    """The model seconds of one shared pass (timed on the model's thread) are split among its callers
    by item count, each into its own account (shared.worker.model_time); nothing of the window or the
    wait for the model is charged."""
    loop, model = virtual_model(delay=0.3)
    batcher = MicroBatcher(model, window_ms=100, max_batch=64, executor=ThreadPoolExecutor(1))

    async def caller(n: int) -> tuple[float, float]:
        with model_time.measure() as spent:
            _, info = await batcher.submit([f"t{n}-{i}" for i in range(n)])
        return spent(), info.seconds

    async def main():
        return await asyncio.gather(caller(1), caller(3))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_time, "clock", loop.time)  # model seconds in the loop's (virtual) time
        (one, pass_s), (three, pass_s3) = run_virtual(loop, main())
    # the pass ran 0.3 s; the 0.1 s window before it is charged to nobody
    assert len(model.calls) == 1 and pass_s == pass_s3 == pytest.approx(0.3)
    assert one == pytest.approx(pass_s / 4) and three == pytest.approx(pass_s * 3 / 4)
    assert batcher.stats.busy_s == pytest.approx(pass_s)
