"""The orchestration runs unchanged on the in-memory ledger: some of the upload, webhook, sweeper and
lost-job tests again, through the real handlers, with the ledger in memory (S3 and SQS still moto's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shared.dev.memory_ledger import MemoryTable
from shared.dev.runpod_standin import Faults
from tests.integration.pipeline import test_faults as faults
from tests.integration.pipeline import test_on_job_done as on_job_done
from tests.integration.pipeline import test_on_upload as on_upload

pytestmark = pytest.mark.integration

# (test, what it takes: "h" a harness, "lost" one whose webhooks are lost, "make" the harness factory).
# An endpoint that stays down, one upload completing, a forgotten job and sequencers run on memory in
# tests/unit/pipeline/test_state_machine.py (no moto at all), so they are not repeated here.
SCENARIOS: list[tuple[Callable[..., None], str]] = [
    (on_upload.test_a_message_delivered_three_times_starts_one_gpu_job, "h"),
    (on_upload.test_removal_marks_the_item, "h"),
    (on_upload.test_a_removed_item_leaves_the_owners_manifest, "h"),
    (on_job_done.test_a_concurrent_apply_of_the_same_result_still_completes_the_item, "lost"),
    (on_job_done.test_result_of_a_superseded_source_is_not_applied, "lost"),
    (on_job_done.test_failed_job_is_retried_by_its_retryable_flag, "make"),
    (faults.test_lost_webhook_is_completed_by_the_sweeper, "make"),
    (faults.test_crash_between_claim_and_post_is_repaired_without_a_second_job, "make"),
    (faults.test_run_429_is_retried_then_quarantined, "make"),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s[0].__name__.removeprefix("test_"))
def test_on_the_memory_ledger(make_harness, scenario: tuple[Callable[..., None], str]) -> None:
    test, takes = scenario

    def make(**kw: Any) -> Any:
        h = make_harness(ledger="memory", **kw)
        assert isinstance(h.ledger.table, MemoryTable)
        return h

    if takes == "h":
        test(make())
    elif takes == "lost":
        test(make(faults=Faults(lost_webhook=1.0)))
    else:
        test(make)
