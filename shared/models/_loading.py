"""Helpers shared by the GPU-side loaders (torch only; never imported by Lambda code)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from shared.errors import ConfigError
from shared.models import registry

log = logging.getLogger("shared.models")

PRECISIONS = ("fp32", "fp16", "bf16")


def torch_dtype(precision: str, device: str) -> Any:
    """fp16/bf16 only on CUDA; CPU always runs fp32 (half precision there is slow and lossy)."""
    import torch

    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision={precision!r} is not valid; example: precision=fp16 (one of {PRECISIONS})"
        )
    if not str(device).startswith("cuda"):
        return torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def precision_name(dtype: Any) -> str:
    import torch

    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


def identity(folder: Path, name: str | None) -> tuple[str, bool, str]:
    """(name, random, model_label) from the folder's manifest.json; warns loudly on random weights."""
    manifest = registry.read_manifest(Path(folder))
    name = name or manifest.get("name") or Path(folder).name
    random = bool(manifest.get("random", False))
    if random:
        label = f"{name}:random-weights"
        log.warning(
            "model %s in %s has RANDOM weights (dev/test only): its outputs mean nothing", name, folder
        )
    elif manifest.get("source_repo"):
        label = f"{manifest['source_repo']}@{manifest.get('revision', 'unknown')}"
    else:
        label = f"{name}@{Path(folder)}"
    return name, random, label
