"""on_upload through the real handler on moto: the events S3 really sends, and what must never happen."""

from __future__ import annotations

import json

import pytest

from shared import spec
from shared.pipeline import keys
from shared.pipeline.ledger import UNOWNED
from shared.pipeline.manifests import read_parquet
from shared.pipeline.refusals import REASONS
from tests.integration.pipeline.harness import Harness

pytestmark = pytest.mark.integration

VIDEO_GPU = ["video_clip", "video_mae", "audio_wav2vec2", "transcript"]


def record(h: Harness, key: str, name: str = "ObjectCreated:Put", seq: str | None = None) -> dict:
    from urllib.parse import quote_plus

    obj = {"key": quote_plus(key, safe="/"), "size": 64, "eTag": "x"}
    if seq is not None:
        obj["sequencer"] = seq
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventName": name,
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": h.bucket}, "object": obj},
    }


def test_upload_dispatches_one_job_and_completes(h: Harness) -> None:
    h.put("uploads/o1/clip/clip.mp4")
    assert h.deliver() == 1
    h.wait(lambda: h.done("o1", "clip"))
    assert h.status("o1", "clip") == "COMPLETE"
    chans = h.channels("o1", "clip")
    assert sorted(chans) == sorted([*VIDEO_GPU, "text_transcript"])
    assert {c["status"] for c in chans.values()} == {"SUCCEEDED"}
    assert h.jobs("o1", "clip") == 1
    assert h.keys("manifests/") == []  # the sweeper writes manifests, once per burst of completions
    assert h.sweep() == {"manifest": 1}
    assert f"manifests/{spec.SPEC_VERSION}/o1/manifest.parquet" in h.keys("manifests/")
    item = h.item("o1", "clip")
    assert "dispatch_id" not in item and "sweep" not in item  # the dispatch is closed


@pytest.mark.parametrize("file", ["my clip (1).mp4", "a+b.mp4", "ünïcødé 東京.mp4", "spaces  twice.mov"])
def test_keys_s3_really_sends_are_decoded(h: Harness, file: str) -> None:
    h.put(f"uploads/o2/item-1/{file}")
    h.deliver()
    h.wait(lambda: h.done("o2", "item-1"))
    assert h.item("o2", "item-1")["media_key"] == f"uploads/o2/item-1/{file}"
    assert h.status("o2", "item-1") == "COMPLETE"


def test_several_records_in_one_message_each_handled(h: Harness) -> None:
    for i in ("a", "b"):
        h.s3.put_object(Bucket=h.bucket, Key=f"manual/{i}", Body=b"x")  # outside the notification prefixes
        h.s3.copy_object(
            Bucket=h.bucket,
            Key=f"uploads/o3/{i}/v.mp4",
            CopySource={"Bucket": h.bucket, "Key": f"manual/{i}"},
        )
    h.deliver()  # the copies' own notifications
    body = {
        "Records": [
            record(h, "uploads/o3/a/v.mp4"),
            record(h, "uploads/o3/../x/v.mp4"),
            record(h, "uploads/o3/b/v.mp4"),
        ]
    }
    h.send(json.dumps(body))
    h.deliver()
    h.wait(lambda: h.done("o3", "a") and h.done("o3", "b"))
    assert h.jobs("o3", "a") == 1 and h.jobs("o3", "b") == 1  # duplicates of the copies' events: no new job


def test_a_message_delivered_three_times_starts_one_gpu_job(h: Harness) -> None:
    h.put("uploads/o4/dup/v.mp4")
    h.deliver()
    body = json.dumps({"Records": [record(h, "uploads/o4/dup/v.mp4")]})
    for _ in range(3):
        h.send(body)
    h.deliver()  # while the first job may still be in flight
    h.wait(lambda: h.done("o4", "dup"))
    for _ in range(3):
        h.send(body)
    h.deliver()  # and after it completed
    assert h.jobs("o4", "dup") == 1
    attempts = {n: c["attempts"] for n, c in h.channels("o4", "dup").items()}
    assert set(attempts.values()) == {1}, attempts


def test_older_event_after_newer_does_not_regress(h: Harness) -> None:
    key = "uploads/o5/it/v.mp4"
    h.put(key, b"old" * 30)
    h.deliver()
    h.wait(lambda: h.done("o5", "it"))
    h.put(key, b"new" * 30)
    h.deliver()
    h.wait(lambda: h.done("o5", "it") and h.jobs("o5", "it") == 2)
    new_hash = h.item("o5", "it")["media_hash"]
    # the older version's event arrives late (moto's carry no sequencer: the HEAD says what is current)
    h.send(json.dumps({"Records": [record(h, key)]}))
    h.deliver()
    assert h.item("o5", "it")["media_hash"] == new_hash and h.jobs("o5", "it") == 2
    # with S3's sequencer: an event older than the recorded one is refused outright
    h.send(json.dumps({"Records": [record(h, key, seq="0055B39E6E")]}))
    h.deliver()
    h.send(json.dumps({"Records": [record(h, key, seq="0055B39E6D")]}))
    h.deliver()
    assert h.item("o5", "it")["media_hash"] == new_hash and h.jobs("o5", "it") == 2


def test_s3_test_event_is_consumed(h: Harness) -> None:
    h.send(
        json.dumps(
            {
                "Service": "Amazon S3",
                "Event": "s3:TestEvent",
                "Time": "2026-01-01T00:00:00Z",
                "Bucket": h.bucket,
            }
        )
    )
    out = h.pump.deliver_once(wait_s=0)
    assert out == 1 and h.pump.failures == 0
    assert (
        h.sqs.get_queue_attributes(QueueUrl=h.queue_url, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]["ApproximateNumberOfMessages"]
        == "0"
    )


def test_removal_marks_the_item(h: Harness) -> None:
    h.put("uploads/o6/gone/v.mp4")
    h.deliver()
    h.wait(lambda: h.done("o6", "gone"))
    h.s3.delete_object(Bucket=h.bucket, Key="uploads/o6/gone/v.mp4")
    h.deliver()
    item = h.item("o6", "gone")
    assert item["status"] == "REMOVED" and item["removed_key"] == "uploads/o6/gone/v.mp4"
    assert h.pump.failures == 0
    # removal of a file that is not the item's source changes nothing
    h.send(json.dumps({"Records": [record(h, "uploads/o6/other/v.mp4", "ObjectRemoved:Delete")]}))
    h.deliver()
    assert h.item("o6", "other") is None


def test_a_removed_item_leaves_the_owners_manifest(h: Harness) -> None:
    def manifest_items() -> set[str]:
        key = keys.manifest_key(spec.SPEC_VERSION, "o7")
        return {r["item_id"] for r in read_parquet(h.s3.get_object(Bucket=h.bucket, Key=key)["Body"].read())}

    for item in ("kept", "gone"):
        h.put(f"uploads/o7/{item}/photo.jpg")
    h.deliver()
    h.wait(lambda: h.done("o7", "kept") and h.done("o7", "gone"))
    assert h.sweep() == {"manifest": 1} and manifest_items() == {"kept", "gone"}
    h.s3.delete_object(Bucket=h.bucket, Key="uploads/o7/gone/photo.jpg")
    h.deliver()
    assert h.sweep() == {"manifest": 1}  # the removal alone marks the manifest for a rebuild
    assert manifest_items() == {"kept"}
    assert "uploads/o7/gone/photo.jpg" not in h.keys("uploads/")
    assert any(k.startswith("embeddings/") and "/o7/gone" in k for k in h.keys("embeddings/"))  # kept


@pytest.mark.parametrize(
    "key",
    [
        "uploads/o7/../x/v.mp4",
        "uploads/o7/it/../v.mp4",
        "uploads/bad id/it/v.mp4",
        "uploads//it/v.mp4",
        "uploads/o7/" + "x" * 65 + "/v.mp4",
        "other/o7/it/v.mp4",
        "uploads/o7/it/notes.exe",
        "uploads/o7/it/.hidden.mp4",
        "uploads/o7/it/deep/v.mp4",
        "persons/o7/p1/voice.mp3",
    ],
)
def test_traversal_invalid_ids_and_foreign_keys_are_refused_once(h: Harness, key: str) -> None:
    h.send(json.dumps({"Records": [record(h, key)]}))
    assert h.pump.deliver_once(wait_s=0) == 1
    assert h.pump.failures == 0  # refused and consumed: never retried
    assert h.deliver() == 0
    assert list(h.ledger.owner_rows("o7")) == [] and h.standin.calls["run"] == 0
    # recorded where the operator looks (`se status`, the admin console): under o7 when the key names
    # it as its owner, else under the pseudo-owner; the DynamoDB rows as the memory ledger's
    owner = "o7" if key.startswith(("uploads/o7/", "persons/o7/")) else UNOWNED
    (row,) = h.pipeline.refusals.of(owner, 10)
    assert row["key"] == key and row["reason"] in REASONS and row["seq"] == 1
    assert h.pipeline.refusals.owners() == [owner]


def test_a_record_of_another_bucket_is_refused(h: Harness) -> None:
    rec = record(h, "uploads/o8/it/v.mp4")
    rec["s3"]["bucket"]["name"] = "someone-elses-bucket"
    h.send(json.dumps({"Records": [rec]}))
    h.deliver()
    assert h.item("o8", "it") is None and h.pump.failures == 0


def test_poison_message_fails_alone_and_reaches_the_dlq(h: Harness) -> None:
    h.put("uploads/o9/good/v.mp4")
    h.send("this is not json {")
    h.send(json.dumps({"Records": "not a list"}))
    for _ in range(12):  # maxReceiveCount is 5 in template.yaml
        h.pump.deliver_once(wait_s=0)
    h.wait(lambda: h.done("o9", "good"))
    dlq = h.sqs.receive_message(QueueUrl=h.dlq_url, MaxNumberOfMessages=10).get("Messages", [])
    assert sorted(m["Body"] for m in dlq) == sorted(
        ["this is not json {", json.dumps({"Records": "not a list"})]
    )
    assert h.jobs("o9", "good") == 1


def test_meta_json_feeds_text_meta_then_text_fused(h: Harness, text_model) -> None:
    meta = {"title": "Garden", "description": "watering plants", "query": "plant care"}
    h.put("uploads/o10/it/meta.json", json.dumps(meta).encode())
    h.deliver()
    chans = h.channels("o10", "it")
    assert chans["text_meta"]["status"] == "SUCCEEDED" and "text_fused" not in chans
    assert h.status("o10", "it") == "COMPLETE"  # meta only: its one channel is done
    h.put("uploads/o10/it/clip.mp4")
    h.deliver()
    h.wait(lambda: "text_fused" in h.channels("o10", "it") and h.done("o10", "it"))
    chans = h.channels("o10", "it")
    assert {c: chans[c]["status"] for c in ("text_meta", "text_transcript", "text_fused")} == dict.fromkeys(
        ("text_meta", "text_transcript", "text_fused"), "SUCCEEDED"
    )
    import numpy as np

    from shared.vectors import load_npy

    vec = load_npy(
        h.s3.get_object(Bucket=h.bucket, Key=chans["text_meta"]["artifact_key"])["Body"].read(), "m"
    )
    expected = text_model.embed(["Garden [SEP] watering plants [SEP] plant care"])[0]
    assert float(np.dot(vec, expected)) > 0.9999


def test_bad_meta_json_fails_its_channel_with_a_reason(h: Harness) -> None:
    h.put("uploads/o11/it/meta.json", b"{not json")
    h.deliver()
    ch = h.channels("o11", "it")["text_meta"]
    assert ch["status"] == "FAILED" and "not valid JSON" in ch["error"]["message"]
    assert h.keys("embeddings/") == [] and h.pump.failures == 0


def test_a_burst_of_completions_marks_the_owners_manifest_once(make_harness) -> None:
    h = make_harness(overrides={"MANIFEST_DELAY_S": "60"})
    marks: list[float] = []
    real = h.ledger.mark_manifest
    h.ledger.mark_manifest = lambda owner, due: marks.append(due) or real(owner, due)  # type: ignore[method-assign]
    for i in range(3):
        h.put(f"uploads/mb/p{i}/photo.jpg")
    h.deliver()
    h.wait(lambda: all(h.done("mb", f"p{i}") for i in range(3)))
    assert len(marks) == 1  # the rebuild due in 60 s reads all three; one write says so
    due = h.ledger.owner_state("mb")["due_at"]
    h.clock.advance(50)  # within the margin before the rebuild: this completion marks again
    h.put("uploads/mb/p3/photo.jpg")
    h.deliver()
    h.wait(lambda: h.done("mb", "p3"))
    h.wait(lambda: len(marks) == 2)  # the webhook's thread marks just after it writes the status
    assert h.ledger.owner_state("mb")["due_at"] == due  # still the first due time
    assert h.sweep() == {}  # not due yet
    h.clock.advance(11)
    assert h.sweep() == {"manifest": 1}
    import io

    import pyarrow.parquet as pq

    body = h.s3.get_object(Bucket=h.bucket, Key=f"manifests/{spec.SPEC_VERSION}/mb/manifest.parquet")["Body"]
    assert sorted(set(pq.read_table(io.BytesIO(body.read())).column("item_id").to_pylist())) == [
        f"p{i}" for i in range(4)
    ]


def test_a_rebuild_marked_due_sooner_elsewhere_is_marked_again_before_it(make_harness) -> None:
    h = make_harness(overrides={"MANIFEST_DELAY_S": "60"})
    h.ledger.mark_manifest("mc", h.clock() + 5)  # another function's mark: due in 5 s, not 60
    marks: list[float] = []
    real = h.ledger.mark_manifest
    h.ledger.mark_manifest = lambda owner, due: marks.append(due) or real(owner, due)  # type: ignore[method-assign]
    h.put("uploads/mc/a/photo.jpg")
    h.deliver()
    h.wait(lambda: h.done("mc", "a"))
    h.clock.advance(4)  # past (5 s - margin): the stored due time counts, not this process's own
    h.put("uploads/mc/b/photo.jpg")
    h.deliver()
    h.wait(lambda: h.done("mc", "b"))
    assert len(marks) == 2
