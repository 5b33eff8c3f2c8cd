"""Step 2, plan and advance: bring one item up to date with the delta rule (shared.pipeline.plan).

Final results of an older spec version whose recipe did not change are carried (copied, no model
runs); Lambda channels whose inputs are ready run in-process (shared.pipeline.lambda_channels); GPU
channels go to one dispatch (shared.pipeline.dispatch); an item with nothing left to run is completed
(shared.pipeline.completion).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from shared import spec
from shared.errors import EmbeddingError, InvalidInput
from shared.pipeline import lambda_channels, plan
from shared.pipeline.core import Core, Outcome, artifact_key, error_fields, thumbnail_keys
from shared.pipeline.ledger import (
    PERSON,
    REMOVED,
    RETRY,
)
from shared.pipeline.plan import FAILED, SUCCEEDED
from shared.vectors import check_vector, npy_bytes

log = logging.getLogger(__name__)


class Advance(Core):
    """The delta rule applied to one item."""

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
        inputs = plan.inputs(item)
        decisions = plan.needed(inputs, rows, self.settings.channels, force=force, retry_failed=retry_failed)
        hashes = plan.input_hashes(inputs, [d.channel for d in decisions])
        cache = {} if cache is None else cache
        decisions = self._carry(owner_id, item_id, rows, decisions)
        if any(d.reason == "carried" for d in decisions):
            self.mark_manifest(owner_id)  # the new version's manifest gains these rows
        run_id = force if isinstance(force, str) else None
        gpu = [d.channel for d in decisions if d.run and spec.CHANNELS[d.channel].runs_on == spec.RUNPOD]
        if dispatch and gpu:
            # a Lambda channel whose dependency is about to run again waits for its new result (the
            # dispatch's apply runs it then, forced by the same run where this one is)
            decisions = [
                d
                for d in decisions
                if not (
                    spec.CHANNELS[d.channel].runs_on == spec.LAMBDA and plan.upstream(d.channel) & set(gpu)
                )
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
            self.complete(owner_id, item_id, known=(item, rows))
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
                if not self._carry_thumbnails(owner_id, item_id, d.channel, row) or not self.storage.copy(
                    str(row.get("artifact_key") or ""), new_key
                ):
                    out.append(plan.Decision(d.channel, True, "artifact_missing"))
                    continue
            if self.ledger.carry_channel(owner_id, item_id, d.channel, row, spec.SPEC_VERSION, new_key):
                row.update(spec_version=spec.SPEC_VERSION, **({"artifact_key": new_key} if new_key else {}))
            out.append(plan.Decision(d.channel, False, "carried"))
        return out

    def _carry_thumbnails(self, owner_id: str, item_id: str, channel: str, row: Mapping[str, Any]) -> bool:
        """A carried channel's thumbnails (scenes: one per scene row, counted by its timestamps) are
        copied beside the new version too, before its artifact; False when one is gone."""
        if not spec.CHANNELS[channel].thumbnails or not row.get("spec_version"):
            return True
        count = len(row.get("timestamps") or ())
        old = thumbnail_keys(channel, owner_id, item_id, count, str(row["spec_version"]))
        new = thumbnail_keys(channel, owner_id, item_id, count)
        return all(self.storage.copy(a, b) for a, b in zip(old, new, strict=True))

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
            status, fields = self._lambda_channel(owner_id, item_id, item, d.channel, cache, rows)
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

    def _lambda_channel(
        self,
        owner_id: str,
        item_id: str,
        item: Mapping[str, Any],
        channel: str,
        cache: dict[str, bytes],
        rows: Mapping[str, Mapping[str, Any]],
    ) -> tuple[str, dict[str, Any]]:
        """Compute one Lambda channel, check its vector (a per-row channel: its matrix), PUT it;
        (status, ledger fields)."""
        started = time.perf_counter()
        ch = spec.CHANNELS[channel]
        try:
            if self.text_model is None:
                raise InvalidInput("this function has no text model loaded")
            read = lambda_channels.Reader(self.storage, self.settings, owner_id, item_id, item, cache, rows)
            vec = lambda_channels.runner(channel).compute(self.text_model, read)
            vec = check_vector(np.asarray(vec, dtype=np.float32), ch.dims, channel, rows=ch.per_row)
            data = npy_bytes(vec)
            key = artifact_key(channel, owner_id, item_id)
            self.storage.put(key, data, "application/octet-stream")
            cache[key] = data
        except EmbeddingError as e:
            if e.retryable:
                raise
            log.info("lambda channel %s of %s/%s failed: %s", channel, owner_id, item_id, e.public_message)
            return FAILED, {"error": error_fields(e)}
        model = ch.model
        return SUCCEEDED, {
            "artifact_key": key,
            "dims": int(vec.shape[-1]),
            "model": getattr(self.text_model, "name", model) if model else "derived",
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "seconds": round(time.perf_counter() - started, 4),
            "error": None,
        }
