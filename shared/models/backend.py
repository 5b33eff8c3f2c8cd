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
from shared.vectors import UNIT_NORM_TOLERANCE, vector_problem

__all__ = ["UNIT_NORM_TOLERANCE", "Backend", "check_unit_rows", "l2_normalize"]


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
    """The one output check (shared.vectors, one tolerance) on what a model returned. Raises
    ModelUnhealthy naming `what`: a model that returns NaN/inf or unnormalised rows at run time is a
    sick process, not bad input."""
    problem = vector_problem(array)
    if problem:
        raise ModelUnhealthy(f"{what}: returned {problem}")
    return np.asarray(array)
