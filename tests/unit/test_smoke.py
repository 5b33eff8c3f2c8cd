"""`se smoke`'s steps on the in-memory pipeline (shared.smoke): the first step that fails ends the run
and says what the ledger shows; tests/integration/pipeline/test_smoke.py runs the command on moto."""

from __future__ import annotations

from typing import Any

from shared.pipeline.runpod_client import RunPodError
from shared.smoke import Clients, Report, Smoke
from tests.unit.pipeline.test_state_machine import Machine


class Stack:
    """DescribeStacks and the bucket of a stack whose pipeline is `m`'s: a put is an S3 event."""

    def __init__(self, m: Machine, deliver: bool = True) -> None:
        self.m, self.deliver = m, deliver

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        outputs = {"MediaBucketName": "b", "LedgerTableName": "t"}
        return {"Stacks": [{"Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]}]}

    def put_object(self, Bucket: str, Key: str, Body: bytes) -> None:
        self.m.storage.put(Key, Body)
        if self.deliver:
            self.m.p.on_s3_record({"eventName": "ObjectCreated:Put", "s3": {"object": {"key": Key}}})


def run(m: Machine, stack: Stack, timeout_s: float = 60.0) -> Report:
    def sleep(s: float) -> None:
        m.clock.t += s

    clients = Clients(stack, stack, None, None, "us-east-1")
    smoke = Smoke("s", clients, timeout_s=timeout_s, clock=m.clock, sleep=sleep, ledger=m.ledger)
    return smoke.run()


def test_a_quarantine_ends_the_run_at_dispatched_with_its_reason() -> None:
    m = Machine(max_attempts=1)
    m.runpod.run_error = RunPodError("RunPod run answered HTTP 401")
    report = run(m, Stack(m))
    assert not report.ok and report.failed_step == "dispatched"
    assert "HTTP 401" in report.steps[-1].detail and [s.ok for s in report.steps] == [True, True, True, False]


def test_an_upload_nobody_records_times_out_at_item_seen_with_where_to_look() -> None:
    m = Machine()
    report = run(m, Stack(m, deliver=False), timeout_s=30)
    assert report.failed_step == "item seen"
    assert report.steps[-1].detail.startswith("timed out (30 s): no ledger row") and "UploadQueueUrl" in (
        report.steps[-1].detail
    )


def test_a_job_that_never_comes_back_times_out_at_complete() -> None:
    m = Machine()
    report = run(m, Stack(m), timeout_s=30)
    assert report.failed_step == "complete" and "image_clip DISPATCHED" in report.steps[-1].detail
    assert report.as_dict()["failed_step"] == "complete" and report.as_dict()["ok"] is False
