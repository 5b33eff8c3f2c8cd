"""Step 4, results: a job's answer (on_job_done's webhook, or the sweeper's /status poll), parsed at the
boundary (shared.pipeline.job_output), tied to the dispatch it belongs to, each channel's artifact
checked in S3 before it counts, then recorded; dependent Lambda channels run; the dispatch closes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from shared import spec
from shared.errors import InvalidInput
from shared.pipeline import tokens
from shared.pipeline.core import Core, Outcome, artifact_key, error_fields, json_object
from shared.pipeline.job_output import MAX_ARTIFACT_BYTES, ChannelReport, bad_output, parse_result
from shared.pipeline.plan import FAILED, PENDING, QUARANTINED, SUCCEEDED
from shared.pipeline.policy import quarantine_reason
from shared.vectors import BadVector, check_vector, load_npy

log = logging.getLogger(__name__)


class Results(Core):
    """A job's answer applied to its dispatch."""

    def verify_token(self, token: object) -> tokens.Claim:
        return tokens.verify(self.webhook_key, token, self.clock())

    def apply_result(
        self, owner_id: str, item_id: str, dispatch_id: str, payload: Mapping[str, Any]
    ) -> Outcome:
        """Apply a job's answer (webhook body or /status answer) to the dispatch it belongs to.
        Idempotent: a result for a dispatch that is no longer the item's open one changes nothing
        ("stale"), and so does one whose job id or item is not that dispatch's ("stale", detail
        "mismatch"). The answer is parsed and checked before anything is written; nothing in it can
        make this raise."""
        result = parse_result(
            payload,
            max_seconds=float(self.settings.job_ttl_s),
            max_frames=self.settings.max_frame_timestamps,
        )
        item, rows = self.ledger.rows(owner_id, item_id)  # one consistent read serves the whole apply
        if item is None or item.get("dispatch_id") != dispatch_id:
            return Outcome("stale", "not the item's open dispatch (already applied or superseded)")
        if result.job_id is not None and item.get("job_id") and result.job_id != item["job_id"]:
            return Outcome("stale", "the job is not the one this dispatch submitted", {"mismatch": True})
        if result.item is not None and (
            result.item.get("owner_id") != owner_id or result.item.get("item_id") != item_id
        ):
            return Outcome("stale", "the job's output is for another item", {"mismatch": True})
        if not result.final:
            return Outcome("pending", f"job is {result.status}")
        channels = list(item.get("dispatch_channels") or [])
        superseded = item.get("dispatch_hash") != item.get("media_hash")
        retry: list[str] = []
        results: dict[str, str] = {}
        finished: dict[str, tuple[str, dict[str, Any]]] = {}
        cache: dict[str, bytes] = {}
        last_error: dict[str, Any] | None = result.error
        for ch in channels:
            if superseded:
                status_, fields = (
                    PENDING,
                    {"error": {"code": "superseded", "message": "the source changed", "retryable": True}},
                )
            elif result.error is not None:
                err = dict(result.error)
                status_, fields = (PENDING if err["retryable"] else FAILED), {"error": err}
            else:
                status_, fields = self._check_channel(
                    owner_id, item_id, ch, result.report(ch), cache, item.get("dispatch_version")
                )
            fields["job_id"] = item.get("job_id")
            finished[ch] = (status_, fields)
            results[ch] = status_
            if status_ == PENDING:
                retry.append(ch)
                last_error = fields.get("error") or last_error
        written = self.ledger.finish_channels(owner_id, item_id, dispatch_id, finished, before=rows)
        # the rows as written stand for a second read, unless another writer finished one first
        known = (item, {**rows, **written}) if all(r is not None for r in written.values()) else None
        gpu_seconds = result.gpu_seconds
        # Dependent Lambda channels run while the dispatch is still open: if one fails retryably, the
        # webhook answers 500, RunPod delivers it again, and this runs again (finished rows stay as they are).
        forced_by = item.get("dispatch_run") or False  # a forced run's dependents are forced too, once
        after = self.advance(
            owner_id, item_id, force=forced_by, dispatch=False, complete=False, cache=cache, known=known
        )
        if retry and not superseded:
            attempts = int(item.get("attempts", 0))
            if self.policy.exhausted(attempts):
                reason = quarantine_reason(attempts, last_error)
                self.ledger.quarantine(owner_id, item_id, reason, retry)
                self.metric("ItemsQuarantined", 1)
                log.warning("quarantined %s/%s: %s", owner_id, item_id, reason)
                self.mark_manifest(owner_id)
                self.finalized(owner_id, item_id, item, QUARANTINED)
            else:
                self.ledger.release(
                    owner_id,
                    item_id,
                    dispatch_id,
                    retry_at=self.clock() + self.backoff(attempts),
                    gpu_seconds=gpu_seconds,
                    error=last_error,
                )
        else:
            # the new source of a superseded dispatch is dispatched by the sweeper, right away
            self.complete(
                owner_id,
                item_id,
                dispatch_id=dispatch_id,
                retry_at=self.clock() if superseded else None,
                gpu_seconds=gpu_seconds,
                known=after.rows,
            )
        self.metric("JobsApplied", 1)
        return Outcome("applied", "result applied", {"channels": results, "gpu_seconds": gpu_seconds})

    def _check_channel(
        self,
        owner_id: str,
        item_id: str,
        channel: str,
        report: ChannelReport | dict[str, Any],
        cache: dict[str, bytes],
        version: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """A reported channel result (or the error it stands for), checked against the artifact in S3
        before it counts. `version`: the spec version the dispatch presigned its outputs for (a deploy
        may come in between)."""
        if not isinstance(report, ChannelReport):
            return (PENDING if report["retryable"] else FAILED), {"error": dict(report)}
        key = artifact_key(channel, owner_id, item_id, version)
        try:
            data = self.storage.get(key, MAX_ARTIFACT_BYTES)
            if data is None:
                raise _Retry("the artifact the worker reported is not in S3")
            cache[key] = data
            if len(data) != report.bytes or hashlib.sha256(data).hexdigest() != report.sha256:
                raise _Retry("the artifact in S3 does not match what the worker reported")
            dims, rows = _check_artifact(channel, data)
        except _Retry as e:
            return PENDING, {"error": {"code": "artifact_mismatch", "message": str(e), "retryable": True}}
        except (BadVector, InvalidInput) as e:
            self.storage.delete(key)  # never leave an artifact that failed its check
            return FAILED, {"error": error_fields(e)}
        extra: dict[str, Any] = {}
        if spec.CHANNELS[channel].per_row:
            # the frame rows' times (the search index's frame moments); None: the worker sent none
            times = report.timestamps
            if times is not None and len(times) != rows - 1:
                return PENDING, {"error": bad_output("the report's timestamps do not match the frame rows")}
            extra["timestamps"] = times
            if spec.CHANNELS[channel].thumbnails:  # scenes: each row's span, kept for the search index
                spans = report.scenes
                if spans is not None and len(spans) != rows - 1:
                    return PENDING, {"error": bad_output("the report's scenes do not match the scene rows")}
                extra["spans"] = [[s.start, s.end] for s in spans] if spans is not None else None
        return SUCCEEDED, {
            **extra,
            "artifact_key": key,
            "dims": dims,
            "model": report.model,
            "model_name": report.model_name[:100],
            "random": report.random,
            "sha256": report.sha256,
            "bytes": len(data),
            "gpu_seconds": round(min(report.seconds, float(self.settings.job_ttl_s)), 4),
            "error": None,
        }


class _Retry(Exception):
    pass


def _check_artifact(channel: str, data: bytes) -> tuple[int | None, int]:
    """(dims, rows) of a vector artifact after the one vector check (rows: 1 for one vector); a
    transcript must be a transcript JSON (None, 0)."""
    ch = spec.CHANNELS[channel]
    if ch.artifact == "json":
        doc = json_object(data, channel)
        if not isinstance(doc.get("text"), str) or not isinstance(doc.get("segments"), list):
            raise InvalidInput("the transcript has no text or segments", field=channel)
        return None, 0
    arr = check_vector(load_npy(data, channel), ch.dims, channel, rows=ch.per_row)
    return int(arr.shape[-1]), int(arr.shape[0]) if arr.ndim == 2 else 1
