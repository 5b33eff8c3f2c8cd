"""A small backend interface (TEI's `Backend`, infinity's abstract transformer).

Every embedding backend has a name, dims, `embed(batch) -> float32 [n, dims]` (L2-normalised) and
`warmup()`. `FakeBackend` is deterministic (hash-seeded) and keeps handler tests fast; it is never
what makes a feature work: real-model tests cover the real backends.
"""

from __future__ import annotations

import hashlib
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


class FakeBackend:
    """Deterministic stand-in: the same input always maps to the same unit vector."""

    def __init__(self, dims: int = 384, name: str = "fake") -> None:
        self.name = name
        self.dims = dims

    def _one(self, item: object) -> np.ndarray:
        data = item if isinstance(item, bytes) else repr(item).encode()
        seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dims).astype(np.float32)

    def embed(self, batch: Sequence) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.dims), dtype=np.float32)
        return l2_normalize(np.stack([self._one(x) for x in batch]))

    def warmup(self) -> None:
        self.embed(["warmup"])
