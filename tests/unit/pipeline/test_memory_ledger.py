"""The state machine on the in-memory ledger (no sockets, milliseconds): one upload's dispatch from
record to completion, and what the memory table refuses as DynamoDB does where moto does not check
it. Every transition's semantics on both adapters: tests/integration/pipeline/test_ledger_contract.py."""

from __future__ import annotations

import pytest

from shared.aws.clients import StoreError
from shared.dev.memory_ledger import MemoryTable, memory_ledger
from shared.pipeline import ledger_table as lt
from shared.pipeline.ledger import COMPLETE, DUE, SUBMITTED
from shared.pipeline.plan import SUCCEEDED

pytestmark = pytest.mark.unit


def test_one_dispatch_from_record_to_complete() -> None:
    t = [1000.0]
    ledger = memory_ledger(clock=lambda: t[0])
    row = ledger.record_media(
        "o", "it", kind="upload", modality="video", key="uploads/o/it/v.mp4", etag="e", size=1,
        mtime="2026-01-01T00:00:00.000Z", media_hash="h", seq=None,
    )  # fmt: skip
    assert row is not None
    d = ledger.claim("o", "it", channels=["transcript", "video_clip"], input_hashes={"transcript": "a",
                     "video_clip": "b"}, dispatch_hash="h", deadline=1060.0)  # fmt: skip
    assert d and ledger.claim("o", "it", channels=[], input_hashes={}, dispatch_hash="h", deadline=0) is None
    assert ledger.mark_submitted("o", "it", d, "job", 1100.0)
    assert ledger.item("o", "it")["dispatch_state"] == SUBMITTED
    assert [r["item_id"] for r in ledger.due(1200.0, 10)] == ["it"] and ledger.due(1000.0, 10) == []
    _, before = ledger.rows("o", "it")
    written = ledger.finish_channels("o", "it", d, {ch: (SUCCEEDED, {"dims": 4}) for ch in before}, before)
    assert written == ledger.rows("o", "it")[1]
    assert ledger.release("o", "it", d, retry_at=None, status=COMPLETE, sources={"media_hash": "h"})
    item = ledger.item("o", "it")
    assert item["status"] == COMPLETE and "sweep" not in item and ledger.due(9e9, 10) == []
    assert (ledger.writes, ledger.write_units) == (1 + 3 + 1 + 1 + 2 + 1, 1 + 2 * 3 + 1 + 1 + 2 * 2 + 1)


def test_an_index_key_of_the_wrong_type_is_refused() -> None:
    """DynamoDB refuses a write that gives an index key another type than the table declares (moto
    5.2.6 stores it)."""
    table = MemoryTable()
    key = {lt.PK: "o#it", lt.SK: "ITEM"}
    with pytest.raises(StoreError) as e:
        table.update(key, lt.Update().set(sweep=DUE, due_at="soon"))
    assert not e.value.retryable and table.get(key) is None
    with pytest.raises(StoreError):
        table.put({**key, "osk": ""})


def test_a_query_names_its_sort_key_only() -> None:
    table = MemoryTable()
    with pytest.raises(StoreError):
        table.query(lt.Query("o", index=lt.OWNER_INDEX, sort=lt.eq("status", "x")))
    with pytest.raises(StoreError):
        table.query(lt.Query("o", index=lt.OWNER_INDEX, sort=lt.ne(lt.OWNER_SORT, "x")))
    with pytest.raises(StoreError):
        table.query(lt.Query("o", index=lt.OWNER_INDEX, consistent=True))
