"""Model seconds: how long a model ran for a caller, not how long the caller waited for it.

A channel's reported `seconds` (the ledger's `gpu_seconds`, which the reprocess dry run's estimate
is built from) must be a property of the item, not of what else the worker had in flight. Each model
runs on its own single-thread executor, so a job that arrives behind another waits in that queue;
timing the await would bill the wait to it. Instead the model call is timed on the model's thread
(`timed`), and the caller is charged (`charge`) those seconds; a batched pass is charged to its
callers in proportion to their items (shared.worker.batching).

`with measure() as spent:` opens an account in the current context; `spent()` reads it. The account
is a context variable holding a mutable cell, so it follows the caller into the tasks it spawns
(asyncio copies the context) and a charge made outside any account is dropped; an account opened
inside another hides the outer one for its block. What a failed model call ran is charged to nobody.

`clock` is the one clock these seconds, and a channel's wall seconds (shared.worker.jobs.embed_item),
are read from: time.perf_counter, read at each call, so a test can put a fake one in its place.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator
from typing import Any

clock: Callable[[], float] = time.perf_counter

_ACCOUNT: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("model_seconds", default=None)


@contextlib.contextmanager
def measure() -> Iterator[Callable[[], float]]:
    """An account for the model seconds charged inside the block; yields its reader."""
    cell = [0.0]
    token = _ACCOUNT.set(cell)
    try:
        yield lambda: cell[0]
    finally:
        _ACCOUNT.reset(token)


def charge(seconds: float) -> None:
    """Add model seconds to the current account (none open: nothing to do)."""
    cell = _ACCOUNT.get()
    if cell is not None:
        cell[0] += max(0.0, float(seconds))


def timed(fn: Callable[..., Any], /, *args: Any, **kw: Any) -> tuple[Any, float]:
    """`fn(*args, **kw)` and the seconds it ran; call it on the model's thread."""
    start = clock()
    out = fn(*args, **kw)
    return out, clock() - start
