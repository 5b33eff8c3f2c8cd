"""on_job_done through the real handler: the token is the authentication, results are checked before
they count, and nothing but the open dispatch's own result changes the ledger."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from shared.dev.runpod_standin import Faults
from shared.pipeline import tokens
from shared.vectors import npy_bytes
from tests.integration.pipeline.harness import Harness

pytestmark = pytest.mark.integration


def open_dispatch(h: Harness, owner: str, item: str) -> dict:
    """Upload a source whose job never reports back (lost webhook), leaving its dispatch open."""
    h.put(f"uploads/{owner}/{item}/v.mp4")
    h.deliver()
    row = h.item(owner, item)
    assert row["dispatch_state"] == "SUBMITTED"
    h.wait(lambda: h.standin.jobs[row["job_id"]].status == "COMPLETED")
    return row


def token_for(
    h: Harness,
    owner: str,
    item: str,
    dispatch_id: str,
    *,
    key: bytes | None = None,
    expires: float | None = None,
) -> str:
    return tokens.sign(
        key or h.pipeline.webhook_key,
        owner,
        item,
        dispatch_id,
        int(expires if expires is not None else h.clock() + 3600),
    )


def snapshot(h: Harness, owner: str, item: str) -> str:
    item_row, chans = h.ledger.rows(owner, item)
    return json.dumps([item_row, chans], sort_keys=True, default=str)


@pytest.fixture
def lost(make_harness) -> Harness:
    return make_harness(faults=Faults(lost_webhook=1.0))


def test_valid_token_applies_the_result(lost: Harness) -> None:
    row = open_dispatch(lost, "w1", "it")
    body = lost.standin._body(lost.standin.jobs[row["job_id"]])
    out = lost.webhook(token_for(lost, "w1", "it", row["dispatch_id"]), body)
    assert out["statusCode"] == 200, out
    assert json.loads(out["body"])["outcome"] == "applied"
    assert lost.status("w1", "it") == "COMPLETE"


@pytest.mark.parametrize(
    "token",
    [None, "", "garbage", "a.b", "x" * 600, "....", "eyJvIjoidzEifQ.AAAA"],
)
def test_missing_or_malformed_token_is_401_and_changes_nothing(lost: Harness, token) -> None:
    row = open_dispatch(lost, "w2", "it")
    before = snapshot(lost, "w2", "it")
    out = lost.webhook(token, lost.standin._body(lost.standin.jobs[row["job_id"]]))
    assert out["statusCode"] == 401
    assert snapshot(lost, "w2", "it") == before


def test_forged_tokens_are_401(lost: Harness) -> None:
    row = open_dispatch(lost, "w3", "it")
    body = lost.standin._body(lost.standin.jobs[row["job_id"]])
    before = snapshot(lost, "w3", "it")
    forged = [
        token_for(lost, "w3", "it", row["dispatch_id"], key=b"not-the-key"),  # wrong key
        token_for(lost, "w3", "it", row["dispatch_id"], expires=lost.clock() - 1),  # expired
    ]
    good = token_for(lost, "w3", "it", row["dispatch_id"])
    payload, mac = good.split(".")
    other = token_for(lost, "w3", "other", row["dispatch_id"]).split(".")[0]
    forged.append(f"{other}.{mac}")  # a real MAC over another claim
    forged.append(f"{payload}.{mac[:-2]}AA")  # a flipped MAC
    for t in forged:
        out = lost.webhook(t, body)
        assert out["statusCode"] == 401, (t, out)
    assert snapshot(lost, "w3", "it") == before


def test_replayed_token_is_403_and_changes_nothing(lost: Harness) -> None:
    row = open_dispatch(lost, "w4", "it")
    body = lost.standin._body(lost.standin.jobs[row["job_id"]])
    token = token_for(lost, "w4", "it", row["dispatch_id"])
    assert lost.webhook(token, body)["statusCode"] == 200
    after = snapshot(lost, "w4", "it")
    again = lost.webhook(token, body)
    assert again["statusCode"] == 403 and json.loads(again["body"])["error"]["code"] == "stale_dispatch"
    assert snapshot(lost, "w4", "it") == after


def test_result_of_a_superseded_source_is_not_applied(lost: Harness) -> None:
    row = open_dispatch(lost, "w5", "it")
    lost.put("uploads/w5/it/v.mp4", b"a new version of the source" * 3)
    lost.deliver()  # a dispatch is open: the new source waits (never two jobs for one item)
    body = lost.standin._body(lost.standin.jobs[row["job_id"]])
    out = lost.webhook(token_for(lost, "w5", "it", row["dispatch_id"]), body)
    assert out["statusCode"] == 200
    chans = lost.channels("w5", "it")
    assert {c["status"] for n, c in chans.items() if n != "text_transcript"} == {"PENDING"}
    item = lost.item("w5", "it")
    assert item["dispatch_state"] == "RETRY" and item["status"] == "PROCESSING"
    lost.sweep()  # the retry is due now: the new source is dispatched
    assert lost.jobs("w5", "it") == 2
    assert lost.item("w5", "it")["dispatch_hash"] == item["media_hash"]


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"", json.dumps({"status": 5}).encode()])
def test_bad_bodies_with_a_valid_token_change_nothing(lost: Harness, body: bytes) -> None:
    row = open_dispatch(lost, "w6", "it")
    before = snapshot(lost, "w6", "it")
    out = lost.webhook(token_for(lost, "w6", "it", row["dispatch_id"]), body)
    assert out["statusCode"] in (200, 400), out
    if out["statusCode"] == 200:
        assert json.loads(out["body"])["outcome"] == "pending"
    assert snapshot(lost, "w6", "it") == before


def test_get_is_405(lost: Harness) -> None:
    row = open_dispatch(lost, "w7", "it")
    out = lost.webhook(token_for(lost, "w7", "it", row["dispatch_id"]), b"{}", method="GET")
    assert out["statusCode"] == 405


def test_artifact_that_does_not_match_the_report_is_not_succeeded(lost: Harness) -> None:
    row = open_dispatch(lost, "w8", "it")
    body = lost.standin._body(lost.standin.jobs[row["job_id"]])
    # the worker says one thing, S3 holds another (a half-written or replaced object)
    from shared.pipeline.service import artifact_key

    k = artifact_key("video_mae", "w8", "it")
    lost.s3.put_object(Bucket=lost.bucket, Key=k, Body=b"tampered")
    out = lost.webhook(token_for(lost, "w8", "it", row["dispatch_id"]), body)
    assert out["statusCode"] == 200
    chans = lost.channels("w8", "it")
    assert chans["video_mae"]["status"] == "PENDING"
    assert chans["video_mae"]["error"]["code"] == "artifact_mismatch"
    assert chans["video_clip"]["status"] == "SUCCEEDED"
    assert lost.item("w8", "it")["dispatch_state"] == "RETRY"


def test_a_vector_that_is_not_unit_length_is_refused_and_removed(lost: Harness) -> None:
    row = open_dispatch(lost, "w9", "it")
    job = lost.standin.jobs[row["job_id"]]
    from shared.pipeline.service import artifact_key

    k = artifact_key("audio_wav2vec2", "w9", "it")
    bad = npy_bytes(np.full(768, 0.5, dtype=np.float32))  # finite, right width, norm 13.9
    lost.s3.put_object(Bucket=lost.bucket, Key=k, Body=bad)
    job.output["channels"]["audio_wav2vec2"].update(sha256=hashlib.sha256(bad).hexdigest(), bytes=len(bad))
    out = lost.webhook(token_for(lost, "w9", "it", row["dispatch_id"]), lost.standin._body(job))
    assert out["statusCode"] == 200
    ch = lost.channels("w9", "it")["audio_wav2vec2"]
    assert ch["status"] == "FAILED" and "unit length" in ch["error"]["message"]
    assert k not in lost.keys("embeddings/")  # no artifact left behind that failed its check
    assert lost.status("w9", "it") == "PARTIAL"


def test_failed_job_is_retried_by_its_retryable_flag(make_harness) -> None:
    h = make_harness(faults=Faults(fail_retryable=1.0), overrides={"MAX_ATTEMPTS": "2"})
    h.put("uploads/w10/it/v.mp4")
    h.deliver()
    h.wait(lambda: h.item("w10", "it").get("dispatch_state") == "RETRY")
    assert {c["status"] for c in h.channels("w10", "it").values()} == {"PENDING"}
    h.clock.advance(3600)
    h.sweep()
    h.wait(lambda: h.status("w10", "it") == "QUARANTINED")
    item = h.item("w10", "it")
    assert (
        "2 dispatches failed" in item["quarantine_reason"] and "injected fault" in item["quarantine_reason"]
    )
    assert h.jobs("w10", "it") == 2
    assert {c["status"] for c in h.channels("w10", "it").values()} == {"QUARANTINED"}


def test_non_retryable_worker_error_fails_the_channels(lost: Harness) -> None:
    row = open_dispatch(lost, "w11", "it")
    err = json.dumps({"code": "media_error", "message": "not a readable media file", "retryable": False})
    out = lost.webhook(
        token_for(lost, "w11", "it", row["dispatch_id"]),
        {"id": row["job_id"], "status": "FAILED", "error": err},
    )
    assert out["statusCode"] == 200
    chans = lost.channels("w11", "it")
    assert {chans[c]["status"] for c in ("video_clip", "video_mae", "audio_wav2vec2", "transcript")} == {
        "FAILED"
    }
    assert chans["text_transcript"]["error"]["code"] == "dependency_failed"
    assert lost.status("w11", "it") == "PARTIAL" and lost.jobs("w11", "it") == 1


def test_a_concurrent_apply_of_the_same_result_still_completes_the_item(lost: Harness) -> None:
    """The webhook and the sweeper's poll can apply one result at once; whichever closes the dispatch
    first, the item ends COMPLETE."""
    row = open_dispatch(lost, "w12", "it")
    real = lost.ledger.release

    def racing(owner, item, dispatch_id, **kw):
        real(owner, item, dispatch_id, retry_at=None)  # the other apply closes it first, without a status
        return real(owner, item, dispatch_id, **kw)  # so this one loses its condition

    lost.ledger.release = racing
    out = lost.webhook(
        token_for(lost, "w12", "it", row["dispatch_id"]), lost.standin._body(lost.standin.jobs[row["job_id"]])
    )
    assert out["statusCode"] == 200
    assert lost.status("w12", "it") == "COMPLETE" and "dispatch_id" not in lost.item("w12", "it")


def _during_apply(h: Harness, action) -> None:
    """Run `action` right after the apply has read the item and written its channel rows."""
    real = h.ledger.finish_channels

    def finish_then_act(*args, **kw):
        out = real(*args, **kw)
        action()
        return out

    h.ledger.finish_channels = finish_then_act  # type: ignore[method-assign]


def test_an_item_removed_while_its_result_is_applied_stays_removed(lost: Harness) -> None:
    row = open_dispatch(lost, "w9", "it")
    _during_apply(lost, lambda: lost.ledger.mark_removed("w9", "it", "uploads/w9/it/v.mp4"))
    body = lost.standin._body(lost.standin.jobs[row["job_id"]])
    out = lost.webhook(token_for(lost, "w9", "it", row["dispatch_id"]), body)
    assert out["statusCode"] == 200, out
    item = lost.item("w9", "it")
    assert item["status"] == "REMOVED"  # the result, read before the removal, does not complete it
    assert "dispatch_id" not in item and "sweep" not in item  # and the dispatch is closed


def test_a_new_source_while_the_old_result_is_applied_is_dispatched_not_lost(lost: Harness) -> None:
    row = open_dispatch(lost, "w10", "it")

    def new_source() -> None:
        lost.put("uploads/w10/it/v.mp4", b"a new version of the source" * 3)
        lost.deliver()  # a dispatch is open: on_upload records the new source and waits

    _during_apply(lost, new_source)
    body = lost.standin._body(lost.standin.jobs[row["job_id"]])
    assert lost.webhook(token_for(lost, "w10", "it", row["dispatch_id"]), body)["statusCode"] == 200
    item = lost.item("w10", "it")
    assert item["status"] == "PROCESSING" and item["dispatch_state"] == "RETRY"  # not COMPLETE for v1
    lost.ledger.finish_channels = type(lost.ledger).finish_channels.__get__(lost.ledger)
    lost.sweep()  # due now: the new source is dispatched
    assert lost.jobs("w10", "it") == 2
    assert lost.item("w10", "it")["dispatch_hash"] == item["media_hash"]
