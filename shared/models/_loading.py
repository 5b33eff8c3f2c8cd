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


def load_transformers(
    model_cls: Any,
    processor_cls: Any,
    folder: Path,
    *,
    device: str,
    precision: str,
    name: str | None = None,
    complete: bool = False,
) -> tuple[Any, Any, Any]:
    """(model in eval mode on `device`, processor, dtype): how every transformers loader reads a model
    folder (local files and safetensors only; fp16/bf16 only on CUDA). `complete`: a checkpoint that
    leaves any weight uninitialised is refused (ModelNotFound)."""
    from shared.errors import ModelNotFound

    folder = Path(folder)
    dtype = torch_dtype(precision, device)
    kw: dict[str, Any] = {"dtype": dtype, "local_files_only": True, "use_safetensors": True}
    if complete:
        model, info = model_cls.from_pretrained(folder, output_loading_info=True, **kw)
        missing = list(info.get("missing_keys") or ())
        if missing:
            raise ModelNotFound(
                f"model {name or folder.name}: {len(missing)} weights are missing from {folder} "
                f"(e.g. {missing[0]}); re-bake it"
            )
    else:
        model = model_cls.from_pretrained(folder, **kw)
    model.to(device).eval()
    return model, processor_cls.from_pretrained(folder, local_files_only=True), dtype


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
