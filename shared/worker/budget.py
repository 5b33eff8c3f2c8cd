"""A worker-wide budget of decoded image pixels (WORKER_MAX_PIXELS), taken before decoding.

`async with budget.hold(pixels):` waits until the pixels fit beside what every other job holds, then
counts them as decoded until the block exits (the caller drops its decoded image by then). The
counters are for observability and for tests that assert bounded work by counting, not timing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass
class BudgetStats:
    decoded: int = 0  # pixels ever admitted
    in_use: int = 0
    peak: int = 0  # most pixels held at once
    waits: int = 0  # holds that had to wait for room


class PixelBudget:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.stats = BudgetStats()
        self._changed: dict[asyncio.AbstractEventLoop, asyncio.Condition] = {}

    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        cond = self._changed.get(loop)
        if cond is None:
            for old in [lp for lp in self._changed if lp.is_closed()]:
                del self._changed[old]
            cond = self._changed[loop] = asyncio.Condition()
        return cond

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        if not 0 <= pixels <= self.limit:
            raise ValueError(f"{pixels} pixels can never fit a budget of {self.limit}")
        cond = self._condition()
        async with cond:
            if self.stats.in_use + pixels > self.limit:
                self.stats.waits += 1
                await cond.wait_for(lambda: self.stats.in_use + pixels <= self.limit)
            self.stats.in_use += pixels
            self.stats.decoded += pixels
            self.stats.peak = max(self.stats.peak, self.stats.in_use)
        try:
            yield
        finally:
            async with cond:
                self.stats.in_use -= pixels
                cond.notify_all()
