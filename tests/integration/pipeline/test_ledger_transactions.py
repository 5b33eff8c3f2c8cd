"""The ledger's multi-row writes are one TransactWriteItems each (shared.aws.ledger._transact): a claim
marks the item and every channel it dispatches, or nothing; a result's channel rows are written
together, and the rows it answers are what DynamoDB holds; a lost condition changes nothing of the
transaction and the other rows are still written, one at a time."""

from __future__ import annotations

from typing import Any

import pytest

from shared.aws.ledger import DISPATCHED, SUCCEEDED
from tests.integration.pipeline.harness import Faults, Harness
from tests.integration.pipeline.test_on_job_done import open_dispatch, token_for

pytestmark = pytest.mark.integration

GPU = ["audio_wav2vec2", "transcript", "video_clip", "video_mae"]


@pytest.fixture
def h(make_harness) -> Harness:
    """Every webhook lost: a result is applied only when the test delivers it."""
    return make_harness(faults=Faults(lost_webhook=1.0))


class Calls:
    """The ledger's DynamoDB client, recording the name of every call."""

    def __init__(self, db: Any) -> None:
        self.db, self.names = db, []

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.db, name)

        def call(*args: Any, **kw: Any) -> Any:
            self.names.append(name)
            return real(*args, **kw)

        return call


def test_a_claim_is_one_call_for_the_item_and_its_channels_or_changes_nothing(h: Harness) -> None:
    calls = h.ledger.db = Calls(h.ledger.db)
    row = open_dispatch(h, "tx1", "it")
    assert calls.names.count("transact_write_items") == 1  # the claim: item + 4 channels
    channels = h.channels("tx1", "it")
    gpu = {ch: r for ch, r in channels.items() if ch in GPU}
    assert sorted(gpu) == GPU
    assert all(r["status"] == DISPATCHED and r["dispatch_id"] == row["dispatch_id"] for r in gpu.values())
    assert all(r["attempts"] == 1 for r in gpu.values())
    before = h.ledger.rows("tx1", "it")
    item = before[0]
    # a second claim while the dispatch is open: the item's condition is lost, so no channel is touched
    again = h.ledger.claim(
        "tx1",
        "it",
        channels=GPU,
        input_hashes={ch: "other" for ch in GPU},
        dispatch_hash=item["media_hash"],
        deadline=h.clock() + 60,
    )
    assert again is None
    assert h.ledger.rows("tx1", "it") == before


def test_a_results_channel_rows_are_one_call_and_answer_what_dynamodb_holds(h: Harness) -> None:
    row = open_dispatch(h, "tx2", "it")
    seen: dict[str, Any] = {}
    real = h.ledger.finish_channels

    def keep(*args: Any, **kw: Any) -> Any:
        seen["written"] = out = real(*args, **kw)
        seen["stored"] = h.ledger.rows("tx2", "it")[1]
        return out

    h.ledger.finish_channels = keep  # type: ignore[method-assign]
    calls = h.ledger.db = Calls(h.ledger.db)
    body = h.standin._body(h.standin.jobs[row["job_id"]])
    assert h.webhook(token_for(h, "tx2", "it", row["dispatch_id"]), body)["statusCode"] == 200
    assert calls.names.count("transact_write_items") == 1
    assert h.status("tx2", "it") == "COMPLETE"
    written, stored = seen["written"], seen["stored"]
    assert sorted(written) == GPU
    for ch in GPU:
        assert written[ch] == stored[ch], ch  # the rebuilt row is the row as written
        assert written[ch]["status"] == SUCCEEDED and "error" not in written[ch]


def test_a_lost_condition_writes_the_other_channels_one_at_a_time(h: Harness) -> None:
    row = open_dispatch(h, "tx3", "it")
    # another writer finished one channel of this dispatch first
    h.ledger.finish_channel("tx3", "it", "video_mae", row["dispatch_id"], SUCCEEDED, {"note": "first"})
    results = {ch: (SUCCEEDED, {"note": "second"}) for ch in GPU}
    _, rows = h.ledger.rows("tx3", "it")
    calls = h.ledger.db = Calls(h.ledger.db)
    written = h.ledger.finish_channels("tx3", "it", row["dispatch_id"], results, before=rows)
    assert calls.names == ["transact_write_items"] + ["update_item"] * 3
    assert written["video_mae"] is None
    _, stored = h.ledger.rows("tx3", "it")
    assert stored["video_mae"]["note"] == "first"
    for ch in ("audio_wav2vec2", "transcript", "video_clip"):
        assert written[ch] == stored[ch] and stored[ch]["note"] == "second"
