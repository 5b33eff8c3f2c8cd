"""A small backend interface (TEI's `Backend`, infinity's abstract transformer).

Every embedding backend has a name, dims, `embed(batch) -> float32 [n, dims]` (L2-normalised) and
`warmup()` (the Lambda text model's start check; the GPU worker's backends are checked by its one
canary, shared.worker.health). `check_unit_rows` is the one output check, with one tolerance.
The deterministic fake for tests is `shared.dev.fakes.FakeBackend`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from shared.errors import ModelUnhealthy

# The one unit-length tolerance: every row is L2-normalised in float32 after the model ran, so a
# healthy model lands within ~1e-6; 1e-3 still admits fp16 towers, and refuses anything unnormalised.
UNIT_NORM_TOLERANCE = 1e-3


@runtime_checkable
class Backend(Protocol):
    name: str
    dims: int

    def embed(self, batch: Sequence) -> np.ndarray: ...

    def warmup(self) -> None: ...


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.maximum(norm, eps)).astype(np.float32)


def check_unit_rows(array: object, what: str) -> np.ndarray:
    """The one output check: float32, finite, non-empty, every row unit length within
    UNIT_NORM_TOLERANCE. Raises ModelUnhealthy naming `what` (a model that returns NaN/inf or
    unnormalised rows at run time is a sick process, not bad input)."""
    arr = np.asarray(array)
    if arr.dtype != np.float32:
        raise ModelUnhealthy(f"{what}: returned dtype {arr.dtype}, expected float32")
    if arr.size == 0 or arr.ndim == 0:
        raise ModelUnhealthy(f"{what}: returned nothing")
    if not np.isfinite(arr).all():
        raise ModelUnhealthy(f"{what}: returned NaN or inf")
    norms = np.linalg.norm(arr.reshape(-1, arr.shape[-1]), axis=-1)
    if np.abs(norms - 1.0).max() > UNIT_NORM_TOLERANCE:
        raise ModelUnhealthy(
            f"{what}: returned vectors of norm {norms.min():.4f}..{norms.max():.4f}, expected 1"
        )
    return arr
