"""One contract for the ledger's two storage adapters: every test runs on DynamoDB (moto, a table made
from template.yaml's LedgerTable) and on the in-memory table (shared.dev.memory_ledger), with the same
assertions, so the state machine means the same on both: each transition's condition (who wins, what
is refused), what a write leaves, the indexes' order, sparseness and paging, values as DynamoDB keeps
them, and the reasons a transaction is cancelled for."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shared import spec
from shared.aws.clients import StoreError
from shared.aws.ledger import DynamoTable
from shared.dev.memory_ledger import KEY_TYPES, MemoryTable
from shared.dev.stack import load_template
from shared.pipeline import ledger_table as lt
from shared.pipeline.ledger import (
    CLAIMED,
    COMPLETE,
    DUE,
    ITEM_SK,
    OSK_SEGMENTS,
    PROCESSING,
    QUARANTINED,
    REMOVED,
    RETRY,
    SUBMITTED,
    Ledger,
    Runs,
    channel_sk,
)
from shared.pipeline.plan import DISPATCHED, FAILED, PENDING, SUCCEEDED

pytestmark = pytest.mark.integration

GPU = ["audio_wav2vec2", "transcript", "video_clip"]  # sorted: rows(...) answers them in key order
LAMBDA = next(n for n, ch in spec.CHANNELS.items() if ch.runs_on == "lambda")


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def ledger_table_props() -> dict[str, Any]:
    (table,) = (r for r in load_template()["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table")
    return table["Properties"]


@pytest.fixture(scope="module")
def dynamodb(moto_server) -> Any:
    return moto_server.client("dynamodb")


@pytest.fixture(params=["memory", "dynamodb"])
def table(request) -> Iterator[lt.Table]:
    if request.param == "memory":
        yield MemoryTable()
        return
    db = request.getfixturevalue("dynamodb")
    name = f"ledger-{uuid.uuid4().hex[:10]}"
    props = request.getfixturevalue("ledger_table_props")
    db.create_table(
        TableName=name,
        KeySchema=props["KeySchema"],
        AttributeDefinitions=props["AttributeDefinitions"],
        GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
        BillingMode=props["BillingMode"],
    )
    yield DynamoTable(db, name)
    db.delete_table(TableName=name)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(table, clock) -> Ledger:
    return Ledger(table, clock=clock)


def media(ledger: Ledger, owner: str = "o", item: str = "it", **kw: Any) -> dict[str, Any] | None:
    args = dict(
        kind="upload",
        modality="video",
        key=f"uploads/{owner}/{item}/v.mp4",
        etag="e1",
        size=10,
        mtime="2026-01-01T00:00:00.000Z",
        media_hash="h1",
        seq=None,
    )
    return ledger.record_media(owner, item, **{**args, **kw})


def claim(ledger: Ledger, owner: str = "o", item: str = "it", channels=GPU, **kw: Any) -> str | None:
    args = dict(
        channels=channels,
        input_hashes={ch: f"in-{ch}" for ch in channels},
        dispatch_hash="h1",
        deadline=ledger.clock() + 60,
    )
    return ledger.claim(owner, item, **{**args, **kw})


# ------------------------------------------------------------------------------------ the table itself


def test_the_memory_tables_keys_are_the_templates(ledger_table_props) -> None:
    types = {a["AttributeName"]: a["AttributeType"] for a in ledger_table_props["AttributeDefinitions"]}
    assert types == KEY_TYPES
    gsis = {
        g["IndexName"]: tuple(k["AttributeName"] for k in g["KeySchema"])
        for g in ledger_table_props["GlobalSecondaryIndexes"]
    }
    assert {k: v for k, v in lt.INDEXES.items() if k is not None} == gsis
    assert lt.INDEXES[None] == tuple(k["AttributeName"] for k in ledger_table_props["KeySchema"])


def test_values_read_back_as_dynamodb_keeps_them(table) -> None:
    key = {lt.PK: "o#it", lt.SK: "X"}
    upd = lt.Update().set(
        whole=2.0, half=0.5, n=3, s="", t=True, tags={"b", "a"}, m={"a": None, "b": [1.0, "x"]}, none=None
    )
    row = table.update(key, upd, return_new=True)
    assert row == table.get(key)
    assert row == {
        lt.PK: "o#it",
        lt.SK: "X",
        "whole": 2,
        "half": 0.5,
        "n": 3,
        "s": "",
        "t": True,
        "tags": ["a", "b"],
        "m": {"b": [1, "x"]},
    }
    assert type(row["whole"]) is int and type(row["half"]) is float
    # numbers are decimals: 0.1 + 0.2 is 0.3
    table.update(key, lt.Update().increment("f", 0.1))
    assert table.update(key, lt.Update().increment("f", 0.2), return_new=True)["f"] == 0.3
    assert table.update(key, lt.Update().add("n", 2).add("tags", {"c"}), return_new=True)["tags"] == [
        "a",
        "b",
        "c",
    ]
    assert table.get(key)["n"] == 5


def test_conditions_across_types_and_missing_attributes(table) -> None:
    key = {lt.PK: "o#it", lt.SK: "X"}
    table.update(key, lt.Update().set(n=1, s="1", b=False, tags={"a"}))

    def ok(c: lt.Condition) -> bool:
        return bool(table.update(key, lt.Update().set(touched=True), c))

    assert not ok(lt.eq("n", "1")) and ok(lt.ne("n", "1")) and ok(lt.eq("n", 1.0))
    # (an order across types, n < "2", is false on DynamoDB; moto 5.2.6 answers it with a 500)
    assert ok(lt.lt("n", 2)) and ok(lt.lt("s", "2")) and not ok(lt.gt("s", "2"))
    assert ok(lt.eq("b", False)) and not ok(lt.eq("b", True))  # (b = 0: false on DynamoDB, true on moto)
    assert ok(lt.ne("absent", "x")) and not ok(lt.eq("absent", "x")) and not ok(lt.lt("absent", 5))
    assert ok(lt.contains("tags", "a")) and not ok(lt.contains("tags", "b")) and ok(lt.contains("s", "1"))
    assert ok(lt.between("n", 0, 1)) and not ok(lt.between("n", 2, 3)) and ok(lt.begins_with("s", ""))
    assert ok(~lt.exists("absent") & (lt.eq("n", 2) | lt.eq("s", "1")))
    # a condition on a row that is not there sees no attributes; a lost one writes nothing
    other = {lt.PK: "o#other", lt.SK: "X"}
    assert table.update(other, lt.Update().set(a=1), lt.exists(lt.PK)) is False
    assert table.update(other, lt.Update().set(a=1), lt.exists(lt.PK), return_new=True) is None
    assert table.get(other) is None
    assert table.update(other, lt.Update().set(a=1), lt.ne("a", 1)) is True
    assert table.get(other) == {lt.PK: "o#other", lt.SK: "X", "a": 1}


def test_a_put_replaces_the_row_under_its_condition(table) -> None:
    row = {lt.PK: "~runs", lt.SK: "REQ#r", "run_id": "a", "open": True, "gone": None}
    assert table.put(row, lt.missing(lt.PK))
    assert not table.put({**row, "run_id": "b"}, lt.missing(lt.PK))
    assert table.get({lt.PK: "~runs", lt.SK: "REQ#r"}) == {
        lt.PK: "~runs",
        lt.SK: "REQ#r",
        "run_id": "a",
        "open": True,
    }
    assert table.put({lt.PK: "~runs", lt.SK: "REQ#r", "run_id": "c"})
    assert table.get({lt.PK: "~runs", lt.SK: "REQ#r"}) == {lt.PK: "~runs", lt.SK: "REQ#r", "run_id": "c"}


def test_an_update_that_cannot_apply_is_an_error_that_writes_nothing(table) -> None:
    key = {lt.PK: "o#it", lt.SK: "X"}
    table.update(key, lt.Update().set(a=1))
    for bad in (
        lt.Update().copy("b", "absent"),  # SET b = absent
        lt.Update().increment("absent", 1, strict=True),  # SET absent = absent + 1
        lt.Update().increment(("nomap", "k"), 1),  # a path into a map that is not there
    ):
        with pytest.raises(StoreError) as e:
            table.update(key, bad)
        assert not e.value.retryable
    assert table.get(key) == {lt.PK: "o#it", lt.SK: "X", "a": 1}
    with pytest.raises(ValueError):
        lt.Update().set(a=1).remove("a")  # one path twice: refused as it is built


def test_a_transaction_writes_all_or_reports_each_items_reason(table) -> None:
    keys = [{lt.PK: "o#it", lt.SK: sk} for sk in ("A", "B", "C")]
    assert table.transact([(k, lt.Update().set(v=1), None) for k in keys]) is None
    writes = [
        (keys[0], lt.Update().set(v=2), lt.eq("v", 1)),
        (keys[1], lt.Update().set(v=2), lt.eq("v", 9)),
        (keys[2], lt.Update().set(v=2), None),
    ]
    assert table.transact(writes) == ["None", "ConditionalCheckFailed", "None"]
    assert [table.get(k)["v"] for k in keys] == [1, 1, 1]
    with pytest.raises(StoreError):
        table.transact([(keys[0], lt.Update().set(v=3), None), (keys[0], lt.Update().set(w=3), None)])
    assert table.get(keys[0]) == {**keys[0], "v": 1}


def test_an_index_holds_only_rows_with_both_its_keys_in_sort_key_order(table) -> None:
    for i, due in enumerate([30.0, 10.0, 20.5, 40.0]):
        table.update({lt.PK: f"o#i{i}", lt.SK: "ITEM"}, lt.Update().set(sweep=DUE, due_at=due))
    table.update({lt.PK: "o#no-due", lt.SK: "ITEM"}, lt.Update().set(sweep=DUE))
    table.update({lt.PK: "o#no-sweep", lt.SK: "ITEM"}, lt.Update().set(due_at=1.0))
    q = lt.Query(DUE, index=lt.SWEEP_INDEX, sort=lt.le(lt.SWEEP_SORT, 35))
    assert [r["due_at"] for r in lt.query_all(table, q)] == [10, 20.5, 30]
    rows, last = table.query(_with(q, limit=2))
    assert [r[lt.PK] for r in rows] == ["o#i1", "o#i2"]
    assert last == {lt.PK: "o#i2", lt.SK: "ITEM", lt.SWEEP_KEY: DUE, lt.SWEEP_SORT: 20.5}
    rows, last = table.query(_with(q, limit=2, start=last))
    assert [r[lt.PK] for r in rows] == ["o#i0"] and last is None
    back = _with(q, sort=None, forward=False, fields=(lt.SWEEP_SORT,))
    assert list(lt.query_all(table, back)) == [{"due_at": d} for d in (40, 30, 20.5, 10)]


def _with(q: lt.Query, **kw: Any) -> lt.Query:
    return lt.Query(**{**q.__dict__, **kw})


# ---------------------------------------------------------------------------------------- transitions


def test_record_media_takes_a_newer_source_and_refuses_duplicates_and_older_ones(ledger, clock) -> None:
    first = media(ledger)
    assert first is not None
    assert first["status"] == PROCESSING and first["attempts"] == 0 and first["osk"] == "it#ITEM"
    assert first["owner_id"] == "o" and first["item_id"] == "it" and "media_seq" not in first
    created = first["created_at"]
    assert media(ledger) is None  # the same event again
    assert media(ledger, mtime="2025-12-31T00:00:00.000Z", media_hash="h0") is None  # an older one
    assert media(ledger, mtime="2026-01-02T00:00:00.000Z") is None  # newer, but the same bytes
    clock.t += 5
    again = media(ledger, media_hash="h2", etag="e2")  # same time, other bytes
    assert again is not None and again["media_hash"] == "h2" and again["created_at"] == created
    assert again["updated_at"] != created
    ledger.set_item_status("o", "it", COMPLETE)
    assert ledger.mark_removed("o", "it", "uploads/o/it/v.mp4")
    back = media(ledger, mtime="2026-01-03T00:00:00.000Z", media_hash="h2")  # re-uploaded as it was
    assert back is not None and back["status"] == PROCESSING and "removed_at" not in back


def test_record_media_orders_one_keys_events_by_sequencer(ledger) -> None:
    assert media(ledger, seq="0002") is not None
    later = "2026-01-05T00:00:00.000Z"
    assert media(ledger, seq="0001", mtime=later, media_hash="h9") is None  # an older event of this key
    assert media(ledger, seq="0003", mtime=later, media_hash="h9")["media_seq"] == "0003"
    other = media(
        ledger, key="uploads/o/it/w.mp4", seq="0001", mtime="2026-01-06T00:00:00.000Z", media_hash="x"
    )
    assert other is not None and other["media_key"] == "uploads/o/it/w.mp4"


def test_record_meta_keeps_the_newest_and_never_resets_a_status(ledger) -> None:
    meta = dict(key="uploads/o/it/meta.json", etag="m", mtime="2026-01-02T00:00:00.000Z", meta_hash="m1")
    row = ledger.record_meta("o", "it", **meta)
    assert row["status"] == PROCESSING and row["meta_hash"] == "m1"
    ledger.set_item_status("o", "it", COMPLETE)
    assert ledger.record_meta("o", "it", **{**meta, "meta_hash": "m2"})["status"] == COMPLETE  # same time
    assert ledger.record_meta("o", "it", **{**meta, "mtime": "2026-01-01T00:00:00.000Z"}) is None


def test_mark_removed_only_for_the_items_own_keys(ledger) -> None:
    assert not ledger.mark_removed("o", "nothing", "uploads/o/nothing/v.mp4")
    assert ledger.item("o", "nothing") is None
    media(ledger)
    assert not ledger.mark_removed("o", "it", "uploads/o/it/other.mp4")
    assert ledger.mark_removed("o", "it", "uploads/o/it/v.mp4")
    row = ledger.item("o", "it")
    assert row["status"] == REMOVED and row["removed_key"] == "uploads/o/it/v.mp4"
    assert not ledger.set_item_status("o", "it", COMPLETE)  # a removed item stays removed


def test_a_claim_is_exclusive_and_for_the_current_media_only(ledger, table) -> None:
    assert claim(ledger) is None  # no item
    media(ledger)
    assert claim(ledger, dispatch_hash="stale") is None
    d = claim(ledger)
    assert d is not None
    item, chans = ledger.rows("o", "it")
    assert item["dispatch_id"] == d and item["dispatch_state"] == CLAIMED and item["sweep"] == DUE
    assert item["attempts"] == 1 and item["dispatch_channels"] == GPU and "job_id" not in item
    assert sorted(chans) == GPU
    for ch, row in chans.items():
        assert row["status"] == DISPATCHED and row["dispatch_id"] == d and row["attempts"] == 1
        assert row["input_hash"] == f"in-{ch}" and row["osk"] == f"it#{channel_sk(ch)}"
    before = ledger.rows("o", "it")
    assert claim(ledger, input_hashes={ch: "x" for ch in GPU}) is None  # a second claim changes nothing
    assert ledger.rows("o", "it") == before
    # the dispatch ends in a retry: the next claim may take the item
    assert ledger.release("o", "it", d, retry_at=ledger.clock() + 30)
    d2 = claim(ledger, channels=GPU[:1])
    assert d2 is not None and d2 != d
    item, chans = ledger.rows("o", "it")
    assert item["attempts"] == 2 and chans[GPU[0]]["attempts"] == 2 and chans[GPU[1]]["attempts"] == 1
    # no channels: the item row alone
    ledger.release("o", "it", d2, retry_at=None)
    assert claim(ledger, channels=[]) is not None
    ledger.mark_removed("o", "it", "uploads/o/it/v.mp4")
    ledger.release("o", "it", ledger.item("o", "it")["dispatch_id"], retry_at=None)
    assert claim(ledger) is None  # removed


def test_mark_submitted_and_push_due_only_for_the_open_dispatch(ledger) -> None:
    media(ledger)
    d = claim(ledger)
    assert not ledger.mark_submitted("o", "it", "other", "job", 100.0)
    assert ledger.mark_submitted("o", "it", d, "job-1", 100.0)
    assert not ledger.mark_submitted("o", "it", d, "job-2", 200.0)  # submitted once
    row = ledger.item("o", "it")
    assert row["dispatch_state"] == SUBMITTED and row["job_id"] == "job-1" and row["due_at"] == 100
    assert not ledger.push_due("o", "it", "other", 300.0)
    assert ledger.push_due("o", "it", d, 300.5) and ledger.item("o", "it")["due_at"] == 300.5
    # what the sweeper learnt of the dispatch rides on it, and goes with it
    assert ledger.push_due("o", "it", d, 310.0, dispatch_error={"code": "poll"}, poll_failures=2)
    row = ledger.item("o", "it")
    assert row["dispatch_error"] == {"code": "poll"} and row["poll_failures"] == 2
    assert ledger.release("o", "it", d, retry_at=320.0)
    assert not {"dispatch_error", "poll_failures"} & set(ledger.item("o", "it"))
    ledger.push_due("o", "it", "other", 330.0, poll_failures=1)  # no open dispatch: nothing written
    d2 = claim(ledger)
    ledger.push_due("o", "it", d2, 340.0, dispatch_error={"code": "submit"}, poll_failures=1)
    assert ledger.quarantine("o", "it", "lost", GPU)
    assert not {"dispatch_error", "poll_failures"} & set(ledger.item("o", "it"))
    ledger.set_item_status("o", "it", PROCESSING, dispatch_error={"code": "x"})
    assert claim(ledger) is not None  # a claim starts clean
    assert "dispatch_error" not in ledger.item("o", "it")


def test_finish_channels_writes_all_and_answers_the_rows_as_stored(ledger) -> None:
    media(ledger)
    d = claim(ledger)
    _, before = ledger.rows("o", "it")
    results = {ch: (SUCCEEDED, {"dims": 512, "gpu_seconds": 1.5, "error": None}) for ch in GPU}
    written = ledger.finish_channels("o", "it", d, results, before=before)
    _, stored = ledger.rows("o", "it")
    for ch in GPU:
        assert written[ch] == stored[ch] and stored[ch]["status"] == SUCCEEDED and stored[ch]["dims"] == 512
    # the same result again: every condition lost, nothing written
    assert ledger.finish_channels("o", "it", d, results, before=stored) == {ch: None for ch in GPU}
    assert ledger.rows("o", "it")[1] == stored


def test_finish_channels_with_one_lost_condition_writes_the_others_one_by_one(ledger) -> None:
    media(ledger)
    d = claim(ledger)
    first = ledger.finish_channel("o", "it", GPU[0], d, FAILED, {"note": "first"})
    assert first["status"] == FAILED and first["note"] == "first"
    assert ledger.finish_channel("o", "it", GPU[0], d, SUCCEEDED, {}) is None
    _, rows = ledger.rows("o", "it")
    results = {ch: (PENDING, {"note": "second"}) for ch in GPU}
    written = ledger.finish_channels("o", "it", d, results, before=rows)
    _, stored = ledger.rows("o", "it")
    assert written[GPU[0]] is None and stored[GPU[0]]["note"] == "first"
    for ch in GPU[1:]:
        assert (
            written[ch] == stored[ch] and stored[ch]["status"] == PENDING and stored[ch]["note"] == "second"
        )
    one = ledger.finish_channels("o", "it", "other", {GPU[1]: (SUCCEEDED, {})})
    assert one == {GPU[1]: None}  # one channel: its own conditional write


def test_put_lambda_channel_refuses_a_duplicate_unless_a_run_forces_it(ledger) -> None:
    media(ledger)
    assert ledger.put_lambda_channel("o", "it", LAMBDA, SUCCEEDED, "in1", {"dims": 384})
    row = ledger.rows("o", "it")[1][LAMBDA]
    assert row["attempts"] == 1 and row["runs_on"] == "lambda" and row["osk"] == f"it#{channel_sk(LAMBDA)}"
    assert not ledger.put_lambda_channel("o", "it", LAMBDA, SUCCEEDED, "in1", {"dims": 384})
    assert ledger.put_lambda_channel("o", "it", LAMBDA, SUCCEEDED, "in2", {"dims": 384})  # new inputs
    assert ledger.put_lambda_channel("o", "it", LAMBDA, SUCCEEDED, "in2", {}, run_id="r1")  # forced
    assert not ledger.put_lambda_channel("o", "it", LAMBDA, SUCCEEDED, "in2", {}, run_id="r1")  # once
    assert ledger.rows("o", "it")[1][LAMBDA]["attempts"] == 3
    assert not ledger.put_lambda_channel(
        "o", "it", LAMBDA, FAILED, "in2", {}
    )  # a duplicate, whatever it says
    assert ledger.put_lambda_channel("o", "it", LAMBDA, FAILED, "in3", {"error": {"code": "x"}})
    assert ledger.put_lambda_channel("o", "it", LAMBDA, FAILED, "in3", {})  # only a success is final
    row = ledger.rows("o", "it")[1][LAMBDA]
    assert row["status"] == FAILED and row["attempts"] == 5 and "run_id" not in row


def test_carry_channel_only_while_the_row_is_what_was_read(ledger) -> None:
    media(ledger)
    ledger.put_lambda_channel("o", "it", LAMBDA, SUCCEEDED, "in1", {"artifact_key": "a/old.npy"})
    row = ledger.rows("o", "it")[1][LAMBDA]
    assert ledger.carry_channel("o", "it", LAMBDA, row, "v-new", "a/new.npy")
    carried = ledger.rows("o", "it")[1][LAMBDA]
    assert carried["spec_version"] == "v-new" and carried["carried_from"] == row["spec_version"]
    assert carried["artifact_key"] == "a/new.npy"
    assert not ledger.carry_channel("o", "it", LAMBDA, row, "v-newer", None)  # changed since the read
    # a row without a spec version: carried only while it has none
    key = {lt.PK: "o#it", lt.SK: channel_sk("legacy")}
    ledger.table.update(key, lt.Update().set(status=SUCCEEDED, input_hash="i", fingerprint="f"))
    legacy = ledger.table.get(key)
    assert ledger.carry_channel("o", "it", "legacy", legacy, "v1", None)
    assert not ledger.carry_channel("o", "it", "legacy", legacy, "v2", None)
    assert "carried_from" not in ledger.table.get(key)


def test_release_leaves_a_retry_or_completes_under_the_sources_it_was_decided_on(ledger) -> None:
    media(ledger)
    d = claim(ledger)
    assert not ledger.release("o", "it", "other", retry_at=50.0)
    assert ledger.release("o", "it", d, retry_at=50.0, gpu_seconds=0.1, error={"code": "e", "detail": None})
    row = ledger.item("o", "it")
    assert row["dispatch_state"] == RETRY and row["sweep"] == DUE and row["due_at"] == 50
    assert row["last_error"] == {"code": "e"} and row["gpu_seconds"] == 0.1
    assert not {"dispatch_id", "dispatch_channels", "claimed_at"} & set(row)
    assert ledger.clear_retry("o", "it")  # a RETRY with no dispatch open: closed
    assert "sweep" not in ledger.item("o", "it") and "dispatch_state" not in ledger.item("o", "it")
    assert not ledger.clear_retry("o", "it")  # nothing to clear
    d = claim(ledger)
    assert not ledger.clear_retry("o", "it")  # a dispatch is open
    done = dict(status=COMPLETE, fields={"completed_at": "t"}, gpu_seconds=0.2)
    assert not ledger.release("o", "it", d, retry_at=None, sources={"media_hash": "h0"}, **done)
    assert not ledger.release("o", "it", d, retry_at=None, sources={"meta_hash": "m"}, **done)  # absent
    assert ledger.release(
        "o", "it", d, retry_at=None, sources={"media_hash": "h1", "meta_hash": None}, **done
    )
    row = ledger.item("o", "it")
    assert row["status"] == COMPLETE and row["completed_at"] == "t" and row["gpu_seconds"] == 0.3
    assert not {"sweep", "due_at", "dispatch_state", "dispatch_id", "last_error"} & set(row)
    d = claim(ledger)
    ledger.mark_removed("o", "it", "uploads/o/it/v.mp4")
    assert not ledger.release("o", "it", d, retry_at=None, status=COMPLETE)  # removed: not completed
    assert ledger.release("o", "it", d, retry_at=None)  # but the dispatch closes
    assert ledger.item("o", "it")["status"] == REMOVED


def test_the_manifest_generation_and_the_owners_directory(ledger, clock) -> None:
    assert ledger.mark_manifest("b", 100.0) == 100.0
    assert ledger.mark_manifest("b", 200.0) == 100.0  # already due
    state = ledger.owner_state("b")
    assert state["dirty_gen"] == 2 and state["directory"] == "owners" and state["manifest_owner"] == "b"
    assert not ledger.manifest_written("b", 1, 300.0, {"next_version": "v1"})  # bumped since
    state = ledger.owner_state("b")
    assert state["due_at"] == 300 and state["written_gen"] == 1 and state["sweep"] == DUE
    assert ledger.manifest_written("b", 2, 400.0, {"next_version": "v1"})
    state = ledger.owner_state("b")
    assert "sweep" not in state and "due_at" not in state and state["written_gen"] == 2
    assert ledger.mark_manifest("b", 500.0) == 500.0
    for owner in ("c", "a", "d"):
        ledger.mark_manifest(owner, 1.0)
    assert ledger.owners() == ["a", "b", "c", "d"]
    assert [r["manifest_owner"] for r in ledger.owner_states("a", page=1)] == ["b", "c", "d"]
    assert ledger.next_owner(None) == "a" and ledger.next_owner("b") == "c" and ledger.next_owner("d") is None
    assert ledger.switch_version("b", "v1", None)
    assert not ledger.switch_version("b", "v2", None)
    assert not ledger.switch_version("b", "v2", "v0")
    assert ledger.switch_version("b", "v2", "v1")
    state = ledger.owner_state("b")
    assert state["current_version"] == "v2" and state["previous_version"] == "v1" and state["switches"] == 2


def test_search_marks_and_the_owners_search_alarm(ledger, clock) -> None:
    assert not ledger.set_search("o", "it", "v1:abc")  # no such item: nothing is made
    media(ledger)
    assert ledger.set_search("o", "it", "v1:abc", "transcript: is not valid JSON")
    item = ledger.item("o", "it")
    assert item["search_indexed"] == "v1:abc" and item["search_note"] == "transcript: is not valid JSON"
    assert ledger.set_search("o", "it", None)
    assert ledger.item("o", "it").get("search_indexed") is None
    ledger.set_search_alarm("o", 50.0)
    ledger.set_search_alarm("o", 60.0)  # set again: the later time
    (row,) = [r for r in ledger.due(100.0, 10) if r["sk"] == "SEARCH"]
    assert row["alarm_owner"] == "o" and row["due_at"] == 60
    assert not ledger.search_alarm_rang("o", 50.0)  # not the alarm that is set
    assert ledger.search_alarm_rang("o", 60.0)
    assert [r for r in ledger.due(100.0, 10) if r["sk"] == "SEARCH"] == []
    assert ledger.owners() == [] and [r["sk"] for r in ledger.owner_rows("o")] == [ITEM_SK]


def test_quarantine_and_reopen(ledger) -> None:
    media(ledger)
    d = claim(ledger)
    ledger.finish_channel("o", "it", GPU[0], d, SUCCEEDED, {})
    assert ledger.quarantine("o", "it", "too many attempts", GPU)
    item, chans = ledger.rows("o", "it")
    assert item["status"] == QUARANTINED and item["quarantine_reason"] == "too many attempts"
    assert not {"dispatch_id", "dispatch_state", "sweep", "due_at", "job_id"} & set(item)
    assert chans[GPU[0]]["status"] == SUCCEEDED
    for ch in GPU[1:]:
        assert chans[ch]["status"] == QUARANTINED and chans[ch]["error"]["message"] == "too many attempts"
    assert ledger.reopen("o", "it")
    item = ledger.item("o", "it")
    assert item["status"] == PROCESSING and item["attempts"] == 0
    assert item["last_quarantine_reason"] == "too many attempts" and "quarantine_reason" not in item
    assert not ledger.reopen("o", "it")


def test_due_is_the_sweep_index_oldest_first(ledger, clock) -> None:
    for i, deadline in enumerate([50.0, 10.0, 30.0, 90.0]):
        media(ledger, item=f"i{i}")
        claim(ledger, item=f"i{i}", deadline=deadline)
    media(ledger, item="idle")
    ledger.mark_manifest("o", 20.0)  # the owner's row is due too
    assert [r.get("item_id", r.get("manifest_owner")) for r in ledger.due(60.0, 10)] == [
        "i1",
        "o",
        "i2",
        "i0",
    ]
    assert [r["item_id"] for r in ledger.due(60.0, 1)] == ["i1"]
    ledger.release("o", "i1", ledger.item("o", "i1")["dispatch_id"], retry_at=None)
    assert [r.get("item_id") for r in ledger.due(35.0, 10)] == [None, "i2"]


def test_persons(ledger) -> None:
    ledger.mark_person("o", "@p", 10.0)
    assert ledger.item("o", "@p") is None  # only an existing person is marked
    ledger.record_person("o", "@p", "p")
    ledger.record_person("o", "@p", "p")
    assert ledger.item("o", "@p")["status"] == PROCESSING
    ledger.mark_person("o", "@p", 10.0, force_run="r1")
    ledger.mark_person("o", "@p", 20.0)
    row = ledger.item("o", "@p")
    assert row["dirty_gen"] == 2 and row["force_run"] == "r1" and row["due_at"] == 20
    assert not ledger.person_written("o", "@p", 1, {"photos": 1})
    assert ledger.item("o", "@p")["sweep"] == DUE and ledger.item("o", "@p")["photos"] == 1
    assert ledger.person_written("o", "@p", 2, {"photos": 2})
    assert not {"sweep", "due_at", "force_run"} & set(ledger.item("o", "@p"))
    for n in range(3):
        media(ledger, item=f"@p~{n:012d}")
    media(ledger, item="@q~000000000000")
    rows = ledger.photo_rows("o", "@p", 10)
    assert [r["item_id"] for r in rows] == [f"@p~{n:012d}" for n in range(3)]
    assert len(ledger.photo_rows("o", "@p", 2)) == 2


def test_owner_pages_read_every_row_once_in_order(ledger) -> None:
    ids = ["A1", "b2", "z3", "05", "_6", "-7", "@p", "N8"]
    for item in ids:
        media(ledger, item=item)
        claim(ledger, item=item, channels=GPU[:2])
    media(ledger, owner="other")
    every = list(ledger.owner_rows("o"))
    assert [r["osk"] for r in every] == sorted(r["osk"] for r in every) and len(every) == 3 * len(ids)
    assert {r["owner_id"] for r in every} == {"o"}
    paged, start, pages = [], None, 0
    while True:
        rows, more = ledger.owner_page("o", start, 4)
        paged += rows
        pages += 1
        if not more:
            break
        start = {k: rows[-1][k] for k in (lt.PK, lt.SK, lt.OWNER_KEY, lt.OWNER_SORT)}
    assert paged == every and pages == 6
    fields = ("status", "media_hash", "input_hash")
    rows, more = ledger.owner_page("o", None, 3, fields)
    assert more and rows[0]["osk"] == every[0]["osk"]
    for row, whole in zip(rows, every, strict=False):
        assert row == {
            k: whole[k] for k in whole if k in {*fields, "osk", "pk", "sk", "owner_id", "item_id", "channel"}
        }
    by_segment = []
    for segment in OSK_SEGMENTS:
        rows, more = ledger.owner_page("o", None, 100, None, segment)
        assert not more
        assert all(segment[0] <= r["item_id"][0] <= segment[1] for r in rows)
        by_segment += rows
    assert by_segment == every


def test_runs_count_each_item_once(ledger) -> None:
    runs = Runs(ledger)
    base = {"status": "planning", "planning_done": False, "cursor": "", "channels": {}, "reasons": {}}
    runs.create({"run_id": "r1", "request_key": "k", **base, "gpu_seconds_estimate": 0.0})
    with pytest.raises(StoreError):
        runs.create({"run_id": "r1", **base})
    runs.create({"run_id": "r2", **base, "gpu_seconds_estimate": 0.0})
    assert runs.get("r1")["items"] == 0 and runs.get("nope") is None
    assert [r["run_id"] for r in runs.list()] == ["r2", "r1"] and len(runs.list(limit=1)) == 1
    assert runs.claim_request("k", "r1") is None
    assert runs.claim_request("k", "r9") == "r1"
    counts = {"items": 2, "planned": 2, "done": 0}
    run = runs.page_done("r1", "", "c1", counts, {GPU[0]: 2}, {"new": 2}, 1.5)
    assert run["cursor"] == "c1" and run["items"] == 2 and run["channels"] == {GPU[0]: 2}
    assert runs.page_done("r1", "", "c1", counts, {GPU[0]: 2}, {"new": 2}, 1.5) is None  # redelivered
    for item in ("a", "b", "c"):
        media(ledger, item=item)
    assert runs.mark_item("r1", "o", "a") == "new"
    assert runs.mark_item("r1", "o", "a") == "marked"
    assert runs.mark_item("r2", "o", "a") == "other"
    assert runs.mark_item("r1", "o", "missing") == "other"
    assert runs.count_other("r2", "o", "a")["skipped"] == 1
    assert runs.count_other("r2", "o", "a") is None  # once
    assert ledger.item("o", "a")["run_skipped"] == ["r2"]
    assert runs.count_item("r1", "o", "a", "done")["done"] == 1
    assert runs.count_item("r1", "o", "a", "done") is None  # once
    assert runs.mark_item("r1", "o", "a") == "counted"
    runs.mark_item("r1", "o", "b")
    run = runs.page_done("r1", "c1", None, {}, {GPU[0]: 1}, {}, 0.5)
    assert run["planning_done"] and run["status"] == "running" and run["channels"] == {GPU[0]: 3}
    assert run["gpu_seconds_estimate"] == 2.0
    run = runs.count_item("r1", "o", "b", "failed")
    assert run["status"] == "finished" and run["failed"] == 1
    assert [r["run_id"] for r in runs.list(open_only=True)] == ["r2"]  # runs, not their requests
    assert runs.claim_request("k", "r3") is None  # the finished run let go of its request
    # a finished run's leftover mark is taken over
    ledger._update("o", "c", ITEM_SK, lt.Update().set(run_id="r1"))
    assert runs.mark_item("r2", "o", "c") == "new"
    assert runs.add("r9", done=1) is None  # no such run
    runs.touch("r2")


def test_claims_racing_on_one_item_leave_one_dispatch(ledger) -> None:
    """Many claims at once: exactly one wins (a lost condition or a conflict for the others)."""
    from concurrent.futures import ThreadPoolExecutor

    media(ledger)

    def one(_: int) -> str | None:
        try:
            return claim(ledger)
        except StoreError as e:
            assert e.retryable
            return None

    with ThreadPoolExecutor(8) as pool:
        won = [d for d in pool.map(one, range(16)) if d]
    assert len(won) == 1 and ledger.item("o", "it")["dispatch_id"] == won[0]
    assert all(r["dispatch_id"] == won[0] for r in ledger.rows("o", "it")[1].values())


def test_write_counts(ledger) -> None:
    media(ledger)
    claim(ledger)
    assert (ledger.writes, ledger.write_units) == (1 + 1 + len(GPU), 1 + 2 * (1 + len(GPU)))
