"""Turning exceptions into safe job output: the one place that decides what a caller may see.

- Expected failures (`EmbeddingError`) keep their code and `retryable`; their message is redacted
  (URL queries stripped, temp paths replaced).
- Anything else is `internal_error` (retryable) with a correlation id; the traceback goes to the
  worker's log only, redacted the same way. No output carries a traceback, host name, path or query.
- A fault that means this process is unhealthy (a CUDA error, a model returning non-finite or
  unnormalised values at run time) sets `refresh_worker` in the job output: the runpod SDK pops that
  key and reports `stopPod`, so RunPod replaces the worker after this job (rp_job.run_job).
"""

from __future__ import annotations

import logging
import re
import traceback
import uuid
from typing import Any

from shared.errors import EmbeddingError, ModelUnhealthy

log = logging.getLogger("shared.worker")

_URL_QUERY = re.compile(r"(?i)\b(https?://[^\s?#'\"<>]*)[?#][^\s'\"<>]*")
# Messages of errors after which a CUDA context cannot be trusted (torch raises these as RuntimeError
# or torch.AcceleratorError). Out-of-memory is not among them: the next, smaller job can still run.
_PROCESS_FAULTS = (
    "CUDA error",
    "CUDNN_STATUS_",
    "cuDNN error",
    "CUBLAS_STATUS_",
    "illegal memory access",
    "device-side assert",
    "NCCL error",
    "unspecified launch failure",
)
_PROCESS_FAULT_TYPES = ("AcceleratorError", "CudaError")


def redact(text: str) -> str:
    """Strip query strings and fragments from any URL in `text` (presigned signatures live there)."""
    return _URL_QUERY.sub(r"\1?…", text)


def is_process_fault(exc: BaseException) -> bool:
    """Whether `exc` means this worker process should be replaced (see the module docstring)."""
    if isinstance(exc, ModelUnhealthy):
        return True
    if any(t.__name__ in _PROCESS_FAULT_TYPES for t in type(exc).__mro__):
        return True
    text = str(exc)[:4096] if isinstance(exc, RuntimeError) else ""
    return any(marker in text for marker in _PROCESS_FAULTS)


def error_payload(exc: EmbeddingError, *, scrub: tuple[str, ...] = ()) -> dict[str, Any]:
    """The safe `{"code", "message", "retryable", "field"?}` of a domain error."""
    out = exc.to_dict()
    message = redact(out["message"])
    for secret in scrub:
        if secret:
            message = message.replace(secret, "<source>")
    out["message"] = message
    # a sick model is this worker's problem: another worker can serve the same input
    out["retryable"] = bool(exc.retryable) or isinstance(exc, ModelUnhealthy)
    return out


def internal_error(exc: BaseException, where: str) -> dict[str, Any]:
    """Log `exc` with its traceback under a new correlation id; the safe payload for the caller."""
    correlation_id = uuid.uuid4().hex[:16]
    trace = redact("".join(traceback.format_exception(exc)))
    log.error("%s: internal error, correlation_id=%s\n%s", where, correlation_id, trace)
    return {
        "code": "internal_error",
        "message": f"internal error in {where}; correlation id {correlation_id}",
        "retryable": True,
        "correlation_id": correlation_id,
    }


def failure(exc: BaseException, where: str, *, scrub: tuple[str, ...] = ()) -> tuple[dict[str, Any], bool]:
    """(safe error payload, whether the worker must be refreshed) for any exception."""
    if isinstance(exc, EmbeddingError):
        return error_payload(exc, scrub=scrub), is_process_fault(exc)
    return internal_error(exc, where), is_process_fault(exc)


def rescrubbed(exc: EmbeddingError, workdir: str, *, field: str | None = None) -> EmbeddingError:
    """The same error with temp paths and URL queries removed from its message (and a field if given)."""
    exc.message = redact(exc.message).replace(workdir, "<source>")
    exc.args = (exc.message,)
    if field is not None:
        exc.field = field
    return exc
