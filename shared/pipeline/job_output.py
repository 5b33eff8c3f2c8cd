"""A RunPod job's answer (the webhook body, or /status), parsed once, at the boundary, into what the
orchestration needs. Parsing never raises: what cannot be described becomes an error of the job or of
one channel, so no output a worker returns can make the webhook or the sweeper fail.

    {"id": job id, "status": "COMPLETED" | "FAILED" | "CANCELLED" | "TIMED_OUT" | "IN_QUEUE" | ...,
     "executionTime": ms, "error": worker error (JSON text or object),
     "output": {"item": {"owner_id", "item_id", ...}, "seconds": s, "error"?: worker error,
                "channels": {name: {"status": "succeeded", "sha256", "bytes", "model", "model_name",
                                    "random", "seconds", "timestamps"?, ...}
                                  | {"status": "failed", "error": worker error}}}}

The SDK's local API posts {"output": ...} with no status: that is a COMPLETED job. A channel whose
report does not fit its model is that channel's retryable `bad_output`; times that are not finite, or
longer than a job can live, count as unknown (0) rather than failing the result. A per-frame channel's
`timestamps` (the seconds of its frame rows, which the search index gives its frames) are kept: at most
`max_frames` of them, each finite and >= 0, in order, or the channel's report is a bad_output.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

FINAL_JOB_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
MAX_CODE_CHARS = 64
MAX_MESSAGE_CHARS = 500
BAD_OUTPUT = "bad_output"
DEFAULT_MAX_FRAMES = 4096  # PipelineSettings.max_frame_timestamps' default


def safe_text(value: Any, limit: int) -> str:
    """`value` as text that any store accepts: at most `limit` characters, lone surrogates replaced."""
    text = value if isinstance(value, str) else str(value)
    return text[:limit].encode("utf-8", "replace").decode("utf-8")


def parse_job_error(raw: Any) -> dict[str, Any]:
    """A worker's error (a JSON string from the SDK, or a dict) as {"code", "message", "retryable"};
    anything unrecognised is an internal fault, retryable. Texts are cut short and made storable."""
    err: Any = raw
    if isinstance(raw, str):
        try:
            err = json.loads(raw[:65536])
        except (ValueError, RecursionError):
            err = {"code": "worker_error", "message": raw}
    if not isinstance(err, dict):
        err = {"code": "worker_error", "message": "the worker failed"}
    code = safe_text(err.get("code") or "worker_error", MAX_CODE_CHARS)
    message = safe_text(err.get("message") or "the worker failed", MAX_MESSAGE_CHARS)
    retryable = err.get("retryable")
    return {"code": code, "message": message, "retryable": True if retryable is None else bool(retryable)}


def bad_output(message: str) -> dict[str, Any]:
    return {"code": BAD_OUTPUT, "message": message[:MAX_MESSAGE_CHARS], "retryable": True}


Seconds = Annotated[float, Field(ge=0.0, allow_inf_nan=False, strict=True)]


class SceneSpan(BaseModel):
    """One scene of a thumbnail channel's report: its span in seconds (other keys ignored)."""

    model_config = ConfigDict(extra="ignore")

    start: Annotated[float, Field(ge=0.0, allow_inf_nan=False, strict=True)]
    end: Annotated[float, Field(ge=0.0, allow_inf_nan=False, strict=True)]


class ChannelReport(BaseModel):
    """One channel as the worker reports it."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["succeeded", "failed"]
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    bytes: int | None = Field(default=None, ge=0, le=MAX_ARTIFACT_BYTES, strict=True)
    model: str = ""
    model_name: str = ""
    random: bool = Field(default=False, strict=True)
    seconds: Seconds = 0.0
    timestamps: list[Annotated[float, Field(ge=0.0, allow_inf_nan=False, strict=True)]] | None = None
    # a thumbnail channel's scenes ({start, end, ...} each; only the span is kept), one per scene row
    scenes: list[SceneSpan] | None = None
    error: Any = None

    @field_validator("timestamps", "scenes", mode="before")
    @classmethod
    def _bounded(cls, v: Any, info: ValidationInfo) -> Any:
        limit = (info.context or {}).get("max_frames", DEFAULT_MAX_FRAMES)
        if isinstance(v, list) and len(v) > limit:
            raise ValueError(f"more than {limit} frame times")  # before each one is parsed
        return v

    @field_validator("timestamps")
    @classmethod
    def _ordered(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(b < a for a, b in itertools.pairwise(v)):
            raise ValueError("frame times out of order")
        return v

    @field_validator("scenes")
    @classmethod
    def _spans(cls, v: list[SceneSpan] | None) -> list[SceneSpan] | None:
        if v is not None and (
            any(s.end < s.start for s in v) or any(b.start < a.start for a, b in itertools.pairwise(v))
        ):
            raise ValueError("scene spans out of order")
        return v

    @field_validator("model", "model_name", mode="before")
    @classmethod
    def _text(cls, v: Any) -> str:
        if v is None:
            return ""
        if not isinstance(v, str):
            raise ValueError("must be text")
        return safe_text(v, 200)

    def check(self) -> str | None:
        """What makes a succeeded report unusable, or None."""
        if self.status == "succeeded" and (self.sha256 is None or self.bytes is None):
            return "a succeeded channel must report sha256 and bytes"
        return None


@dataclass
class JobResult:
    """A job's answer as the state machine uses it."""

    status: str
    job_id: str | None = None
    item: Mapping[str, Any] | None = None
    error: dict[str, Any] | None = None  # the whole job's failure (every channel shares it)
    channels: dict[str, ChannelReport | dict[str, Any]] = field(default_factory=dict)  # dict: an error
    gpu_seconds: float = 0.0

    @property
    def final(self) -> bool:
        return self.status in FINAL_JOB_STATES

    def report(self, channel: str) -> ChannelReport | dict[str, Any]:
        """The channel's parsed report, or its error (a report that is missing or cannot be described)."""
        got = self.channels.get(channel)
        if got is None:
            return {"code": "missing", "message": "the worker did not report this channel", "retryable": True}
        return got


def _seconds(value: Any, max_s: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        s = float(value)
    except OverflowError:  # an integer of thousands of digits
        return None
    return round(s, 3) if math.isfinite(s) and 0.0 <= s <= max_s else None


def parse_result(
    payload: Mapping[str, Any], *, max_seconds: float, max_frames: int = DEFAULT_MAX_FRAMES
) -> JobResult:
    """The job's answer (never raises). `max_seconds`: the longest a job can run (its TTL); a time
    beyond it is not a time. `max_frames`: the most frame times a channel's report may carry."""
    status = payload.get("status")
    output = payload.get("output")
    if status is None and "output" in payload:
        status = "COMPLETED"
    job_id = payload.get("id")
    result = JobResult(
        status=safe_text(status, 20) if isinstance(status, str) else "UNKNOWN",
        job_id=job_id if isinstance(job_id, str) else None,
        item=output.get("item")
        if isinstance(output, dict) and isinstance(output.get("item"), dict)
        else None,
    )
    ms = _seconds(payload.get("executionTime"), max_seconds * 1000.0)
    if ms is not None:
        result.gpu_seconds = round(ms / 1000.0, 3)
    elif isinstance(output, dict):
        result.gpu_seconds = _seconds(output.get("seconds"), max_seconds) or 0.0
    if not result.final:
        return result
    if result.status != "COMPLETED":
        result.error = parse_job_error(payload.get("error") or f"job {result.status}")
        if result.status in ("CANCELLED", "TIMED_OUT"):
            result.error["retryable"] = True
        return result
    if not isinstance(output, dict):
        result.error = bad_output("the job's output is not an object")
        return result
    if "error" in output:
        result.error = parse_job_error(output["error"])
        return result
    reported = output.get("channels")
    if not isinstance(reported, dict):
        result.error = bad_output("the job's output has no channels object")
        return result
    for name, raw in reported.items():
        if not isinstance(name, str):
            continue
        try:
            rep = ChannelReport.model_validate(raw, context={"max_frames": max_frames})
        except ValidationError as e:
            where = ".".join(str(p) for p in e.errors()[0]["loc"]) or "report"
            result.channels[name] = bad_output(f"the report's {where} is not valid")
            continue
        problem = rep.check()
        if problem:
            result.channels[name] = bad_output(problem)
        elif rep.status == "failed":
            result.channels[name] = parse_job_error(rep.error)
        else:
            result.channels[name] = rep
    return result


__all__ = [
    "BAD_OUTPUT",
    "FINAL_JOB_STATES",
    "MAX_ARTIFACT_BYTES",
    "ChannelReport",
    "JobResult",
    "bad_output",
    "parse_job_error",
    "parse_result",
    "safe_text",
]
