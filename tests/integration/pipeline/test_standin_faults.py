"""The stand-in's faults of issue 20 (a worker that dies with its jobs, a result RunPod has forgotten,
a garbled report), and what the orchestration makes of each: a settled item with a true reason."""

from __future__ import annotations

import json

import pytest

from shared.dev import runpod_standin
from shared.dev.runpod_standin import DROP, GARBLES, Faults, garble
from tests.integration.pipeline.harness import Harness

pytestmark = pytest.mark.integration

SETTLED = ("COMPLETE", "PARTIAL", "QUARANTINED")
GOOD = {"status": "succeeded", "sha256": "0" * 64, "bytes": 10, "model": "m", "seconds": 0.01}


def settle(h: Harness, owner: str, items: list[str], *, step_s: float = 600.0, rounds: int = 200) -> None:
    for _ in range(rounds):
        if all(h.done(owner, i) and not h.item(owner, i).get("dispatch_state") for i in items):
            return
        h.clock.advance(step_s)
        h.sweep()
    raise AssertionError(f"not settled: {[h.item(owner, i) for i in items]}")


def run_body(owner: str, item: str) -> bytes:
    return json.dumps({"input": {"item": {"owner_id": owner, "item_id": item}, "channels": []}}).encode()


@pytest.mark.parametrize("how", GARBLES)
def test_each_garble_breaks_the_report_one_way(how: str) -> None:
    out = json.loads(json.dumps(garble(GOOD, how)))  # as the wire carries it (NaN, \ud800 escapes)
    if how == "surrogate_error":
        assert out["status"] == "failed" and out["error"]["retryable"] is False
        assert "\ud800" in out["error"]["message"]
    elif how == "no_sha256":
        assert "sha256" not in out and out["bytes"] == 10
    elif how == "seconds_nan":
        assert out["seconds"] != out["seconds"]
    else:
        assert not isinstance(out["seconds"], int | float)
    assert GOOD["seconds"] == 0.01  # the report it garbled is left as it was


def test_a_dead_workers_jobs_fail_status_until_their_window_ends_then_404(make_harness) -> None:
    h = make_harness(faults=Faults(worker_down=1.0, worker_down_s=100.0, outage_s=10.0))
    h.standin.clock = h.clock
    status, out = h.standin.route("/run", run_body("d0", "it"), "Bearer k")
    assert status == 200
    job_id = out["id"]
    h.wait(lambda: h.standin.died == 1)
    assert h.standin.faults_by_item[("d0", "it")] == ["worker_down"]
    # the endpoint is down: /run refused (no answer, or a gateway's 5xx), and so is /status
    assert h.standin.route("/run", run_body("d0", "other"), "Bearer k")[0] in (DROP, 502, 503, 504)
    assert h.standin.faults_by_item[("d0", "other")] == ["outage_run"]
    h.clock.advance(11)  # the endpoint is back; the dead job is not
    h.standin.faults.worker_down = 0.0
    assert h.standin.route("/run", run_body("d0", "next"), "Bearer k")[0] == 200
    assert {h.standin.route(f"/status/{job_id}", b"", "Bearer k")[0] for _ in range(20)} <= {
        DROP,
        502,
        503,
        504,
    }
    h.clock.advance(90)
    assert h.standin.route(f"/status/{job_id}", b"", "Bearer k")[0] == 404
    assert h.standin.webhooks_sent == 0 and h.standin.jobs[job_id].status == "IN_PROGRESS"
    assert h.standin.refused["run"] == 1 and h.standin.refused["status"] >= 20


def test_jobs_that_die_with_their_worker_are_lost_then_quarantined_with_the_reason(make_harness) -> None:
    h = make_harness(
        faults=Faults(worker_down=1.0, worker_down_s=3600.0 + 1200.0), overrides={"MAX_ATTEMPTS": "2"}
    )
    h.standin.clock = h.clock
    items = [f"it{i}" for i in range(3)]
    for i in items:
        h.put(f"uploads/d1/{i}/v.mp4")
    h.deliver()
    h.wait(lambda: h.standin.died >= 3)
    settle(h, "d1", items)
    for i in items:
        item = h.item("d1", i)
        assert item["status"] == "QUARANTINED", item
        reason = item["quarantine_reason"]
        assert reason.startswith("2 dispatches failed; last: job_lost: RunPod's /status failed"), reason
        assert h.jobs("d1", i) == 2
    assert h.standin.webhooks_sent == 0


def test_a_forgotten_result_is_a_404_and_the_job_is_lost(make_harness) -> None:
    h = make_harness(faults=Faults(forgotten=1.0), overrides={"MAX_ATTEMPTS": "2"})
    h.standin.clock = h.clock
    h.put("uploads/d2/it/v.mp4")
    h.deliver()
    h.wait(lambda: h.standin.forgotten == 1)
    job_id = h.item("d2", "it")["job_id"]
    assert h.standin.jobs[job_id].status == "COMPLETED"
    assert h.standin.route(f"/status/{job_id}", b"", "Bearer k")[0] == 404
    settle(h, "d2", ["it"])
    item = h.item("d2", "it")
    assert item["status"] == "QUARANTINED"
    assert "last: job_lost" in item["quarantine_reason"] and "HTTP 404" in item["quarantine_reason"]
    assert h.standin.webhooks_sent == 0 and h.jobs("d2", "it") == 2


@pytest.mark.parametrize("how", GARBLES)
def test_a_garbled_report_settles_the_item_with_the_reason(make_harness, monkeypatch, how: str) -> None:
    monkeypatch.setattr(runpod_standin, "GARBLES", (how,))
    h = make_harness(faults=Faults(garbled=1.0), overrides={"MAX_ATTEMPTS": "2"})
    h.put("uploads/d3/it/v.mp4")
    h.deliver()
    h.wait(lambda: h.done("d3", "it") or h.item("d3", "it").get("dispatch_state") == "RETRY")
    settle(h, "d3", ["it"])
    item, chans = h.item("d3", "it"), h.channels("d3", "it")
    garbled = {f.split(":")[2] for f in h.standin.faults_by_item[("d3", "it")]}
    assert h.standin.garbled[how] >= 1
    if how == "surrogate_error":  # a permanent failure of one channel: PARTIAL, its error storable
        (ch,) = garbled
        assert item["status"] == "PARTIAL", item
        err = chans[ch]["error"]
        assert chans[ch]["status"] == "FAILED" and err["code"] == "decode_error", chans[ch]
        err["message"].encode("utf-8")  # no lone surrogate left
        assert h.jobs("d3", "it") == 1
    else:  # a retryable bad_output of that channel; the others succeeded at once
        assert item["status"] == "QUARANTINED", item
        assert "2 dispatches failed; last: bad_output: " in item["quarantine_reason"], item
        assert {chans[c]["status"] for c in garbled} == {"QUARANTINED"}
        first = next(iter(h.standin.jobs.values())).input["channels"]
        assert all(chans[c]["status"] == "SUCCEEDED" for c in first if c not in garbled), chans
