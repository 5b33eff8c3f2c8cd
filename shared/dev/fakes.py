"""A deterministic stand-in backend (hash-seeded): keeps handler tests fast. Never what makes a
feature work: real-model tests cover the real backends."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from shared.models.backend import l2_normalize


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
