"""No item is ever stuck: the faults a real RunPod endpoint and real S3 produce each end in a settled
item (COMPLETE, PARTIAL or QUARANTINED with a true reason) within a bounded number of sweeps, and no
answer a worker returns can make the webhook or the sweeper fail."""

from __future__ import annotations

import json

import pytest

from shared.dev.runpod_standin import Faults
from shared.pipeline.runpod_client import RunPodError
from tests.integration.pipeline.harness import Harness
from tests.integration.pipeline.test_on_job_done import open_dispatch, snapshot, token_for

pytestmark = pytest.mark.integration

SETTLED = ("COMPLETE", "PARTIAL", "QUARANTINED")


@pytest.fixture
def lost(make_harness) -> Harness:
    return make_harness(faults=Faults(lost_webhook=1.0))


def sweep_until(h: Harness, done, *, step_s: float = 60.0, rounds: int = 400) -> dict[str, int]:
    """Sweep with the clock moving `step_s` a round until `done()` (bounded); what the sweeps did, and
    how many rounds it took ("rounds")."""
    seen: dict[str, int] = {}
    for n in range(rounds):
        if done():
            return {**seen, "rounds": n}
        h.clock.advance(step_s)
        for action, count in h.sweep().items():
            seen[action] = seen.get(action, 0) + count
    raise AssertionError(f"not settled after {rounds} sweeps: {seen}")


# ---------------------------------------------------------------- 1. lost jobs


def test_a_job_runpod_no_longer_knows_is_lost_and_dispatched_again(lost: Harness) -> None:
    row = open_dispatch(lost, "s1", "it")
    lost.standin.jobs.pop(row["job_id"])  # RunPod dropped it: /status answers 404 from now on
    lost.clock.advance(31)
    assert lost.sweep() == {"poll_error": 1}
    assert lost.item("s1", "it")["dispatch_id"] == row["dispatch_id"]  # not before its deadline
    lost.standin.faults.lost_webhook = 0.0  # the next job's webhook arrives
    lost_at = []
    real_release = lost.ledger.release
    lost.ledger.release = lambda *a, **kw: lost_at.append(kw.get("error")) or real_release(*a, **kw)
    seen = sweep_until(lost, lambda: lost.done("s1", "it"))
    assert seen["lost:retry"] == 1, seen
    assert lost.status("s1", "it") == "COMPLETE" and lost.jobs("s1", "it") == 2
    assert lost_at[0]["code"] == "job_lost" and "HTTP 404" in lost_at[0]["message"], lost_at
    # the old job's late webhook is stale: 403, nothing changes
    before = snapshot(lost, "s1", "it")
    late = {"id": row["job_id"], "status": "COMPLETED", "output": {"item": {}, "channels": {}}}
    assert lost.webhook(token_for(lost, "s1", "it", row["dispatch_id"]), late)["statusCode"] == 403
    assert snapshot(lost, "s1", "it") == before


def test_worker_down_with_items_in_flight_ends_quarantined_with_the_reason(lost: Harness) -> None:
    n = 3  # items in flight (the run had 10; each costs a sweep's reads per round on moto)
    for i in range(n):
        lost.put(f"uploads/s2/it{i}/v.mp4")
    lost.deliver()
    assert all(lost.item("s2", f"it{i}")["dispatch_state"] == "SUBMITTED" for i in range(n))
    lost.standin.stop()  # the endpoint is gone: /status and /run cannot connect
    sweep_until(lost, lambda: all(lost.done("s2", f"it{i}") for i in range(n)), step_s=600)
    for i in range(n):
        item = lost.item("s2", f"it{i}")
        assert item["status"] == "QUARANTINED", item
        assert "4 dispatches failed" in item["quarantine_reason"]
        assert "cannot connect to RunPod" in item["quarantine_reason"]
        assert "dispatch_id" not in item and "sweep" not in item
    assert {c["status"] for c in lost.channels("s2", "it0").values()} == {"QUARANTINED"}


def test_a_status_that_answers_again_resets_the_failure_count(lost: Harness) -> None:
    lost.put("uploads/s3/it/v.mp4")
    lost.deliver()
    job_id = lost.item("s3", "it")["job_id"]

    def running(_id: str) -> dict:
        return {"id": _id, "status": "IN_PROGRESS"}

    def flaky(_id: str):
        raise RunPodError("RunPod status answered HTTP 502")

    lost.runpod.status = flaky
    lost.clock.advance(31)
    lost.sweep()
    lost.clock.advance(11)
    lost.sweep()
    assert lost.item("s3", "it")["poll_failures"] == 2
    lost.runpod.status = running
    lost.clock.advance(11)
    assert lost.sweep() == {"waiting": 1}
    assert "poll_failures" not in lost.item("s3", "it")
    assert lost.item("s3", "it")["job_id"] == job_id


@pytest.mark.parametrize("how", ["replay", "force"])
def test_replay_and_force_free_a_dispatch_past_its_deadline(lost: Harness, how: str) -> None:
    row = open_dispatch(lost, "s4", "it")
    lost.standin.jobs.pop(row["job_id"])
    lost.standin.faults.lost_webhook = 0.0
    lost.clock.advance(30)
    body = {"scope": "item", "owner_id": "s4", "item_id": "it", "force": True}
    status, _ = (
        lost.admin("POST", "/replay", {"owner_id": "s4", "item_id": "it"})
        if how == "replay"
        else lost.admin("POST", "/reprocess", body)
    )
    assert status == 202
    lost.deliver_reprocess()
    assert lost.jobs("s4", "it") == 1  # not yet past its deadline: in flight, skipped
    lost.clock.advance(3600)
    if how == "force":
        status, plan = lost.admin("POST", "/reprocess", {**body, "dry_run": True})
        assert status == 200 and plan["item_count"] == 1, plan
    status, _ = (
        lost.admin("POST", "/replay", {"owner_id": "s4", "item_id": "it"})
        if how == "replay"
        else lost.admin("POST", "/reprocess", body)
    )
    assert status == 202
    lost.deliver_reprocess()
    lost.wait(lambda: lost.done("s4", "it"))
    assert lost.status("s4", "it") == "COMPLETE" and lost.jobs("s4", "it") == 2


# ---------------------------------------------------------------- 2, 3. garbled outputs, numbers


def _body(h: Harness, job_id: str) -> dict:
    return json.loads(json.dumps(h.standin._body(h.standin.jobs[job_id])))


def _garble_seconds(value):
    def garble(body: dict) -> dict:
        for rep in body["output"]["channels"].values():
            rep["seconds"] = value
        return body

    return garble


def _nan_output_seconds(body: dict) -> dict:
    body.pop("executionTime", None)
    body["output"]["seconds"] = float("nan")
    return body


def _surrogate_error(body: dict) -> dict:
    return {
        "id": body["id"],
        "status": "FAILED",
        "error": json.dumps({"code": "bad\ud800", "message": "lone \udc00 surrogate", "retryable": True}),
    }


def _channels_not_an_object(body: dict) -> dict:
    body["output"]["channels"] = ["video_clip"]
    return body


def _sha_not_hex(body: dict) -> dict:
    for rep in body["output"]["channels"].values():
        rep["sha256"] = {"$gt": ""}
    return body


GARBLED = {
    "seconds_text": _garble_seconds("1.5"),
    "seconds_object": _garble_seconds({"a": 1}),
    "seconds_list": _garble_seconds([1]),
    "nan_output_seconds": _nan_output_seconds,
    "surrogates_in_error": _surrogate_error,
    "channels_list": _channels_not_an_object,
    "sha256_object": _sha_not_hex,
}


def _webhook_raw(h: Harness, token: str, body: dict) -> dict:
    # json.dumps writes NaN and lone surrogates as JSON (NaN, "\\ud800"), as a broken worker would
    return h.webhook(token, json.dumps(body).encode())


def test_a_garbled_output_is_the_channels_failure_never_a_500(lost: Harness) -> None:
    for name, garble in GARBLED.items():  # one stack, an item per case
        item_id = name.replace("_", "-")
        row = open_dispatch(lost, "s5", item_id)
        body = garble(_body(lost, row["job_id"]))
        out = _webhook_raw(lost, token_for(lost, "s5", item_id, row["dispatch_id"]), body)
        assert out["statusCode"] == 200, (name, out)
        item, chans = lost.ledger.rows("s5", item_id)
        gpu = [c for c in ("video_clip", "video_mae", "audio_wav2vec2", "transcript") if c in chans]
        if garble is _nan_output_seconds:  # only a time is unknown: the result itself is good
            assert item["status"] == "COMPLETE" and item.get("gpu_seconds", 0) == 0, name
            continue
        assert item["dispatch_state"] == "RETRY", name
        assert {chans[c]["status"] for c in gpu} == {"PENDING"}, name
        codes = {chans[c]["error"]["code"] for c in gpu}
        assert codes and codes <= {"bad_output", "bad?"}, (name, codes)  # a lone surrogate is replaced


def test_a_garbled_output_polled_by_the_sweeper_is_retried_then_quarantined(make_harness) -> None:
    h = make_harness(faults=Faults(lost_webhook=1.0), overrides={"MAX_ATTEMPTS": "2"})
    real = h.runpod.status

    def garbled_status(job_id: str) -> dict:
        return _garble_seconds({"nested": [1, 2]})(real(job_id))

    h.runpod.status = garbled_status
    h.put("uploads/s6/it/v.mp4")
    h.deliver()
    h.wait(lambda: h.standin.jobs[h.item("s6", "it")["job_id"]].status == "COMPLETED")
    seen = sweep_until(h, lambda: h.done("s6", "it"), step_s=40)
    item = h.item("s6", "it")
    assert item["status"] == "QUARANTINED" and "bad_output" in item["quarantine_reason"], item
    assert h.jobs("s6", "it") == 2 and seen["rounds"] < 20


def test_a_result_with_an_impossible_execution_time_is_applied_whole(lost: Harness) -> None:
    for i, ms in enumerate([float("inf"), 1e300, -5, float("nan"), True, "12"]):
        row = open_dispatch(lost, "s7", f"it{i}")
        body = _body(lost, row["job_id"])
        body["executionTime"] = ms
        body["output"]["seconds"] = 2.5
        out = _webhook_raw(lost, token_for(lost, "s7", f"it{i}", row["dispatch_id"]), body)
        assert out["statusCode"] == 200, (ms, out)
        item = lost.item("s7", f"it{i}")
        assert item["status"] == "COMPLETE" and "dispatch_id" not in item, ms
        assert item["gpu_seconds"] == 2.5, ms  # the job's own time, as the worker measured it
        assert lost.channels("s7", f"it{i}")["text_transcript"]["status"] == "SUCCEEDED", ms


# ---------------------------------------------------------------- 4. S3 sequencers


def _record(key: str, sequencer: str, size: int) -> dict:
    return {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "x"}, "object": {"key": key, "size": size, "sequencer": sequencer}},
    }


SEQUENCERS = [("0055AED6DCD9028100", "0055AED6DCD90282"), ("0A", "0B00000000000000"), ("00ff", "0100")]


def test_a_later_event_with_a_sequencer_of_another_length_is_applied(lost: Harness) -> None:
    for i, (first, second) in enumerate(SEQUENCERS):
        key = f"uploads/s8/it{i}/v.mp4"
        lost.put(key, b"version one" * 10)
        assert lost.pipeline.on_s3_record(_record(key, first, 110)).action != "skipped"
        v1 = lost.item("s8", f"it{i}")["media_etag"]
        lost.put(key, b"version two!" * 10)
        lost.pipeline.on_s3_record(_record(key, second, 120))
        assert lost.item("s8", f"it{i}")["media_etag"] != v1, second  # the ledger holds what S3 holds
        # and the older event, delivered late, changes nothing
        lost.pipeline.on_s3_record(_record(key, first, 110))
        assert lost.item("s8", f"it{i}")["media_etag"] != v1, first


# ---------------------------------------------------------------- 7. a body tied to its dispatch


def test_a_token_for_one_item_cannot_carry_another_items_result(lost: Harness) -> None:
    a = open_dispatch(lost, "s9", "a")
    b = open_dispatch(lost, "s9", "b")
    before = snapshot(lost, "s9", "a")
    body_b = _body(lost, b["job_id"])
    token_a = token_for(lost, "s9", "a", a["dispatch_id"])
    assert lost.webhook(token_a, body_b)["statusCode"] == 403  # B's job id
    body_b["id"] = a["job_id"]
    assert lost.webhook(token_a, body_b)["statusCode"] == 403  # A's job id, B's output
    assert snapshot(lost, "s9", "a") == before
    assert lost.webhook(token_a, _body(lost, a["job_id"]))["statusCode"] == 200
    assert lost.status("s9", "a") == "COMPLETE"


# ---------------------------------------------------------------- 8. true reasons


def test_run_failing_with_500_is_quarantined_with_that_reason(make_harness) -> None:
    h = make_harness(faults=Faults(run_500=1.0), overrides={"MAX_ATTEMPTS": "2"})
    h.put("uploads/s10/it/v.mp4")
    h.deliver()
    assert h.item("s10", "it")["dispatch_state"] == "CLAIMED"
    sweep_until(h, lambda: h.done("s10", "it"), step_s=1800)
    item = h.item("s10", "it")
    assert item["status"] == "QUARANTINED"
    assert "HTTP 500" in item["quarantine_reason"], item["quarantine_reason"]
    assert "dispatcher stopped" not in item["quarantine_reason"]
