"""One place per channel and per task: the registries follow the spec and the parser."""

from __future__ import annotations

import asyncio
import pkgutil

import pytest

from shared import spec
from shared.worker import channels
from shared.worker.budget import PixelBudget
from shared.worker.channels import RUNNERS
from shared.worker.channels.base import INPUTS, ChannelRunner
from shared.worker.jobs import JOBS
from shared.worker.requests import TASKS

pytestmark = pytest.mark.unit


def test_every_runpod_channel_is_one_module_with_one_runner():
    modules = {m.name for m in pkgutil.iter_modules(channels.__path__)} - {"base"}
    assert modules == set(spec.RUNPOD_CHANNELS) == set(RUNNERS)
    assert tuple(RUNNERS) == spec.RUNPOD_CHANNELS
    for name, runner in RUNNERS.items():
        assert isinstance(runner, ChannelRunner) and runner.name == name
        assert runner.spec is spec.CHANNELS[name]
        assert runner.needs in INPUTS
        assert type(runner).compute is not ChannelRunner.compute


def test_every_task_is_one_job_module():
    assert set(JOBS) == set(TASKS)
    for module in JOBS.values():
        assert callable(module.run) and callable(module.batch_role)


def test_the_pixel_budget_makes_a_second_hold_wait():
    budget = PixelBudget(10)
    order: list[str] = []

    async def holder(name: str, pixels: int, release: asyncio.Event) -> None:
        async with budget.hold(pixels):
            order.append(f"{name}+")
            await release.wait()
        order.append(f"{name}-")

    async def main() -> None:
        first, second = asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(holder("a", 7, first))
        await asyncio.sleep(0)
        b = asyncio.create_task(holder("b", 7, second))
        await asyncio.sleep(0)
        assert order == ["a+"] and budget.stats.waits == 1
        first.set()
        second.set()
        await asyncio.gather(a, b)

    asyncio.run(main())
    assert order == ["a+", "a-", "b+", "b-"]
    assert budget.stats.peak == 7 and budget.stats.decoded == 14 and budget.stats.in_use == 0
    with pytest.raises(ValueError, match="never fit"):
        asyncio.run(budget.hold(11).__aenter__())
