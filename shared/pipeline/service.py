"""The pipeline: what on_upload, on_job_done and the sweeper do, over injected adapters.

Follow one upload: `on_s3_record` (validate the key, HEAD the object, record it in the ledger) ->
`advance` (the delta rule; Lambda channels run in-process, GPU channels go to `dispatch`) ->
`dispatch` (claim in the ledger, then POST /run with presigned URLs and a signed webhook) ->
`apply_result` (on_job_done's webhook, or the sweeper's /status poll: check each artifact, record
it, run the dependent Lambda channels) -> `_complete` (item status, the owner's manifest).
`sweep` finds what is due: dispatches past their deadline (a lost webhook, a crash between claim and
POST) and retries whose backoff has passed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared import spec
from shared.aws.ledger import (
    CLAIMED,
    COMPLETE,
    ITEM_SK,
    MANIFEST_SK,
    PARTIAL,
    PERSON,
    PERSON_PHOTO,
    PROCESSING,
    REMOVED,
    RETRY,
    SUBMITTED,
    Ledger,
    Runs,
)
from shared.aws.storage import Storage
from shared.errors import ConfigError, EmbeddingError, InvalidInput, PayloadTooLarge
from shared.pipeline import keys, manifests, plan, tokens
from shared.pipeline.persons import Persons
from shared.pipeline.plan import DISPATCHED, FAILED, PENDING, QUARANTINED, SUCCEEDED, ItemInputs
from shared.pipeline.policy import RetryPolicy, quarantine_reason
from shared.pipeline.results import MAX_ARTIFACT_BYTES, ChannelReport, parse_result
from shared.pipeline.runpod_client import AmbiguousSubmit, RunPodClient, RunPodError
from shared.pipeline.settings import PipelineSettings
from shared.text import channels as text_channels
from shared.timestamps import now_iso
from shared.vectors import BadVector, check_vector, load_npy, npy_bytes

log = logging.getLogger(__name__)

PARQUET = "application/vnd.apache.parquet"


@dataclass
class Outcome:
    """What one call did, for logs, the CLI and tests (`rows`: the item's rows as the call left them)."""

    action: str
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    rows: tuple[Any, Any] | None = field(default=None, repr=False)


def artifact_key(channel: str, owner_id: str, item_id: str, spec_version: str | None = None) -> str:
    """Where a channel's artifact of one spec version lives (default: the deployed spec's version)."""
    spec_version = spec_version or spec.SPEC_VERSION
    if spec.CHANNELS[channel].artifact == "json":
        return keys.transcript_key(spec_version, owner_id, item_id)
    return keys.embedding_key(spec_version, channel, owner_id, item_id)


class Pipeline:
    def __init__(
        self,
        settings: PipelineSettings,
        ledger: Ledger,
        storage: Storage,
        *,
        text_model: Any = None,
        runpod: RunPodClient | None = None,
        webhook_key: bytes = b"",
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        metric: Callable[[str, float], None] = lambda name, value: None,
    ) -> None:
        want = {spec.CHANNELS[c].preprocessing.get("precision") for c in settings.channels} - {None}
        have = getattr(text_model, "precision", None)
        if have is not None and want and have not in want:
            raise ConfigError(
                f"the text model answers in {have}, the spec's text channels want {', '.join(sorted(want))}"
                "; example: TEXT_PRECISION=fp32"
            )
        self.settings = settings
        self.ledger = ledger
        self.storage = storage
        self.text_model = text_model
        self.runpod = runpod
        self.webhook_key = webhook_key
        self.clock = clock
        self.rng = rng or random.Random()
        self.policy = RetryPolicy.from_settings(settings)
        self.metric = metric
        self._manifest_due: dict[str, float] = {}  # owner -> its pending rebuild's due time (_mark_manifest)
        self.persons = Persons(self)
        self.runs = Runs(ledger)

    artifact_key = staticmethod(artifact_key)

    # ------------------------------------------------------------------ 1. S3 events

    def on_s3_record(self, record: Mapping[str, Any]) -> Outcome:
        """One S3 event record (ObjectCreated:* or ObjectRemoved:*). InvalidKey for a key that is not
        ours (never retryable); StoreError (retryable) when AWS fails."""
        name = str(record.get("eventName", ""))
        obj = (record.get("s3") or {}).get("object") or {}
        key = keys.decode_event_key(obj.get("key"))
        ref = keys.parse_key(key)
        seq = keys.sequencer(obj.get("sequencer"))
        if name.startswith("ObjectRemoved"):
            return self.on_removed(ref)
        if not name.startswith("ObjectCreated"):
            return Outcome("skipped", f"event {name[:40]!s} is not handled")
        return self.on_created(ref, seq)

    def on_created(self, ref: keys.SourceKey, seq: str | None = None) -> Outcome:
        info = self.storage.head(ref.key)
        if info is None:
            return Outcome("skipped", "the object no longer exists")
        if ref.kind == "person":
            return self.persons.on_photo(ref, info, seq)
        if ref.role == "meta":
            row = self.ledger.record_meta(
                ref.owner_id,
                ref.item_id,
                key=ref.key,
                etag=info.etag,
                mtime=info.mtime,
                meta_hash=plan.source_hash(ref.key, info.etag, info.size),
            )
            if row is None:
                return Outcome("skipped", "a newer meta.json is already recorded")
            return self.advance(ref.owner_id, ref.item_id)
        media_hash = plan.source_hash(ref.key, info.etag, info.size)
        row = self.ledger.record_media(
            ref.owner_id,
            ref.item_id,
            kind=ref.kind,
            modality=ref.modality or "",
            key=ref.key,
            etag=info.etag,
            size=info.size,
            mtime=info.mtime,
            media_hash=media_hash,
            seq=seq,
        )
        # None: a duplicate or an older event. The item is advanced all the same (a crash after an
        # earlier delivery recorded it must not leave it stranded); the delta rule makes that a no-op.
        if row is not None and row.get("dispatch_state") == RETRY:
            self.ledger.clear_retry(ref.owner_id, ref.item_id)  # a new source need not wait out a backoff
        if info.size > self.settings.max_source_bytes:
            return self._refuse_media(
                ref, media_hash, f"the source is larger than {self.settings.max_source_bytes} bytes"
            )
        return self.advance(ref.owner_id, ref.item_id)

    def on_removed(self, ref: keys.SourceKey) -> Outcome:
        if self.storage.head(ref.key) is not None:
            return Outcome("skipped", "the object exists again (an older removal event)")
        item_id = keys.photo_item_id(ref.item_id, ref.file) if ref.kind == "person" else ref.item_id
        if self.ledger.mark_removed(ref.owner_id, item_id, ref.key):
            run_id = (self.ledger.item(ref.owner_id, item_id) or {}).get("run_id")
            if run_id:  # a reprocess run waits for it: it is skipped there, not waited for forever
                self.runs.count_item(run_id, ref.owner_id, item_id, "skipped")
            if ref.kind == "person":
                self.persons.mark(ref.owner_id, keys.person_item_id(ref.item_id))
                return Outcome("removed", "the photo is marked REMOVED; the person's vector is rebuilt")
            self._mark_manifest(ref.owner_id)  # the rebuilt manifest leaves it out
            return Outcome("removed", "the item is marked REMOVED; its artifacts stay")
        return Outcome("skipped", "the removed object is not an item's current source")

    def _refuse_media(self, ref: keys.SourceKey, media_hash: str, reason: str) -> Outcome:
        item = self.ledger.item(ref.owner_id, ref.item_id)
        inputs = self._inputs(item)
        chans = [c for c in plan.applicable(inputs, self.settings.channels) if plan.input_kind(c) == "media"]
        hashes = plan.input_hashes(inputs, chans)
        err = PayloadTooLarge(reason)
        for ch in chans:
            self.ledger.put_lambda_channel(
                ref.owner_id, ref.item_id, ch, FAILED, hashes[ch], {"error": _err(err)}
            )
        self.advance(ref.owner_id, ref.item_id)
        return Outcome("refused", reason)

    # ------------------------------------------------------------------ 2. planning

    @staticmethod
    def _inputs(item: Mapping[str, Any] | None) -> ItemInputs:
        item = item or {}
        return ItemInputs(item.get("modality") or None, item.get("media_hash"), item.get("meta_hash"))

    def advance(
        self,
        owner_id: str,
        item_id: str,
        *,
        force: bool | str = False,
        retry_failed: bool = False,
        dispatch: bool = True,
        complete: bool = True,
        cache: dict[str, bytes] | None = None,
        known: tuple[Any, Any] | None = None,
    ) -> Outcome:
        """Bring one item up to date: run what the delta rule says, as far as it can run now. `cache`
        holds artifacts this call already read (key -> bytes). `force` / `retry_failed`: see
        `plan.decide` (a reprocess run passes its run id as `force`). `known`: rows just read."""
        item, rows = known if known is not None else self.ledger.rows(owner_id, item_id)
        if item is None:
            return Outcome("skipped", "no such item")
        if item.get("status") == REMOVED:
            return Outcome("skipped", "the item was removed")
        if item.get("kind") == PERSON:
            return Outcome("skipped", "a person's query vector is rebuilt by the sweeper")
        if item.get("dispatch_state") == RETRY and float(item.get("due_at", 0)) > self.clock() and not force:
            dispatch = False  # a retry is waiting out its backoff: a duplicate event must not cut it short
        inputs = self._inputs(item)
        decisions = plan.needed(inputs, rows, self.settings.channels, force=force, retry_failed=retry_failed)
        hashes = plan.input_hashes(inputs, [d.channel for d in decisions])
        cache = {} if cache is None else cache
        decisions = self._carry(owner_id, item_id, rows, decisions)
        if any(d.reason == "carried" for d in decisions):
            self._mark_manifest(owner_id)  # the new version's manifest gains these rows
        run_id = force if isinstance(force, str) else None
        gpu = [d.channel for d in decisions if d.run and spec.CHANNELS[d.channel].runs_on == spec.RUNPOD]
        if dispatch and gpu:
            # a Lambda channel whose dependency is about to run again waits for its new result (the
            # dispatch's apply runs it then, forced by the same run where this one is)
            decisions = [
                d
                for d in decisions
                if not (spec.CHANNELS[d.channel].runs_on == spec.LAMBDA and _upstream(d.channel) & set(gpu))
            ]
        ran = self._run_lambda_channels(owner_id, item_id, item, rows, decisions, hashes, cache, run_id)
        outcome = Outcome("noop", "nothing to do", {"lambda": ran})
        if gpu and dispatch:
            outcome = self.dispatch(owner_id, item_id, item, gpu, hashes, run_id=run_id)
            outcome.detail["lambda"] = ran
        elif ran:
            outcome = Outcome("lambda", "ran Lambda channels", {"lambda": ran})
        outcome.rows = (item, rows)
        if complete and outcome.action in ("noop", "lambda"):  # a dispatch just made cannot be complete
            self._complete(owner_id, item_id, known=(item, rows))
        return outcome

    def _carry(
        self,
        owner_id: str,
        item_id: str,
        rows: dict[str, dict[str, Any]],
        decisions: list[plan.Decision],
    ) -> list[plan.Decision]:
        """Final results of an older spec version whose channel recipe did not change are carried into
        the deployed version: the artifact is copied beside it (S3 CopyObject, no model runs) and the row
        says the new version. A carried artifact that is gone runs again instead."""
        out = []
        for d in decisions:
            if d.reason != "carry":
                out.append(d)
                continue
            row = rows[d.channel]
            new_key = None
            if row.get("status") == SUCCEEDED:
                new_key = artifact_key(d.channel, owner_id, item_id)
                if not self.storage.copy(str(row.get("artifact_key") or ""), new_key):
                    out.append(plan.Decision(d.channel, True, "artifact_missing"))
                    continue
            if self.ledger.carry_channel(owner_id, item_id, d.channel, row, spec.SPEC_VERSION, new_key):
                row.update(spec_version=spec.SPEC_VERSION, **({"artifact_key": new_key} if new_key else {}))
            out.append(plan.Decision(d.channel, False, "carried"))
        return out

    def _run_lambda_channels(
        self,
        owner_id: str,
        item_id: str,
        item: Mapping[str, Any],
        rows: dict[str, dict[str, Any]],
        decisions: list[plan.Decision],
        hashes: Mapping[str, str],
        cache: dict[str, bytes],
        run_id: str | None = None,
    ) -> list[str]:
        """Run each Lambda channel whose inputs are ready, in dependency order; a channel whose
        dependency failed for good is FAILED too (so the item can complete)."""
        ran: list[str] = []
        for d in decisions:
            ch = spec.CHANNELS[d.channel]
            if ch.runs_on != spec.LAMBDA:
                continue
            if not d.run:
                continue
            deps = [rows.get(dep) for dep in ch.depends_on]
            if any(
                not plan.current(dep_row, dep, hashes.get(dep))
                for dep_row, dep in zip(deps, ch.depends_on, strict=True)
            ):
                continue  # a dependency has no final result for the current inputs yet
            if any(dep_row["status"] != SUCCEEDED for dep_row in deps if dep_row):
                row = rows.get(d.channel) or {}
                if (
                    row.get("input_hash") == hashes[d.channel]
                    and (row.get("error") or {}).get("code") == plan.DEPENDENCY_FAILED
                ):
                    continue  # already recorded as failed for these inputs
                fields = {
                    "error": {
                        "code": plan.DEPENDENCY_FAILED,
                        "message": "a channel it depends on failed",
                        "retryable": False,
                    }
                }
                if self.ledger.put_lambda_channel(
                    owner_id, item_id, d.channel, FAILED, hashes[d.channel], fields, run_id=run_id
                ):
                    rows[d.channel] = {
                        "status": FAILED,
                        "input_hash": hashes[d.channel],
                        "fingerprint": ch.fingerprint,
                        "spec_version": spec.SPEC_VERSION,
                        "channel": d.channel,
                        **fields,
                    }
                continue
            status, fields = self._lambda_channel(owner_id, item_id, item, d.channel, cache)
            if self.ledger.put_lambda_channel(
                owner_id, item_id, d.channel, status, hashes[d.channel], fields, run_id=run_id
            ):
                ran.append(d.channel)
            rows[d.channel] = {
                "status": status,
                "input_hash": hashes[d.channel],
                "fingerprint": ch.fingerprint,
                "spec_version": spec.SPEC_VERSION,
                "channel": d.channel,
                **fields,
            }
        return ran

    def _read(self, key: str, max_bytes: int, cache: dict[str, bytes]) -> bytes | None:
        if key not in cache:
            data = self.storage.get(key, max_bytes)
            if data is None:
                return None
            cache[key] = data
        return cache[key]

    def _lambda_channel(
        self, owner_id: str, item_id: str, item: Mapping[str, Any], channel: str, cache: dict[str, bytes]
    ) -> tuple[str, dict[str, Any]]:
        """Compute one Lambda channel, check its vector, PUT it; (status, ledger fields)."""
        started = time.perf_counter()
        try:
            if self.text_model is None:
                raise InvalidInput("this function has no text model loaded")
            if channel == "text_meta":
                raw = self.storage.get(
                    item.get("meta_key") or keys.meta_key(owner_id, item_id), self.settings.max_meta_bytes
                )
                if raw is None:
                    raise InvalidInput("meta.json is gone", field="meta.json")
                vec = text_channels.embed_text_meta(self.text_model, _json_object(raw, "meta.json"))
            elif channel == "text_transcript":
                raw = self._read(
                    artifact_key("transcript", owner_id, item_id), self.settings.max_transcript_bytes, cache
                )
                if raw is None:
                    raise InvalidInput("the transcript artifact is gone", field="transcript")
                vec = text_channels.embed_text_transcript(self.text_model, _json_object(raw, "transcript"))
            elif channel == "text_fused":
                parts = []
                for dep in spec.CHANNELS[channel].depends_on:
                    raw = self._read(artifact_key(dep, owner_id, item_id), MAX_ARTIFACT_BYTES, cache)
                    if raw is None:
                        raise InvalidInput(f"the {dep} artifact is gone", field=dep)
                    parts.append(check_vector(load_npy(raw, dep), spec.CHANNELS[dep].dims, dep))
                vec = text_channels.fuse(*parts)
            else:
                raise InvalidInput(f"{channel} does not run in this function")
            vec = check_vector(np.asarray(vec, dtype=np.float32), spec.CHANNELS[channel].dims, channel)
            data = npy_bytes(vec)
            key = artifact_key(channel, owner_id, item_id)
            self.storage.put(key, data, "application/octet-stream")
            cache[key] = data
        except EmbeddingError as e:
            if e.retryable:
                raise
            log.info("lambda channel %s of %s/%s failed: %s", channel, owner_id, item_id, e.public_message)
            return FAILED, {"error": _err(e)}
        model = spec.CHANNELS[channel].model
        return SUCCEEDED, {
            "artifact_key": key,
            "dims": int(vec.shape[-1]),
            "model": getattr(self.text_model, "name", model) if model else "derived",
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "seconds": round(time.perf_counter() - started, 4),
            "error": None,
        }

    # ------------------------------------------------------------------ 3. dispatch

    def backoff(self, attempt: int) -> float:
        return self.policy.backoff(attempt, self.rng)

    def dispatch(
        self,
        owner_id: str,
        item_id: str,
        item: Mapping[str, Any],
        channels: list[str],
        hashes: Mapping[str, str],
        *,
        run_id: str | None = None,
    ) -> Outcome:
        """Claim the item's dispatch in the ledger, then POST one job for all its GPU channels."""
        if self.runpod is None or not self.settings.callback_url:
            raise InvalidInput("this function cannot dispatch (no RunPod endpoint or callback URL)")
        now = self.clock()
        ttl = self.settings.job_ttl_s
        # Until the POST is recorded, the claim is only re-dispatched once any job it may have made is
        # dead (its TTL), so a crash between the claim and the POST never leads to two jobs.
        dispatch_id = self.ledger.claim(
            owner_id,
            item_id,
            channels=channels,
            input_hashes=hashes,
            dispatch_hash=item["media_hash"],
            deadline=self.policy.claim_deadline(now),
            run_id=run_id,
        )
        if dispatch_id is None:
            return Outcome("held", "another dispatch holds this item")
        self.metric("DispatchesClaimed", 1)
        job_input = {
            "task": "embed_item",
            "item": {"owner_id": owner_id, "item_id": item_id, "modality": item["modality"]},
            "source_url": self.storage.presign_get(item["media_key"], ttl),
            "channels": channels,
            "outputs": {
                ch: self.storage.presign_put(artifact_key(ch, owner_id, item_id), ttl) for ch in channels
            },
            "fingerprints": {ch: spec.CHANNELS[ch].fingerprint for ch in channels},
        }
        token = tokens.sign(self.webhook_key, owner_id, item_id, dispatch_id, int(now + ttl + 3600))
        policy = {"executionTimeout": self.settings.execution_timeout_s * 1000, "ttl": ttl * 1000}
        try:
            job_id = self.runpod.run(
                job_input, webhook=f"{self.settings.callback_url}/?token={token}", policy=policy
            )
        except AmbiguousSubmit as e:
            log.warning(
                "dispatch %s of %s/%s: %s; left for the sweeper", dispatch_id, owner_id, item_id, e.message
            )
            # the claim stays until its deadline; the error it met is its reason if no job reports back
            self.ledger.push_due(
                owner_id, item_id, dispatch_id, self.policy.claim_deadline(now), dispatch_error=_err(e)
            )
            return Outcome("claimed", e.message, {"dispatch_id": dispatch_id})
        except RunPodError as e:
            log.warning("dispatch %s of %s/%s failed: %s", dispatch_id, owner_id, item_id, e.message)
            self._retry_or_quarantine(owner_id, item_id, dispatch_id, channels, _err(e))
            return Outcome("retry", e.message, {"dispatch_id": dispatch_id})
        self.ledger.mark_submitted(owner_id, item_id, dispatch_id, job_id, now + self.settings.poll_after_s)
        self.metric("JobsSubmitted", 1)
        log.info("dispatched %s/%s job %s channels %s", owner_id, item_id, job_id, ",".join(channels))
        return Outcome(
            "dispatched",
            "job submitted",
            {"dispatch_id": dispatch_id, "job_id": job_id, "channels": channels},
        )

    def _retry_or_quarantine(
        self, owner_id: str, item_id: str, dispatch_id: str, channels: list[str], error: Mapping[str, Any]
    ) -> str:
        """The dispatch failed as a whole: its channels go back to PENDING and the item gets a RETRY
        after backoff, or is QUARANTINED once MAX_ATTEMPTS dispatches have failed."""
        item = self.ledger.item(owner_id, item_id) or {}
        self.ledger.finish_channels(
            owner_id, item_id, dispatch_id, {ch: (PENDING, {"error": dict(error)}) for ch in channels}
        )
        attempts = int(item.get("attempts", 0))
        if self.policy.exhausted(attempts):
            reason = quarantine_reason(attempts, error)
            if item.get("dispatch_id") == dispatch_id:
                self.ledger.quarantine(owner_id, item_id, reason, channels)
                self.metric("ItemsQuarantined", 1)
                log.warning("quarantined %s/%s: %s", owner_id, item_id, reason)
                self._mark_manifest(owner_id)
                self._finalized(owner_id, item_id, item, QUARANTINED)
            return "quarantined"
        self.ledger.release(
            owner_id, item_id, dispatch_id, retry_at=self.clock() + self.backoff(attempts), error=error
        )
        return "retry"

    # ------------------------------------------------------------------ 4. results

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
        result = parse_result(payload, max_seconds=float(self.settings.job_ttl_s))
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
                self._mark_manifest(owner_id)
                self._finalized(owner_id, item_id, item, QUARANTINED)
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
            self._complete(
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
            dims = _check_artifact(channel, data)
        except _Retry as e:
            return PENDING, {"error": {"code": "artifact_mismatch", "message": str(e), "retryable": True}}
        except (BadVector, InvalidInput) as e:
            self.storage.delete(key)  # never leave an artifact that failed its check
            return FAILED, {"error": _err(e)}
        return SUCCEEDED, {
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

    # ------------------------------------------------------------------ 5. completion, manifests

    def _complete(
        self,
        owner_id: str,
        item_id: str,
        *,
        dispatch_id: str | None = None,
        retry_at: float | None = None,
        gpu_seconds: float = 0.0,
        known: tuple[Any, Any] | None = None,
        again: int = 0,
    ) -> str | None:
        """When every applicable channel is final for the current inputs and nothing is open, the item is
        COMPLETE (all succeeded), PARTIAL (some failed) or QUARANTINED, and its owner's manifest is marked
        for a rebuild. With `dispatch_id`, that dispatch is closed in the same write. `known`: the item's
        rows as the caller just left them (saves reading them again)."""
        item, rows = known if known is not None else self.ledger.rows(owner_id, item_id)
        if (
            again
            and item is not None
            and retry_at is None
            and item.get("status") != REMOVED
            and self._final_status(item, rows) is None
        ):
            retry_at = self.clock()  # changed under the result: the sweeper advances it again, now
        status = None
        if item is not None and item.get("status") == REMOVED and item.get("run_id"):
            self.runs.count_item(item["run_id"], owner_id, item_id, "skipped")
        if item is not None and item.get("status") != REMOVED and retry_at is None:
            open_dispatch = item.get("dispatch_id") and item.get("dispatch_id") != dispatch_id
            if not open_dispatch and (dispatch_id or item.get("dispatch_state") != RETRY):
                status = self._final_status(item, rows)
        fields: dict[str, Any] = {}
        if status is not None:
            fields = {
                "completed_at": now_iso(self.clock()),
                "manifest_hash": _hash_rows(rows, self._chans(item)),
            }
        changed = status is not None and (
            item.get("status") != status or item.get("manifest_hash") != fields["manifest_hash"]
        )
        if dispatch_id is not None:
            released = self.ledger.release(
                owner_id,
                item_id,
                dispatch_id,
                retry_at=retry_at,
                gpu_seconds=gpu_seconds,
                status=status if changed else None,
                fields=fields if changed else None,
                sources={"media_hash": item.get("media_hash"), "meta_hash": item.get("meta_hash")},
            )
            if not released:
                fresh = self.ledger.rows(owner_id, item_id)
                if fresh[0] is not None and fresh[0].get("dispatch_id") == dispatch_id and again < 3:
                    # Still this dispatch: the item changed after it was read (removed, a new source or
                    # meta.json): decide again from what the ledger holds now, and close it.
                    return self._complete(
                        owner_id,
                        item_id,
                        dispatch_id=dispatch_id,
                        retry_at=retry_at,
                        gpu_seconds=gpu_seconds,
                        known=fresh,
                        again=again + 1,
                    )
                # A concurrent apply of the same result (the webhook and the sweeper's poll) closed the
                # dispatch first, perhaps from rows read before this one's text channels were written:
                # decide the item's status again from what the ledger holds now.
                return self._complete(owner_id, item_id, known=fresh) if retry_at is None else None
        elif changed:
            self.ledger.set_item_status(owner_id, item_id, status, **fields)
        if changed:
            self._mark_manifest(owner_id)
            self.metric("ItemsCompleted", 1)
            self._finalized(owner_id, item_id, item, status)
        return status

    def _finalized(self, owner_id: str, item_id: str, item: Mapping[str, Any], status: str | None) -> None:
        """An item reached a final status: its reprocess run counts it; a photo's person is rebuilt."""
        if item.get("kind") == PERSON_PHOTO and item.get("person_id"):
            self.persons.mark(owner_id, keys.person_item_id(item["person_id"]))
        run_id = item.get("run_id")
        if run_id:
            self.runs.count_item(run_id, owner_id, item_id, "failed" if status == QUARANTINED else "done")

    def _chans(self, item: Mapping[str, Any]) -> tuple[str, ...]:
        return plan.applicable(self._inputs(item), self.settings.channels)

    def _final_status(self, item: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]]) -> str | None:
        inputs = self._inputs(item)
        chans = plan.applicable(inputs, self.settings.channels)
        hashes = plan.input_hashes(inputs, chans)
        if not chans or not all(plan.current(rows.get(c), c, hashes.get(c)) for c in chans):
            return None
        statuses = {rows[c]["status"] for c in chans}
        return QUARANTINED if QUARANTINED in statuses else COMPLETE if statuses == {SUCCEEDED} else PARTIAL

    def _mark_manifest(self, owner_id: str) -> None:
        """The owner's manifest is stale: the sweeper rebuilds it once MANIFEST_DELAY_S has passed (one
        rebuild for a burst of completions, one writer: the sweeper runs alone).

        A mark this process made is remembered with the rebuild's due time: until shortly before it, a
        further mark would change nothing the rebuild needs (it starts at that time, after this
        completion's writes, and reads every row of the owner), so it is not written again. The margin
        covers index propagation and clocks between functions."""
        now = self.clock()
        delay = self.settings.manifest_delay_s
        due = self._manifest_due.get(owner_id)
        if due is not None and now < due - max(2.0, 0.2 * delay):
            return
        if len(self._manifest_due) >= 10_000:
            self._manifest_due.clear()
        self._manifest_due[owner_id] = self.ledger.mark_manifest(owner_id, now + delay)

    def write_manifest(self, owner_id: str, state: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Rebuild the owner's manifest of the deployed spec version from the ledger (owner-index) and PUT
        it: one PutObject, so a reader sees the old file or the new one, never half of one.

        Versions side by side: readers use the owner's *current* version (the ledger's owner row, and
        `manifests/current/{owner}.json` in S3). It moves to the deployed version only once every item of
        the owner is settled under it (each channel final for its current inputs and recipe, with its
        artifact under that version), so nobody reads a half-migrated mix. An owner with no version yet
        gets the deployed one at once. Returns the owner's version state (recorded on its row)."""
        rows = list(self.ledger.owner_rows(owner_id))
        version = spec.SPEC_VERSION
        key = keys.manifest_key(version, owner_id)
        self.storage.put(key, manifests.to_parquet(manifests.manifest_rows(rows, version)), PARQUET)
        progress = self.version_progress(rows)
        current = (state or {}).get("current_version")
        if current != version and (current is None or progress["settled"] == progress["items"]):
            pointer = {
                "owner_id": owner_id,
                "spec_version": version,
                "manifest_key": key,
                "previous_version": current,
                "switched_at": now_iso(self.clock()),
            }
            self.storage.put(keys.current_key(owner_id), json.dumps(pointer).encode(), "application/json")
            if self.ledger.switch_version(owner_id, version, current):
                log.info("owner %s now reads spec version %s (was %s)", owner_id, version, current)
                self.metric("VersionSwitches", 1)
            current = version
        return {
            "current_version": current,
            "next_version": version if current != version else None,
            "items": progress["items"],
            "settled": progress["settled"],
        }

    def version_progress(self, rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
        """How many of an owner's items (removed ones aside) are settled under the deployed version."""
        items: dict[str, Mapping[str, Any]] = {}
        chans: dict[str, dict[str, Mapping[str, Any]]] = {}
        for r in rows:
            if r.get("sk") == ITEM_SK:
                items[r["item_id"]] = r
            elif r.get("channel"):
                chans.setdefault(r["item_id"], {})[r["channel"]] = r
        live = [i for i in items.values() if i.get("status") != REMOVED]
        settled = sum(1 for i in live if self.settled(i, chans.get(i["item_id"], {})))
        return {"items": len(live), "settled": settled}

    def settled(self, item: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]]) -> bool:
        """Every channel of the item is final for its current inputs and recipe, under the deployed spec
        version, and nothing is open (no dispatch, retry or pending rebuild)."""
        if item.get("dispatch_state") or item.get("sweep"):
            return False
        if item.get("kind") == PERSON:
            chans: tuple[str, ...] = ("person_query",) if "person_query" in self.settings.channels else ()
            hashes = {"person_query": str(item.get("photos_hash", ""))}
        else:
            chans = self._chans(item)
            hashes = plan.input_hashes(self._inputs(item), chans)
        return all(
            plan.current(rows.get(c), c, hashes.get(c)) and rows[c].get("spec_version") == spec.SPEC_VERSION
            for c in chans
        )

    # ------------------------------------------------------------------ 6. sweeper

    def sweep(self, *, limit: int | None = None, workers: int = 4) -> dict[str, int]:
        """Handle every due item row (sweep-index, oldest first); one item's failure never stops it."""
        due = self.ledger.due(self.clock(), limit or self.settings.sweep_batch)
        counts: dict[str, int] = {}
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for action in pool.map(self._sweep_one, due):
                counts[action] = counts.get(action, 0) + 1
        return counts

    def _sweep_one(self, row: Mapping[str, Any]) -> str:
        if row.get("sk") == MANIFEST_SK:
            return self._sweep_manifest(row)
        owner_id, item_id = row["owner_id"], row["item_id"]
        try:
            if row.get("kind") == PERSON:
                return self.persons.rebuild(row)
            return self._sweep_row(owner_id, item_id, row)
        except EmbeddingError as e:
            log.warning("sweep %s/%s: %s", owner_id, item_id, e.public_message)
            return "error"
        except Exception:  # one item's fault must not stop the sweep; the next run tries again
            log.exception("sweep %s/%s: internal fault", owner_id, item_id)
            return "error"

    def _sweep_manifest(self, row: Mapping[str, Any]) -> str:
        owner_id = row["manifest_owner"]
        try:
            state = self.write_manifest(owner_id, row)
        except EmbeddingError as e:
            log.warning("manifest of %s: %s", owner_id, e.public_message)
            return "manifest_error"
        # done unless more items completed meanwhile (then it stays due for the next sweep)
        done = self.ledger.manifest_written(
            owner_id,
            int(row["dirty_gen"]),
            self.clock() + self.settings.manifest_delay_s,
            {"next_version": state["next_version"], "items": state["items"], "settled": state["settled"]},
        )
        return "manifest" if done else "manifest_again"

    def _sweep_row(self, owner_id: str, item_id: str, row: Mapping[str, Any]) -> str:
        state = row.get("dispatch_state")
        dispatch_id = row.get("dispatch_id")
        channels = list(row.get("dispatch_channels") or [])
        now = self.clock()
        if state == RETRY:
            out = self.advance(owner_id, item_id)
            if out.action in ("noop", "lambda"):
                self.ledger.clear_retry(owner_id, item_id)
                self._complete(owner_id, item_id)
            return f"retry:{out.action}"
        if state == CLAIMED:
            # due at the claim's deadline: no job it may have made can still report back
            unconfirmed = row.get("dispatch_error")
            if isinstance(unconfirmed, dict):
                err = {
                    "code": "submit_unconfirmed",
                    "message": f"no job reported back after /run failed: {unconfirmed.get('message')}",
                    "retryable": True,
                }
            else:
                err = {
                    "code": "lost_dispatch",
                    "message": "claimed but never submitted (the dispatcher stopped)",
                    "retryable": True,
                }
            return "claimed:" + self._retry_or_quarantine(owner_id, item_id, dispatch_id, channels, err)
        if state != SUBMITTED or not row.get("job_id"):
            return "skipped"
        if self.runpod is None:
            raise InvalidInput("the sweeper has no RunPod client")
        job_id = row["job_id"]
        try:
            st = self.runpod.status(job_id)
        except RunPodError as e:
            failures = int(row.get("poll_failures") or 0) + 1
            if self.policy.lost(row, failures, now):
                with contextlib.suppress(RunPodError):
                    self.runpod.cancel(job_id)
                err = {
                    "code": "job_lost",
                    "message": f"RunPod's /status failed {failures} times in a row, past the job's deadline; "
                    f"last: {e.message}",
                    "retryable": True,
                }
                return "lost:" + self._retry_or_quarantine(owner_id, item_id, dispatch_id, channels, err)
            log.info("status of %s failed (%d in a row): %s; polled again later", job_id, failures, e.message)
            self.ledger.push_due(
                owner_id, item_id, dispatch_id, now + self.settings.poll_interval_s, poll_failures=failures
            )
            return "poll_error"
        outcome = self.apply_result(owner_id, item_id, dispatch_id, st)
        if outcome.action != "pending" and not outcome.detail.get("mismatch"):
            return "polled:" + outcome.action
        if self.policy.overdue(row, now):
            with contextlib.suppress(RunPodError):
                self.runpod.cancel(job_id)
            err = {"code": "job_expired", "message": "the job outlived its TTL", "retryable": True}
            return "expired:" + self._retry_or_quarantine(owner_id, item_id, dispatch_id, channels, err)
        self.ledger.push_due(
            owner_id, item_id, dispatch_id, now + self.settings.poll_interval_s, poll_failures=None
        )
        return "waiting"

    def free_overdue(self, owner_id: str, item_id: str) -> bool:
        """Replay or a forced reprocess of an item whose open dispatch is past its deadline: the dispatch
        is closed (its job, if RunPod still knows it, cancelled; its channels PENDING), so the caller can
        dispatch the item again. A late answer of the old job is then stale. False: nothing to free."""
        item = self.ledger.item(owner_id, item_id)
        if item is None or not self.policy.overdue(item, self.clock()):
            return False
        if item.get("job_id") and self.runpod is not None:
            with contextlib.suppress(RunPodError):
                self.runpod.cancel(item["job_id"])
        dispatch_id = item["dispatch_id"]
        err = {"code": "job_lost", "message": "freed past its deadline by a replay", "retryable": True}
        channels = list(item.get("dispatch_channels") or [])
        self.ledger.finish_channels(
            owner_id, item_id, dispatch_id, {ch: (PENDING, {"error": err}) for ch in channels}
        )
        return self.ledger.release(owner_id, item_id, dispatch_id, retry_at=None, error=err)


class _Retry(Exception):
    pass


def _check_artifact(channel: str, data: bytes) -> int | None:
    """Dims of a vector artifact after the one vector check; a transcript must be a transcript JSON."""
    ch = spec.CHANNELS[channel]
    if ch.artifact == "json":
        doc = _json_object(data, channel)
        if not isinstance(doc.get("text"), str) or not isinstance(doc.get("segments"), list):
            raise InvalidInput("the transcript has no text or segments", field=channel)
        return None
    arr = load_npy(data, channel)
    rows = channel == "video_clip"  # [1 + frames, dims]: row 0 is the pooled video vector
    return int(check_vector(arr, ch.dims, channel, rows=rows).shape[-1])


def _upstream(channel: str) -> set[str]:
    """Every channel a channel depends on, directly or through others."""
    out: set[str] = set()
    todo = list(spec.CHANNELS[channel].depends_on)
    while todo:
        dep = todo.pop()
        if dep not in out:
            out.add(dep)
            todo.extend(spec.CHANNELS[dep].depends_on)
    return out


def _hash_rows(rows: Mapping[str, Mapping[str, Any]], chans: tuple[str, ...]) -> str:
    return plan.hash_of(*(f"{c}:{rows[c].get('status')}:{rows[c].get('sha256', '')}" for c in chans))


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInput("is not valid JSON", field=what) from None
    if not isinstance(doc, dict):
        raise InvalidInput("must be a JSON object", field=what)
    return doc


def _err(e: EmbeddingError) -> dict[str, Any]:
    return {"code": e.code, "message": e.public_message[:500], "retryable": bool(e.retryable)}


__all__ = ["DISPATCHED", "PROCESSING", "Outcome", "Pipeline", "artifact_key"]
