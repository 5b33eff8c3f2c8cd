"""The one check every vector passes before it is written or accepted: float32, the expected width,
finite, and unit length within one tolerance."""

from __future__ import annotations

import io

import numpy as np

from shared.errors import EmbeddingError

NORM_TOLERANCE = 1e-3


class BadVector(EmbeddingError):
    code = "bad_vector"
    status = 422


def check_vector(array: np.ndarray, dims: int | None, what: str, *, rows: bool = False) -> np.ndarray:
    """`array` as float32 if it is a finite unit vector of `dims` (or, with rows=True, a [n, dims]
    matrix of unit rows); BadVector otherwise."""
    arr = np.asarray(array)
    if arr.dtype != np.float32:
        raise BadVector(f"{what}: expected float32, got {arr.dtype}")
    want_ndim = 2 if rows else 1
    if arr.ndim != want_ndim or arr.size == 0 or (dims is not None and arr.shape[-1] != dims):
        raise BadVector(f"{what}: expected shape {'[n, ' if rows else '['}{dims}], got {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise BadVector(f"{what}: contains NaN or inf")
    norms = np.linalg.norm(arr.reshape(-1, arr.shape[-1]).astype(np.float64), axis=-1)
    if np.abs(norms - 1.0).max() > NORM_TOLERANCE:
        raise BadVector(f"{what}: not unit length")
    return arr


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def load_npy(data: bytes, what: str) -> np.ndarray:
    """A .npy payload without pickles; BadVector when it is not one."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise BadVector(f"{what}: not a readable .npy file") from e
