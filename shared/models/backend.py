"""A small backend interface (TEI's `Backend`, infinity's abstract transformer).

Every embedding backend has a name, dims, `embed(batch) -> float32 [n, dims]` (L2-normalised) and
`warmup()`. The deterministic fake for tests is `shared.dev.fakes.FakeBackend`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


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
