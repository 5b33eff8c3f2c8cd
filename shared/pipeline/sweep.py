"""Step 6, sweep: what is due on the sweep-index. A retry whose backoff has passed is advanced; a claim
past its deadline is retried with a true reason; a submitted job is polled (its answer applied, or
it is waited for, expired past its TTL, or lost when its /status cannot be read past its deadline);
an owner's pending manifest is rebuilt (with its search tables: shared.pipeline.search_sync); an
owner's search alarm asks for such a rebuild; a person's query vector is rebuilt.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared.errors import EmbeddingError, InvalidInput
from shared.pipeline.core import Core
from shared.pipeline.ledger import (
    CLAIMED,
    MANIFEST_SK,
    PERSON,
    RETRY,
    SEARCH_SK,
    SUBMITTED,
)
from shared.pipeline.plan import PENDING
from shared.pipeline.runpod_client import RunPodError

log = logging.getLogger(__name__)


class Sweep(Core):
    """The scheduled sweeper."""

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
        if row.get("sk") == SEARCH_SK:
            return self._sweep_search_alarm(row)
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
        search = state["search"]
        fields = {"next_version": state["next_version"], "items": state["items"], "settled": state["settled"]}
        # done unless more items completed meanwhile (then it stays due for the next sweep)
        done = self.ledger.manifest_written(
            owner_id,
            int(row["dirty_gen"]),
            self.clock() + self.settings.manifest_delay_s,
            {**fields, **(search.fields if search is not None else {})},
        )
        if search is not None and search.again_at is not None:
            # the search tables are behind (a batch over the cap: now; a failed write: later) or hold
            # writes not yet optimized (later): the owner's rebuild is due again then
            if search.again_at <= self.clock():
                self.ledger.mark_manifest(owner_id, search.again_at)
            else:
                self.ledger.set_search_alarm(owner_id, search.again_at)
        return "manifest" if done else "manifest_again"

    def _sweep_search_alarm(self, row: Mapping[str, Any]) -> str:
        """The owner's search tables want a rebuild now (a retry, an optimize): the manifest is marked."""
        try:
            self.ledger.mark_manifest(row["alarm_owner"], self.clock())
            self.ledger.search_alarm_rang(row["alarm_owner"], float(row["due_at"]))
        except EmbeddingError as e:
            log.warning("search alarm of %s: %s", row["alarm_owner"], e.public_message)
            return "search_alarm_error"
        return "search_alarm"

    def _sweep_row(self, owner_id: str, item_id: str, row: Mapping[str, Any]) -> str:
        state = row.get("dispatch_state")
        dispatch_id = row.get("dispatch_id")
        channels = list(row.get("dispatch_channels") or [])
        now = self.clock()
        if state == RETRY:
            out = self.advance(owner_id, item_id)
            if out.action in ("noop", "lambda"):
                self.ledger.clear_retry(owner_id, item_id)
                self.complete(owner_id, item_id)
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
            return "claimed:" + self.retry_or_quarantine(owner_id, item_id, dispatch_id, channels, err)
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
                self._cancel(job_id)
                err = {
                    "code": "job_lost",
                    "message": f"RunPod's /status failed {failures} times in a row, past the job's deadline; "
                    f"last: {e.message}",
                    "retryable": True,
                }
                return "lost:" + self.retry_or_quarantine(owner_id, item_id, dispatch_id, channels, err)
            log.info("status of %s failed (%d in a row): %s; polled again later", job_id, failures, e.message)
            self.ledger.push_due(
                owner_id, item_id, dispatch_id, now + self.settings.poll_interval_s, poll_failures=failures
            )
            return "poll_error"
        outcome = self.apply_result(owner_id, item_id, dispatch_id, st)
        if outcome.action != "pending" and not outcome.detail.get("mismatch"):
            return "polled:" + outcome.action
        if self.policy.overdue(row, now):
            self._cancel(job_id)
            err = {"code": "job_expired", "message": "the job outlived its TTL", "retryable": True}
            return "expired:" + self.retry_or_quarantine(owner_id, item_id, dispatch_id, channels, err)
        self.ledger.push_due(
            owner_id, item_id, dispatch_id, now + self.settings.poll_interval_s, poll_failures=None
        )
        return "waiting"

    def _cancel(self, job_id: str) -> None:
        """Best effort: a job given up on is cancelled if RunPod still knows it (its TTL ends it anyway)."""
        if self.runpod is not None:
            with contextlib.suppress(RunPodError):
                self.runpod.cancel(job_id)

    def free_overdue(self, owner_id: str, item_id: str) -> bool:
        """Replay or a forced reprocess of an item whose open dispatch is past its deadline: the dispatch
        is closed (its job, if RunPod still knows it, cancelled; its channels PENDING), so the caller can
        dispatch the item again. A late answer of the old job is then stale. False: nothing to free."""
        item = self.ledger.item(owner_id, item_id)
        if item is None or not self.policy.overdue(item, self.clock()):
            return False
        if item.get("job_id"):
            self._cancel(item["job_id"])
        dispatch_id = item["dispatch_id"]
        err = {"code": "job_lost", "message": "freed past its deadline by a replay", "retryable": True}
        channels = list(item.get("dispatch_channels") or [])
        self.ledger.finish_channels(
            owner_id, item_id, dispatch_id, {ch: (PENDING, {"error": err}) for ch in channels}
        )
        return self.ledger.release(owner_id, item_id, dispatch_id, retry_at=None, error=err)
