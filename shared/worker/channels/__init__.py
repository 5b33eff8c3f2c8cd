"""The worker's channels: every module here defines `RUNNER` (a base.ChannelRunner), found by name.

`RUNNERS` maps channel name -> runner in the spec's order; it must cover exactly the spec's RunPod
channels (checked at import, so a spec entry without a module, or the reverse, fails loudly).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import MappingProxyType

from shared import spec
from shared.worker.channels.base import ChannelRunner


def _discover() -> dict[str, ChannelRunner]:
    found: dict[str, ChannelRunner] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base" or info.name.startswith("_"):
            continue
        runner = importlib.import_module(f"{__name__}.{info.name}").RUNNER
        if runner.name != info.name:
            raise RuntimeError(f"shared/worker/channels/{info.name}.py defines the runner of {runner.name}")
        found[runner.name] = runner
    if set(found) != set(spec.RUNPOD_CHANNELS):
        raise RuntimeError(
            f"RunPod channels in shared/spec.py {sorted(spec.RUNPOD_CHANNELS)} and runner modules in "
            f"shared/worker/channels {sorted(found)} differ"
        )
    return {name: found[name] for name in spec.RUNPOD_CHANNELS}


RUNNERS: MappingProxyType[str, ChannelRunner] = MappingProxyType(_discover())
