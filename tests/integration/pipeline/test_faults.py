"""Faults between the orchestration and RunPod: retried with backoff, repaired by the sweeper, never a
second GPU job for one source, quarantined with a reason when nothing helps."""

from __future__ import annotations

import json

import pytest

from shared import spec
from shared.dev.runpod_standin import Faults
from tests.integration.pipeline.harness import Harness

pytestmark = pytest.mark.integration


def test_run_429_is_retried_then_quarantined(make_harness) -> None:
    h = make_harness(faults=Faults(run_429=1.0), overrides={"MAX_ATTEMPTS": "3", "RUNPOD_RETRIES": "2"})
    h.put("uploads/f1/it/v.mp4")
    h.deliver()
    assert h.standin.calls["run"] == 3  # one call + 2 retries inside one dispatch
    item = h.item("f1", "it")
    assert item["dispatch_state"] == "RETRY" and item["attempts"] == 1
    for _ in range(4):
        h.clock.advance(3600)
        h.sweep()
    item = h.item("f1", "it")
    assert item["status"] == "QUARANTINED"
    assert "3 dispatches failed" in item["quarantine_reason"] and "HTTP 429" in item["quarantine_reason"]
    assert h.standin.calls["run"] == 9 and h.jobs("f1", "it") == 0
    assert {c["status"] for c in h.channels("f1", "it").values()} == {"QUARANTINED"}


def test_run_503_is_never_resent_and_is_dispatched_again_after_the_claims_deadline(make_harness) -> None:
    # a 503 may come from a gateway after RunPod accepted the job (docs/runpod-limits.md): the claim
    # waits out the job's TTL, then the item is dispatched again; never two jobs at once
    h = make_harness(faults=Faults(run_5xx=0.5, seed=3), overrides={"MAX_ATTEMPTS": "12"})
    for i in range(6):
        h.put(f"uploads/f2/it{i}/v.mp4")
    h.deliver()
    claimed = [i for i in range(6) if h.item("f2", f"it{i}").get("dispatch_state") == "CLAIMED"]
    assert claimed and h.standin.calls["run"] == 6  # each /run sent once
    for _ in range(40):
        if all(h.done("f2", f"it{i}") for i in range(6)):
            break
        h.clock.advance(3700)
        h.sweep()
        h.wait(lambda: all(h.item("f2", f"it{i}").get("dispatch_state") != "SUBMITTED" for i in range(6)))
    assert all(h.status("f2", f"it{i}") == "COMPLETE" for i in range(6))
    assert [h.jobs("f2", f"it{i}") for i in range(6)] == [1] * 6


def test_run_timeout_is_never_resent_and_the_sweeper_repairs_it(make_harness) -> None:
    # /run answers after the client gave up: the job may exist, so it is not POSTed again
    h = make_harness(faults=Faults(run_timeout_s=1.5), overrides={"RUNPOD_TIMEOUT_S": "0.5"})
    h.put("uploads/f3/it/v.mp4")
    h.deliver()
    item = h.item("f3", "it")
    assert item["dispatch_state"] == "CLAIMED" and h.standin.calls["run"] == 1
    h.wait(lambda: h.done("f3", "it"))  # its webhook still arrives and completes the claimed dispatch
    assert h.jobs("f3", "it") == 1
    h.clock.advance(2 * 3600)
    h.sweep()
    assert h.jobs("f3", "it") == 1 and h.status("f3", "it") == "COMPLETE"


def test_lost_webhook_is_completed_by_the_sweeper(make_harness) -> None:
    h = make_harness(faults=Faults(lost_webhook=1.0))
    h.put("uploads/f4/it/v.mp4")
    h.deliver()
    job = h.item("f4", "it")["job_id"]
    h.wait(lambda: h.standin.jobs[job].status == "COMPLETED")
    assert h.sweep() == {}  # not due yet: nothing is polled before POLL_AFTER_S
    h.clock.advance(31)
    counts = h.sweep()
    assert counts == {"polled:applied": 1}
    assert h.status("f4", "it") == "COMPLETE" and h.jobs("f4", "it") == 1
    assert h.standin.webhooks_lost == 1


def test_unfinished_job_is_polled_again_later(make_harness) -> None:
    h = make_harness(faults=Faults(lost_webhook=1.0))
    h.standin.job_seconds = 1.0
    h.put("uploads/f5/it/v.mp4")
    h.deliver()
    h.clock.advance(31)
    assert h.sweep() == {"waiting": 1}
    assert h.item("f5", "it")["due_at"] == pytest.approx(h.clock() + 10)
    h.wait(lambda: h.standin.jobs[h.item("f5", "it")["job_id"]].status == "COMPLETED")
    h.clock.advance(11)
    assert h.sweep() == {"polled:applied": 1}


def test_crash_between_claim_and_post_is_repaired_without_a_second_job(make_harness) -> None:
    h = make_harness()
    real_run = h.runpod.run
    calls = {"n": 0}

    def crash_once(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the process died here")  # after the claim, before the POST
        return real_run(*a, **kw)

    h.runpod.run = crash_once
    h.put("uploads/f6/it/v.mp4")
    h.deliver(rounds=2)  # the crashed invocation's message comes back; the claim holds the item
    assert h.item("f6", "it")["dispatch_state"] == "CLAIMED" and h.jobs("f6", "it") == 0
    h.sweep()
    assert h.jobs("f6", "it") == 0  # the claim is not due before its TTL has passed
    h.clock.advance(3600 + 61)
    assert h.sweep() == {"claimed:retry": 1}
    h.clock.advance(3600)
    h.sweep()
    h.wait(lambda: h.done("f6", "it"))
    assert h.jobs("f6", "it") == 1 and h.status("f6", "it") == "COMPLETE"


def test_changing_one_fingerprint_reruns_only_that_channel(h: Harness, monkeypatch) -> None:
    h.put("uploads/f7/it/v.mp4")
    h.deliver()
    h.wait(lambda: h.done("f7", "it"))
    before = h.channels("f7", "it")
    import dataclasses
    from types import MappingProxyType

    changed = dataclasses.replace(
        spec.CHANNELS["video_mae"],
        preprocessing=MappingProxyType({**spec.CHANNELS["video_mae"].preprocessing, "frames": 32}),
    )
    assert changed.fingerprint != spec.CHANNELS["video_mae"].fingerprint
    monkeypatch.setattr(spec, "CHANNELS", MappingProxyType({**spec.CHANNELS, "video_mae": changed}))
    h.send(
        json.dumps(
            {
                "Records": [
                    {
                        "eventSource": "aws:s3",
                        "eventName": "ObjectCreated:Put",
                        "s3": {"bucket": {"name": h.bucket}, "object": {"key": "uploads/f7/it/v.mp4"}},
                    }
                ]
            }
        )
    )
    h.deliver()
    h.wait(lambda: h.done("f7", "it") and h.jobs("f7", "it") == 2)
    last = list(h.standin.jobs.values())[-1]
    assert last.input["channels"] == ["video_mae"]
    after = h.channels("f7", "it")
    assert after["video_mae"]["fingerprint"] == changed.fingerprint and after["video_mae"]["attempts"] == 2
    for name in ("video_clip", "audio_wav2vec2", "transcript", "text_transcript"):
        assert after[name]["updated_at"] == before[name]["updated_at"]


def test_the_sweeper_reads_an_index_and_never_scans(make_harness) -> None:
    h = make_harness(faults=Faults(lost_webhook=1.0))
    calls: list[str] = []
    real = h.ledger.db

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    h.ledger.db = Spy()
    h.put("uploads/f8/it/v.mp4")
    h.deliver()
    h.clock.advance(31)
    h.wait(lambda: h.standin.jobs[h.item("f8", "it")["job_id"]].status == "COMPLETED")
    calls.clear()
    h.sweep()
    assert "scan" not in calls and "query" in calls
    assert h.status("f8", "it") == "COMPLETE"
