"""When to try again, when to give up: the one retry policy of the orchestration.

A dispatch (one RunPod job for an item's GPU channels) ends in one of three ways: its result is applied,
it fails as a whole (its /run failed, its job failed retryably, its output could not be described), or
it is lost (RunPod no longer answers for it). A failed or lost dispatch goes back to RETRY after a
backoff with full jitter (uniform between 0 and base * 2**(attempt-1), capped), until MAX_ATTEMPTS
dispatches of the same source have failed: then the item is QUARANTINED with the last reason.

A dispatch has a deadline, after which no job of it can still be running on RunPod: a submitted job's
`policy.ttl` after its submission; a claim that was never confirmed as submitted, its TTL (and a
minute) after the claim. Past its deadline, a dispatch whose /status cannot be read (the endpoint is
down, or answers 404 for a job it no longer keeps) `MAX_POLL_FAILURES` times is lost; replay and a
forced reprocess free it at once.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.timestamps import iso_epoch

CLAIMED, SUBMITTED, RETRY = "CLAIMED", "SUBMITTED", "RETRY"
CLAIM_GRACE_S = 60.0  # a claim outlives its job's TTL by this much before it counts as lost


def full_jitter(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max_s, base_s * 2**(attempt-1))]."""
    return rng.uniform(0.0, min(max_s, base_s * 2 ** max(0, attempt - 1)))


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_base_s: float
    backoff_max_s: float
    job_ttl_s: float
    poll_interval_s: float
    max_poll_failures: int

    @classmethod
    def from_settings(cls, settings: Any) -> RetryPolicy:
        return cls(
            max_attempts=settings.max_attempts,
            backoff_base_s=settings.backoff_base_s,
            backoff_max_s=settings.backoff_max_s,
            job_ttl_s=float(settings.job_ttl_s),
            poll_interval_s=settings.poll_interval_s,
            max_poll_failures=settings.max_poll_failures,
        )

    def backoff(self, attempt: int, rng: random.Random) -> float:
        return full_jitter(attempt, self.backoff_base_s, self.backoff_max_s, rng)

    def exhausted(self, attempts: int) -> bool:
        """`attempts` dispatches of the current source have failed: quarantine, do not retry."""
        return attempts >= self.max_attempts

    def claim_deadline(self, claimed_at: float) -> float:
        return claimed_at + self.job_ttl_s + CLAIM_GRACE_S

    def deadline(self, item: Mapping[str, Any]) -> float | None:
        """When the item's open dispatch can no longer have a live job on RunPod; None: none is open."""
        state = item.get("dispatch_state")
        if state == SUBMITTED:
            at = iso_epoch(item.get("submitted_at"))
            return None if at is None else at + self.job_ttl_s
        if state == CLAIMED:
            at = iso_epoch(item.get("claimed_at"))
            return None if at is None else self.claim_deadline(at)
        return None

    def overdue(self, item: Mapping[str, Any], now: float) -> bool:
        """The item's open dispatch is past its deadline: replay and force may free it."""
        deadline = self.deadline(item)
        return deadline is not None and now > deadline

    def lost(self, item: Mapping[str, Any], failures: int, now: float) -> bool:
        """A dispatch whose /status failed `failures` times in a row is lost once past its deadline."""
        return failures >= self.max_poll_failures and self.overdue(item, now)


def quarantine_reason(attempts: int, error: Mapping[str, Any] | None) -> str:
    err = error or {}
    return f"{attempts} dispatches failed; last: {err.get('code')}: {err.get('message')}"[:500]


__all__ = ["CLAIMED", "RETRY", "SUBMITTED", "RetryPolicy", "full_jitter", "quarantine_reason"]
