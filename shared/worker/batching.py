"""Micro-batching of concurrent requests into shared forward passes (seed 001's batching scheduler).

RunPod's concurrent handler runs many async jobs on one event loop. Each job calls
`await batcher.submit(items)`; the batcher collects items from every caller until `window_ms` after
the first of them ARRIVED (or until `max_batch` items are waiting), runs ONE model call for all of
them in the model's own thread (so the loop keeps accepting), and hands each caller back its rows.
The window counts from arrival, not from when the model became free: requests that queued up
during a pass have already waited, so under load the next pass starts as soon as the model is free.

- A caller with more than `max_batch` items is split into chunks; its rows come back in order.
- Only one model call per batcher is in flight; requests arriving meanwhile form the next batch.
- Validate before submitting: a batch call that raises is retried one caller at a time, so an
  exception reaches only the callers whose items cause it; the others still get their rows.
- Works under any running loop (state is per loop), e.g. the SDK's API server or its job loop.
- Early close (optional `Arrivals`): the worker counts jobs that have entered it and may still
  submit to this batcher (one count per batcher: an image job never holds a text batch open).
  When that count is 0, every job the worker knows of is already in the batch (or will never
  join one), so waiting out the window can only add latency: the batch runs at once. A lone query
  then pays no window; a burst of concurrent requests runs as soon as its last member has submitted.
  Jobs the SDK has not handed over yet are not counted: they form the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from shared.worker import model_time

T = TypeVar("T")

TEXT_BATCH = "clip_text"  # CLIP's text tower


def image_batch(tta: bool) -> str:
    """The name of CLIP's image batcher for one TTA setting (TTA and plain never share a pass)."""
    return f"clip_image{'_tta' if tta else ''}"


log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    """Counters for observability and tests: one `passes` per model call."""

    passes: int = 0
    items: int = 0
    requests: int = 0
    retries: int = 0
    largest: int = 0
    busy_s: float = 0.0
    early_closes: int = 0


@dataclass(frozen=True)
class BatchInfo:
    """Which forward pass served a caller's (last) chunk, how many items that pass held and how long
    it ran on the model's thread."""

    pass_id: int
    size: int
    seconds: float = 0.0


@dataclass
class _Entry(Generic[T]):
    items: list[T]
    future: asyncio.Future
    arrived: float
    info: list[BatchInfo] = field(default_factory=list)


class _Ticket:
    __slots__ = ("arrivals", "live")

    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals, self.live = arrivals, True

    def release(self) -> None:
        if self.live:
            self.live = False
            self.arrivals.pending -= 1


_TICKET: contextvars.ContextVar[_Ticket | None] = contextvars.ContextVar("batch_ticket", default=None)


class Arrivals:
    """How many jobs inside the worker may still submit to a batcher (see the module docstring).

    `with arrivals.job():` around each job counts it; the job stops counting when it submits to
    any batcher sharing this object, when it calls `release()` (it will never submit), or at exit.
    The ticket lives in a context variable, so it follows the job into the tasks it spawns.
    """

    def __init__(self) -> None:
        self.pending = 0

    @contextlib.contextmanager
    def job(self) -> Iterator[None]:
        ticket = _Ticket(self)
        self.pending += 1
        token = _TICKET.set(ticket)
        try:
            yield
        finally:
            ticket.release()
            _TICKET.reset(token)

    def release(self) -> None:
        """The current job will not submit (again): stop holding batches open for it."""
        ticket = _TICKET.get()
        if ticket is not None and ticket.arrivals is self:
            ticket.release()


class _LoopState:
    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None


class MicroBatcher(Generic[T]):
    """Combine concurrent `submit` calls into batched calls of `fn(items) -> float32 [len(items), d]`."""

    def __init__(
        self,
        fn: Callable[[list[T]], np.ndarray],
        *,
        window_ms: float = 15.0,
        max_batch: int = 64,
        executor: Executor | None = None,
        name: str = "batch",
        arrivals: Arrivals | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._fn = fn
        self._window = max(0.0, window_ms) / 1000.0
        self._max = max_batch
        self._executor = executor
        self.name = name
        self._arrivals = arrivals
        self.stats = BatchStats()
        self._states: dict[asyncio.AbstractEventLoop, _LoopState] = {}

    async def submit(self, items: Sequence[T]) -> tuple[np.ndarray, BatchInfo]:
        """Rows for `items` (float32 [len(items), d]) and the pass that computed them."""
        items = list(items)
        if not items:
            raise ValueError("submit() needs at least one item")
        state = self._state()
        loop = asyncio.get_running_loop()
        now = loop.time()
        entries = [
            _Entry(items[i : i + self._max], loop.create_future(), now)
            for i in range(0, len(items), self._max)
        ]
        self.stats.requests += 1
        if self._arrivals is not None:
            self._arrivals.release()
        for entry in entries:
            state.queue.put_nowait(entry)
        parts = await asyncio.gather(*(e.future for e in entries))
        # each pass is charged to its callers by their share of its items (shared.worker.model_time)
        shares = (i.seconds * len(e.items) / max(1, i.size) for e in entries for i in e.info[-1:])
        model_time.charge(sum(shares))
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return rows, entries[-1].info[-1]

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            for old in [lp for lp in self._states if lp.is_closed()]:
                del self._states[old]
            state = self._states[loop] = _LoopState()
        if state.task is None or state.task.done():
            # a context of its own: the consumer serves every caller, so it must not inherit the first
            # one's (e.g. its model-time account)
            state.task = loop.create_task(
                self._consume(state), name=f"{self.name}-batcher", context=contextvars.Context()
            )
        return state

    async def _consume(self, state: _LoopState) -> None:
        carry: deque[_Entry] = deque()
        while True:
            first = carry.popleft() if carry else await state.queue.get()
            batch, size = [first], len(first.items)
            deadline = first.arrived + self._window
            while size < self._max:
                nxt = carry.popleft() if carry else await self._next_arrival(state, deadline)
                if nxt is None:
                    break
                if size + len(nxt.items) > self._max:
                    carry.appendleft(nxt)
                    break
                batch.append(nxt)
                size += len(nxt.items)
            batch = [e for e in batch if not e.future.done()]  # a caller may have been cancelled
            if batch:
                await self._run(batch)

    async def _next_arrival(self, state: _LoopState, deadline: float) -> _Entry | None:
        """The next entry before `deadline`, or None when the window is over (or nobody can join)."""
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(asyncio.QueueEmpty):
                return state.queue.get_nowait()  # a job that just submitted is no longer pending
            if self._arrivals is not None and self._arrivals.pending <= 0:
                self.stats.early_closes += 1
                return None
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            # with early close, re-check every ms: a job may leave without submitting (bad input)
            step = remaining if self._arrivals is None else min(remaining, 0.001)
            try:
                return await asyncio.wait_for(state.queue.get(), step)
            except TimeoutError:
                continue

    async def _call(self, items: list[Any]) -> tuple[np.ndarray, BatchInfo]:
        loop = asyncio.get_running_loop()
        out, seconds = await loop.run_in_executor(self._executor, model_time.timed, self._fn, items)
        self.stats.busy_s += seconds
        self.stats.passes += 1
        self.stats.items += len(items)
        self.stats.largest = max(self.stats.largest, len(items))
        out = np.asarray(out, dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(items):
            raise RuntimeError(f"{self.name}: model returned shape {out.shape} for {len(items)} items")
        info = BatchInfo(self.stats.passes, len(items), seconds)
        log.debug("%s pass %d: %d items", self.name, info.pass_id, info.size)
        return out, info

    async def _run(self, batch: list[_Entry]) -> None:
        flat = [x for e in batch for x in e.items]
        try:
            out, info = await self._call(flat)
        except Exception as exc:  # isolate: retry each caller alone so only the culprit sees it
            if len(batch) == 1:
                _settle(batch[0], exc=exc)
                return
            self.stats.retries += 1
            for entry in batch:
                try:
                    rows, one = await self._call(entry.items)
                except Exception as one_exc:
                    _settle(entry, exc=one_exc)
                else:
                    _settle(entry, rows=rows, info=one)
            return
        start = 0
        for entry in batch:
            end = start + len(entry.items)
            _settle(entry, rows=out[start:end], info=info)
            start = end


def _settle(
    entry: _Entry,
    *,
    rows: np.ndarray | None = None,
    info: BatchInfo | None = None,
    exc: BaseException | None = None,
) -> None:
    if entry.future.done():
        return
    if exc is not None:
        entry.future.set_exception(exc)
    else:
        entry.info.append(info)
        entry.future.set_result(rows)
