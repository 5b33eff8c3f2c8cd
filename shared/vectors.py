"""The one check every vector passes, with one tolerance: float32, the expected shape, finite, and every
row unit length. Both sides use it: the worker on what a model returned (shared.models.backend
.check_unit_rows raises ModelUnhealthy: a sick model) and the orchestration on what it reads back or
is about to write (check_vector raises BadVector: a bad artifact)."""

from __future__ import annotations

import io

import numpy as np

from shared.errors import EmbeddingError

# Every row is L2-normalised in float32 after the model ran, so a healthy model lands within ~1e-6;
# 1e-3 still admits fp16 towers and refuses anything unnormalised.
UNIT_NORM_TOLERANCE = 1e-3


class BadVector(EmbeddingError):
    code = "bad_vector"
    status = 422


def vector_problem(array: object, dims: int | None = None, ndim: int | None = None) -> str | None:
    """What is wrong with `array` as unit vectors (None when nothing is)."""
    arr = np.asarray(array)
    if arr.dtype != np.float32:
        return f"dtype {arr.dtype}, expected float32"
    if arr.size == 0 or arr.ndim == 0 or (ndim is not None and arr.ndim != ndim):
        return f"shape {list(arr.shape)}, expected {ndim or 'at least 1'} non-empty dimension(s)"
    if dims is not None and arr.shape[-1] != dims:
        return f"width {arr.shape[-1]}, expected {dims}"
    if not np.isfinite(arr).all():
        return "NaN or inf values"
    norms = np.linalg.norm(arr.reshape(-1, arr.shape[-1]).astype(np.float64), axis=-1)
    if np.abs(norms - 1.0).max() > UNIT_NORM_TOLERANCE:
        return f"not unit length (norms {norms.min():.4f}..{norms.max():.4f})"
    return None


def check_vector(array: np.ndarray, dims: int | None, what: str, *, rows: bool = False) -> np.ndarray:
    """`array` if it is a unit vector of `dims` (rows=True: a [n, dims] matrix of unit rows); BadVector
    naming `what` otherwise."""
    problem = vector_problem(array, dims, 2 if rows else 1)
    if problem:
        raise BadVector(f"{what}: {problem}")
    return np.asarray(array)


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
