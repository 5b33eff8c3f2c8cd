"""Seed 000's `deterministic` embedding backend, made honest: a hash-seeded placeholder, not a model.

EMBEDDING_BACKEND=deterministic serves embed_video and qwen3vl_text with vectors seeded from a hash of
the input (the source file's sha256 and the caption, or the text), of exactly the requested dims, so a
caller's integration tests get stable, well-formed answers without a GPU. Every output says
`"backend": "deterministic"`, `"model": "deterministic"`, `"random": true`; its vectors mean nothing and
never share a space with Qwen3-VL's (the worker refuses it for the video_qwen3vl channel). Token counts
are whitespace words (it has no tokenizer).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from shared.models.backend import l2_normalize

LABEL = "deterministic"


class DeterministicEmbedder:
    """Same interface as shared.models.qwen3vl.Qwen3VLBackend where the worker uses it."""

    kind = LABEL
    name = LABEL
    model_label = LABEL
    random = True  # outputs mean nothing
    device = "cpu"
    precision = "fp32"

    def __init__(self, dims: int, mrl_dims: Sequence[int]) -> None:
        self.dims = int(dims)
        self.mrl_dims = tuple(int(d) for d in mrl_dims)

    def vector(self, *parts: Any, dims: int) -> np.ndarray:
        """A unit float32 [dims] seeded from sha256 of `parts` (and dims)."""
        blob = repr((LABEL, dims, *parts)).encode("utf-8", "surrogatepass")
        seed = int.from_bytes(hashlib.sha256(blob).digest()[:8], "little")
        return l2_normalize(np.random.default_rng(seed).standard_normal(dims).astype(np.float32))

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def fit_text(self, text: str, max_tokens: int) -> tuple[str, bool]:
        words = text.split()
        return (text, False) if len(words) <= max_tokens else (" ".join(words[:max_tokens]), True)

    def embed_texts(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        rows = [self.vector("text", instruction or "", t, dims=self.dims) for t in texts]
        return np.stack(rows) if rows else np.zeros((0, self.dims), dtype=np.float32)

    def embed_videos(self, items: Sequence[Any], instruction: str | None = None) -> np.ndarray:
        rows = [
            self.vector(
                "video",
                hashlib.sha256(np.ascontiguousarray(i.frames).tobytes()).hexdigest(),
                i.caption or "",
                dims=self.dims,
            )
            for i in items
        ]
        return np.stack(rows) if rows else np.zeros((0, self.dims), dtype=np.float32)
