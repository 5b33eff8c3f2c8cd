"""Step 3, dispatch: claim the item's one dispatch in the ledger, then POST one RunPod job for all its
GPU channels, with presigned URLs and a signed webhook. A dispatch that fails as a whole goes back
to RETRY after a backoff, or is QUARANTINED, by the one retry policy (shared.pipeline.policy).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from shared import spec
from shared.errors import InvalidInput
from shared.pipeline import tokens
from shared.pipeline.core import Core, Outcome, artifact_key, error_fields, thumbnail_keys
from shared.pipeline.plan import PENDING, QUARANTINED
from shared.pipeline.policy import quarantine_reason
from shared.pipeline.runpod_client import AmbiguousSubmit, RunPodError

log = logging.getLogger(__name__)


class Dispatch(Core):
    """Claim, then POST /run."""

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
        for ch in channels:  # scenes: one PUT per possible scene, the worker fills the first n
            if spec.CHANNELS[ch].thumbnails:
                job_input["thumbnails"] = [
                    self.storage.presign_put(key, ttl)
                    for key in thumbnail_keys(ch, owner_id, item_id, spec.CHANNELS[ch].thumbnails)
                ]
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
                owner_id,
                item_id,
                dispatch_id,
                self.policy.claim_deadline(now),
                dispatch_error=error_fields(e),
            )
            return Outcome("claimed", e.message, {"dispatch_id": dispatch_id})
        except RunPodError as e:
            log.warning("dispatch %s of %s/%s failed: %s", dispatch_id, owner_id, item_id, e.message)
            self.retry_or_quarantine(owner_id, item_id, dispatch_id, channels, error_fields(e))
            return Outcome("retry", e.message, {"dispatch_id": dispatch_id})
        self.ledger.mark_submitted(owner_id, item_id, dispatch_id, job_id, now + self.settings.poll_after_s)
        self.metric("JobsSubmitted", 1)
        log.info("dispatched %s/%s job %s channels %s", owner_id, item_id, job_id, ",".join(channels))
        return Outcome(
            "dispatched",
            "job submitted",
            {"dispatch_id": dispatch_id, "job_id": job_id, "channels": channels},
        )

    def retry_or_quarantine(
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
                self.mark_manifest(owner_id)
                self.finalized(owner_id, item_id, item, QUARANTINED)
            return "quarantined"
        self.ledger.release(
            owner_id, item_id, dispatch_id, retry_at=self.clock() + self.backoff(attempts), error=error
        )
        return "retry"
