"""Reprocess, spec versions side by side, and the admin API, through the real handlers on moto: the
reprocess function behind the function-URL server (SigV4 checked), its queue pumped by the test."""

from __future__ import annotations

import dataclasses
import json
import time
from types import MappingProxyType

import numpy as np
import pytest

from shared import spec
from shared.pipeline import keys
from shared.pipeline.manifests import read_parquet
from shared.vectors import load_npy

from .harness import Harness


def new_recipe(monkeypatch, channel: str = "image_clip", **pp) -> str:
    """Deploy a spec where one channel's recipe changed: its fingerprint and the spec version move."""
    ch = spec.CHANNELS[channel]
    changed = dataclasses.replace(
        ch, preprocessing=MappingProxyType({**ch.preprocessing, **(pp or {"x": 1})})
    )
    chans = MappingProxyType({**spec.CHANNELS, channel: changed})
    monkeypatch.setattr(spec, "CHANNELS", chans)
    monkeypatch.setattr(spec, "SPEC_VERSION", spec.spec_version(chans))
    return spec.SPEC_VERSION


def ingest(h: Harness, owner: str, images: int = 3, videos: int = 1) -> list[str]:
    items = [f"img{i}" for i in range(images)] + [f"vid{i}" for i in range(videos)]
    for it in items:
        h.put(f"uploads/{owner}/{it}/{'p.png' if it.startswith('img') else 'v.mp4'}")
    h.deliver()
    h.wait(lambda: all(h.done(owner, it) for it in items), timeout=60)
    h.sweep()  # manifest + the owner's first version
    return items


def run_to_end(h: Harness, run_id: str, rounds: int = 40) -> dict:
    for _ in range(rounds):
        h.deliver_reprocess()
        status, run = h.admin("GET", f"/runs/{run_id}")
        assert status == 200
        if run["status"] == "finished":
            return run
        h.sweep()
    raise AssertionError(f"run did not finish: {run}")


def test_dry_run_then_run_new_version_side_by_side(h: Harness, monkeypatch) -> None:
    items = ingest(h, "rp1", images=3, videos=1)
    old = spec.SPEC_VERSION
    assert h.ledger.owner_state("rp1")["current_version"] == old
    old_manifest = h.s3.get_object(Bucket=h.bucket, Key=keys.manifest_key(old, "rp1"))["Body"].read()
    jobs_before = {it: h.jobs("rp1", it) for it in items}

    new = new_recipe(monkeypatch, "image_clip")
    status, dry = h.admin("POST", "/reprocess", {"scope": "owner", "owner_id": "rp1", "dry_run": True})
    assert status == 200 and dry["status"] == "dry_run" and dry["spec_version"] == new
    assert dry["item_count"] == 4  # every item: images re-run image_clip, the video's results are carried
    assert dry["channels"]["image_clip"] == 3 and dry["reasons"]["fingerprint_changed"] == 3
    assert dry["reasons"]["carry"] == dry["channel_count"] - 3
    assert dry["gpu_seconds"] == pytest.approx(3 * 0.01, abs=1e-6)  # each image's own measured seconds
    assert dry["cost_usd"] == pytest.approx(dry["gpu_seconds"] * 0.00116, abs=1e-4)
    assert h.ledger.owner_state("rp1")["current_version"] == old  # a dry run changes nothing
    assert h.keys(f"embeddings/{new}/") == []

    status, out = h.admin("POST", "/reprocess", {"scope": "owner", "owner_id": "rp1"})
    assert status == 202 and out["status"] == "queued" and out["spec_version"] == new
    assert out["item_count"] == dry["item_count"] and out["scope"] == "owner"
    # readers still read the old version while the new one fills in
    assert h.ledger.owner_state("rp1")["current_version"] == old
    run = run_to_end(h, out["run_id"])
    assert run["planned"] == 4 and run["done"] == 4 and run["failed"] == 0
    assert run["channels"] == dry["channels"]
    # the GPU did exactly what the dry run said: one new job per image, none for the video
    for it in items:
        assert h.jobs("rp1", it) == jobs_before[it] + (1 if it.startswith("img") else 0)
    h.sweep()
    state = h.ledger.owner_state("rp1")
    assert state["current_version"] == new and state["previous_version"] == old
    assert state["switches"] == 2  # its first version, then this switch: once
    pointer = json.loads(h.s3.get_object(Bucket=h.bucket, Key=keys.current_key("rp1"))["Body"].read())
    assert pointer["spec_version"] == new
    # side by side: the old manifest and vectors are untouched, the new ones complete
    assert h.s3.get_object(Bucket=h.bucket, Key=keys.manifest_key(old, "rp1"))["Body"].read() == old_manifest
    rows = read_parquet(h.s3.get_object(Bucket=h.bucket, Key=pointer["manifest_key"])["Body"].read())
    assert {r["spec_version"] for r in rows} == {new}
    assert all(r["embedding_key"].startswith(("embeddings/" + new, "transcripts/" + new)) for r in rows)
    assert {r["item_id"] for r in rows} == set(items)
    for it in items:
        for ch, row in h.channels("rp1", it).items():
            assert row["spec_version"] == new, (it, ch)
    # a carried vector is a copy of the old one, byte for byte
    old_key = keys.embedding_key(old, "video_mae", "rp1", "vid0")
    new_key = keys.embedding_key(new, "video_mae", "rp1", "vid0")
    get = lambda k: h.s3.get_object(Bucket=h.bucket, Key=k)["Body"].read()  # noqa: E731
    assert get(old_key) == get(new_key)

    # the same request again: nothing left to do, no GPU job
    status, again = h.admin("POST", "/reprocess", {"scope": "owner", "owner_id": "rp1"})
    assert status == 202
    run_to_end(h, again["run_id"])
    assert all(h.jobs("rp1", it) == jobs_before[it] + (1 if it.startswith("img") else 0) for it in items)


def test_same_request_twice_and_redelivered_pages_make_no_second_job(h: Harness, monkeypatch) -> None:
    items = ingest(h, "rp2", images=4, videos=0)
    new_recipe(monkeypatch, "image_clip")
    body = {"scope": "owner", "owner_id": "rp2", "force": True}
    s1, a = h.admin("POST", "/reprocess", body)
    s2, b = h.admin("POST", "/reprocess", body)  # a double submit while the first is open
    assert s1 == s2 == 202 and a["run_id"] == b["run_id"] and "already running" in b["message"]
    # every item message delivered twice (SQS is at-least-once)
    got = h.sqs.receive_message(QueueUrl=h.rq_url, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
    for m in got:
        h.sqs.send_message(QueueUrl=h.rq_url, MessageBody=m["Body"])
    run = run_to_end(h, a["run_id"])
    assert run["done"] == 4 and run["items"] == 4
    assert all(h.jobs("rp2", it) == 2 for it in items)  # ingest + exactly one forced re-run


def test_run_interrupted_half_way_resumes_without_duplicates(make_harness, monkeypatch) -> None:
    # 8-row pages (4 images a page) and no planning budget in the call: every page goes through the queue
    h = make_harness(overrides={"REPROCESS_PAGE_ROWS": "8", "REPROCESS_SYNC_S": "0"})
    items = ingest(h, "rp3", images=7, videos=0)
    new_recipe(monkeypatch, "image_clip")
    from shared.aws.ledger import Runs

    page_done = Runs.page_done
    crashed = []

    def crash_once_on_a_later_page(self, run_id, cursor, *a, **kw):
        if cursor and not crashed:
            crashed.append(cursor)
            raise RuntimeError("the planner died after queueing this page's items")
        return page_done(self, run_id, cursor, *a, **kw)

    monkeypatch.setattr(Runs, "page_done", crash_once_on_a_later_page)
    status, out = h.admin("POST", "/reprocess", {"scope": "owner", "owner_id": "rp3"})
    assert status == 202 and out["item_count"] is None  # planning continues through the queue
    run = run_to_end(h, out["run_id"])
    assert len(crashed) == 1  # the page message failed once; SQS delivered it again
    assert run["planned"] == 7 and run["done"] == 7 and run["items"] == 7
    assert all(h.jobs("rp3", it) == 2 for it in items)  # one re-run each, no duplicates


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"scope": "everything"}, 400, "scope"),
        ({"scope": "owner"}, 400, "owner_id"),
        ({"scope": "item", "owner_id": "o"}, 400, "item_id"),
        ({"scope": "owner", "owner_id": "../etc"}, 400, "owner_id"),
        ({"scope": "all", "since": "last tuesday"}, 400, "since"),
        ({"scope": "all", "force": "yes"}, 400, "force"),
        ({"scope": "owner", "owner_id": "nobody-here"}, 404, "owner_id"),
        ({"scope": "item", "owner_id": "nobody", "item_id": "x"}, 404, "item_id"),
        (["not", "an", "object"], 400, "body"),
    ],
)
def test_bad_requests_are_refused_with_the_field_named(h: Harness, body, status: int, field: str) -> None:
    got, out = h.admin("POST", "/reprocess", body)
    assert got == status and out["error"]["field"] == field
    assert "../etc" not in json.dumps(out) and "last tuesday" not in json.dumps(out)
    assert h.admin("GET", "/runs")[1]["runs"] == []  # nothing was recorded


def test_unsigned_or_forged_calls_never_reach_the_function(h: Harness) -> None:
    calls = []
    real = h.urls.handlers["reprocess"]
    h.urls.handlers["reprocess"] = lambda e, c: calls.append(e) or real(e, c)
    status, _ = h.admin("GET", "/runs", sign=False)
    assert status == 403 and calls == []
    import urllib.request

    from botocore.credentials import Credentials

    from shared.aws import sigv4

    url = h.urls.url("reprocess") + "/reprocess"
    body = json.dumps({"scope": "all", "dry_run": True}).encode()
    for creds, sent in (
        (Credentials("testing", "wrong-secret"), body),  # wrongly signed
        (Credentials("testing", "testing"), body.replace(b"true", b"false")),  # body changed after signing
        (Credentials("someone", "testing"), body),  # an unknown key
    ):
        headers = sigv4.sign("POST", url, body, creds, "us-east-1", {"Content-Type": "application/json"})
        req = urllib.request.Request(url, data=sent, method="POST", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 403
    assert calls == []
    assert h.admin("GET", "/runs")[0] == 200 and len(calls) == 1


def test_replay_of_a_quarantined_item(make_harness) -> None:
    from shared.dev.runpod_standin import Faults

    h = make_harness(faults=Faults(fail_retryable=1.0), overrides={"MAX_ATTEMPTS": "1"})
    h.put("uploads/rp5/bad/p.png")
    h.deliver()
    h.wait(lambda: h.status("rp5", "bad") == "QUARANTINED")
    status, out = h.admin("GET", "/quarantined?owner_id=rp5")
    assert status == 200 and [i["item_id"] for i in out["items"]] == ["bad"]
    assert out["items"][0]["channels"]["image_clip"]["status"] == "QUARANTINED"
    h.standin.faults.fail_retryable = 0.0
    status, run = h.admin("POST", "/replay", {"owner_id": "rp5", "item_id": "bad"})
    assert status == 202 and run["item_count"] == 1
    done = run_to_end(h, run["run_id"])
    assert done["done"] == 1 and h.status("rp5", "bad") == "COMPLETE"
    assert h.item("rp5", "bad")["attempts"] == 1  # a replay starts with fresh attempts
    assert h.admin("GET", "/quarantined?owner_id=rp5")[1]["items"] == []


def test_person_query_is_the_mean_of_ready_photos(h: Harness) -> None:
    for name in ("a.jpg", "b.jpg", "c.png"):
        h.put(f"persons/pp1/alice/{name}")
    h.deliver()
    photos = [keys.photo_item_id("alice", n) for n in ("a.jpg", "b.jpg", "c.png")]
    h.wait(lambda: all(h.done("pp1", p) for p in photos))
    h.sweep()
    person = keys.person_item_id("alice")

    def vec(key: str) -> np.ndarray:
        return load_npy(h.s3.get_object(Bucket=h.bucket, Key=key)["Body"].read(), "v")

    def expected(names) -> np.ndarray:
        m = np.mean(
            [
                vec(h.channels("pp1", keys.photo_item_id("alice", n))["image_clip"]["artifact_key"])
                for n in names
            ],
            axis=0,
        )
        return m / np.linalg.norm(m)

    row = h.channels("pp1", person)["person_query"]
    assert row["status"] == "SUCCEEDED" and row["photos"] == 3
    assert row["artifact_key"] == keys.embedding_key(spec.SPEC_VERSION, "person_query", "pp1", person)
    assert row["artifact_key"].endswith("/persons/alice.npy")
    q = vec(row["artifact_key"])
    np.testing.assert_allclose(q, expected(["a.jpg", "b.jpg", "c.png"]), atol=1e-6)
    assert abs(float(np.linalg.norm(q)) - 1.0) < 1e-5
    assert h.status("pp1", person) == "COMPLETE"

    h.s3.delete_object(Bucket=h.bucket, Key="persons/pp1/alice/b.jpg")
    h.deliver()
    h.sweep()
    q2 = vec(h.channels("pp1", person)["person_query"]["artifact_key"])
    np.testing.assert_allclose(q2, expected(["a.jpg", "c.png"]), atol=1e-6)
    assert float(np.dot(q, q2)) < 0.9999  # it changed

    for name in ("a.jpg", "c.png"):
        h.s3.delete_object(Bucket=h.bucket, Key=f"persons/pp1/alice/{name}")
    h.deliver()
    h.sweep()
    row = h.channels("pp1", person)["person_query"]
    assert row["status"] == "FAILED" and row["error"]["code"] == "no_ready_photos"
    assert "no READY reference photo" in row["error"]["message"] or "no reference" in row["error"]["message"]
    assert keys.embedding_key(spec.SPEC_VERSION, "person_query", "pp1", person) not in h.keys("embeddings/")


def test_reprocess_covers_persons(h: Harness, monkeypatch) -> None:
    for name in ("a.jpg", "b.jpg"):
        h.put(f"persons/pp2/bob/{name}")
    h.put("uploads/pp2/pic/p.png")
    h.deliver()
    photos = [keys.photo_item_id("bob", n) for n in ("a.jpg", "b.jpg")]
    h.wait(lambda: all(h.done("pp2", p) for p in [*photos, "pic"]))
    h.sweep()
    person = keys.person_item_id("bob")
    assert h.channels("pp2", person)["person_query"]["status"] == "SUCCEEDED"
    new = new_recipe(monkeypatch, "image_clip")
    status, dry = h.admin("POST", "/reprocess", {"scope": "owner", "owner_id": "pp2", "dry_run": True})
    assert status == 200 and dry["item_count"] == 4  # two photos, the person, the picture
    assert dry["channels"] == {"image_clip": 3, "person_query": 1}
    status, out = h.admin("POST", "/reprocess", {"scope": "owner", "owner_id": "pp2"})
    run = run_to_end(h, out["run_id"])
    assert run["done"] == 4 and run["failed"] == 0
    for _ in range(5):
        h.sweep()
    row = h.channels("pp2", person)["person_query"]
    assert row["status"] == "SUCCEEDED" and row["spec_version"] == new and row["photos"] == 2
    assert h.ledger.owner_state("pp2")["current_version"] == new


def test_an_owner_whose_results_are_all_carried_switches_without_gpu_work(h: Harness, monkeypatch) -> None:
    items = ingest(h, "rp6", images=0, videos=2)
    jobs = {it: h.jobs("rp6", it) for it in items}
    new = new_recipe(monkeypatch, "image_clip")  # no video channel changed
    status, dry = h.admin("POST", "/reprocess", {"scope": "owner", "owner_id": "rp6", "dry_run": True})
    assert status == 200 and dry["gpu_seconds"] == 0 and set(dry["reasons"]) == {"carry"}
    status, out = h.admin("POST", "/reprocess", {"scope": "owner", "owner_id": "rp6"})
    assert status == 202
    run = run_to_end(h, out["run_id"])
    assert run["done"] == 2 and {it: h.jobs("rp6", it) for it in items} == jobs
    h.sweep()
    assert h.ledger.owner_state("rp6")["current_version"] == new


def test_a_forced_run_recomputes_text_channels_from_the_new_transcript_once(h: Harness) -> None:
    ingest(h, "rp7", images=0, videos=1)
    before = h.channels("rp7", "vid0")
    status, out = h.admin("POST", "/reprocess", {"scope": "owner", "owner_id": "rp7", "force": True})
    assert status == 202
    run = run_to_end(h, out["run_id"])
    assert run["done"] == 1 and h.jobs("rp7", "vid0") == 2
    after = h.channels("rp7", "vid0")
    for ch in ("transcript", "text_transcript"):
        assert after[ch]["run_id"] == out["run_id"], ch
        assert after[ch]["attempts"] == before[ch]["attempts"] + 1, ch
    # the text channel was computed from the re-run transcript, not from the one it replaced
    assert after["text_transcript"]["updated_at"] >= after["transcript"]["updated_at"]


def test_planning_from_the_fetched_fields_equals_planning_from_whole_rows(make_harness) -> None:
    """The planner's page reader fetches only PLAN_FIELDS: every state a row can be in plans exactly as
    from the whole rows (reasons, counts, skips, estimate, work list), forced or not, with `since`.
    Planning is the state machine's: it runs on the in-memory ledger (~1,000 rows read some forty
    times); that both adapters project a page alike is the ledger contract suite's
    (test_ledger_contract.py, owner_page with fields)."""
    from shared.pipeline import plan
    from shared.pipeline.reprocess import PagePlan, Reprocessor, Request

    old = "2026-01-01-00000000"
    noise = {"artifact_key": "embeddings/x.npy", "sha256": "0" * 64, "bytes": 9, "attempts": 2, "note": "n"}
    rows = []

    first = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"  # every first character

    def item(i: int, it: str | None = None, **fields):
        it = it or f"{first[i % len(first)]}t{i:03d}"
        base = {"pk": f"pf#{it}", "owner_id": "pf", "item_id": it, "updated_at": f"2026-11-{10 + i % 20:02d}"}
        rows.append({**base, "sk": "ITEM", "osk": f"{it}#ITEM", "kind": "upload", **noise, **fields})
        return base

    def channel(base: dict, ch: str, **fields):
        rows.append(
            {**base, "sk": f"CH#{ch}", "osk": f"{base['item_id']}#CH#{ch}", "channel": ch, **noise, **fields}
        )

    states = [
        {"status": "SUCCEEDED", "spec_version": spec.SPEC_VERSION},  # current
        {"status": "SUCCEEDED", "spec_version": old},  # carry
        {"status": "SUCCEEDED", "fingerprint": "stale"},  # fingerprint changed
        {"status": "FAILED", "error": {"code": "internal_error", "retryable": True}},
        {"status": "FAILED", "error": {"code": "media_error", "retryable": False}},
        {"status": "QUARANTINED", "error": {"code": "timeout", "retryable": True}},
        {"status": "DISPATCHED"},
        {"status": "PENDING", "gpu_seconds": 0.5},
        {"status": "SUCCEEDED", "run_id": "r1", "gpu_seconds": 1.25},
    ]
    n = 0
    for modality, meta in (("image", None), ("video", None), ("image", "hmeta"), ("video", "hmeta")):
        inputs = plan.ItemInputs(modality, f"h{modality}", meta)
        chans = plan.applicable(inputs, spec.CHANNELS)
        hashes = plan.input_hashes(inputs, chans)
        for state in states:
            for item_fields in (
                {},
                {"dispatch_state": "SUBMITTED"},
                {"status": "QUARANTINED"},
                {"run_id": "r1"},
                {"run_counted": "r1"},
            ):
                base = item(
                    n,
                    modality=modality,
                    media_hash=f"h{modality}",
                    **({"meta_hash": meta} if meta else {}),
                    **{"status": "COMPLETE", **item_fields},
                )
                n += 1
                for k, ch in enumerate(chans):
                    fields = {"status": "SUCCEEDED", "spec_version": spec.SPEC_VERSION, "gpu_seconds": 0.1}
                    if k == n % len(chans):
                        fields = {"spec_version": spec.SPEC_VERSION, **state}
                    ident = {"input_hash": hashes[ch], "fingerprint": spec.CHANNELS[ch].fingerprint}
                    channel(base, ch, **{**ident, **fields})
    item(n, status="REMOVED", modality="image", media_hash="himage")
    person = item(n + 1, "@person", kind="person", status="COMPLETE")
    channel(person, "person_query", status="SUCCEEDED", spec_version=old)
    rows.append({"pk": "pf#~", "sk": "MANIFEST", "manifest_owner": "pf", "directory": "owners"})  # scope all
    h = make_harness(ledger="memory")
    for r in rows:
        h.ledger.table.put(r)

    r = Reprocessor(h.pipeline, h.sqs)
    assert r.fields is not None
    fetched = [
        row
        for groups, _ in r.pages(Request("owner", "pf"))
        for i, chans in groups
        for row in (i, *chans.values())
    ]
    assert fetched and not any(
        "artifact_key" in row or "note" in row for row in fetched
    )  # only what plans read
    assert any(row.get("channel") == "text_meta" for row in fetched)
    r.fields = None
    whole = {
        (row["pk"], row["sk"]): row
        for groups, _ in r.pages(Request("owner", "pf"))
        for i, chans in groups
        for row in (i, *chans.values())
    }
    r.fields = Reprocessor.fields
    assert len(whole) == len(fetched)
    for row in fetched:  # what osk implies (keys, item_id, channel) is rebuilt exactly
        assert row == {k: whole[row["pk"], row["sk"]][k] for k in row}
        assert {"pk", "sk", "owner_id", "osk", "item_id"} <= set(row)
    for req in (Request("all"), Request("owner", "pf", force=True), Request("all", since="2026-11-20")):
        for force in (False, True, "r1"):
            got = []
            for fields in (r.fields, None):
                r.fields = fields
                total, work = PagePlan(), []
                for groups, _ in r.pages(req):
                    page = r.plan_page(req, groups, force, run_id="r1" if force == "r1" else None)
                    total.add(page)
                    work += page.work
                got.append((total.counts(), total.channels, total.reasons, round(total.gpu_seconds, 6), work))
                r.fields = Reprocessor.fields
            assert got[0] == got[1], (req, force)
            assert got[0][0]["planned"] > 0
    dry = r.dry_run(Request("all"))
    r.fields = None
    assert r.dry_run(Request("all")) == dry
    r.fields = Reprocessor.fields
    # a dry run reads slices side by side (owners; one owner by its item ids' first characters) and
    # merges them in ledger order: the same answer as one stream, and as planning the pages in order
    for req in (
        Request("all"),
        Request("owner", "pf"),
        Request("owner", "pf", force=True),
        Request("owner", "pf", since="2026-11-20"),
    ):
        total = PagePlan()
        for groups, _ in r.pages(req):
            total.add(r.plan_page(req, groups, req.force, collect=False))
        answers = []
        for streams in (1, 2, 3, 8):
            for page_rows in (1000, 1):  # 1: pages of one whole item (MAX_ITEM_ROWS), items cut at page ends
                settings = h.pipeline.settings
                r.settings = dataclasses.replace(
                    settings, reprocess_read_streams=streams, reprocess_page_rows=page_rows
                )
                answers.append(r.dry_run(req))
        r.settings = h.pipeline.settings
        diffs = [{k: (a[k], answers[0][k]) for k in a if a[k] != answers[0][k]} for a in answers]
        assert not any(diffs), (req, diffs)
        assert answers[0]["item_count"] == total.planned and answers[0]["items_in_scope"] == total.items > 0


@pytest.mark.parametrize("streams", [2, 8])
def test_a_dry_run_whose_read_fails_in_one_slice_fails_with_it(h: Harness, monkeypatch, streams) -> None:
    """Slices are read side by side: a store error in one (here the item ids starting g-m) is the dry
    run's error, the others stop, and nothing waits forever."""
    from shared.aws.clients import StoreError
    from shared.aws.ledger import MAX_ITEM_ROWS, _av
    from shared.pipeline.reprocess import Reprocessor, Request

    pages = 10  # of the slice _-f, one-row items, pages of MAX_ITEM_ROWS rows
    ids = [f"a{i:03d}" for i in range(pages * MAX_ITEM_ROWS)] + ["h1", "t1"]
    for it in ids:
        row = {"pk": f"pf#{it}", "sk": "ITEM", "osk": f"{it}#ITEM", "owner_id": "pf", "item_id": it}
        row.update(kind="upload", modality="image", media_hash="h", status="COMPLETE")
        h.ledger.db.put_item(TableName=h.settings.table, Item={k: _av(v) for k, v in row.items()})
    r = Reprocessor(h.pipeline, h.sqs)
    settings = h.pipeline.settings
    r.settings = dataclasses.replace(settings, reprocess_read_streams=streams, reprocess_page_rows=1)
    assert r.dry_run(Request("owner", "pf"))["items_in_scope"] == len(ids)
    read = r.ledger.owner_page
    reads: list[tuple[str, str] | None] = []

    def failing(owner, start, limit, fields=None, segment=None):
        reads.append(segment)
        if segment == ("g", "m"):
            raise StoreError("ledger query: throttled")
        time.sleep(0.02)  # the slice beside it is slow: it must stop, not read all its pages
        return read(owner, start, limit, fields, segment)

    monkeypatch.setattr(r.ledger, "owner_page", failing)
    with pytest.raises(StoreError, match="throttled"):
        r.dry_run(Request("owner", "pf"))
    assert ("g", "m") in reads and reads.count(("_", "f")) < pages
    assert ("t", "z") not in reads or streams == 8  # with 2 streams, no slice starts after the failure
