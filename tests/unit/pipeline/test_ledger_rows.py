"""shared.aws.ledger._row: a DynamoDB row as plain values (strings, numbers, booleans, nulls in place)."""

from __future__ import annotations

from boto3.dynamodb.types import TypeDeserializer

from shared.aws.ledger import _from_dynamo, _implied_by_osk, _row


def test_a_row_reads_as_the_type_deserializer_reads_it():
    de = TypeDeserializer()
    row = {
        "s": {"S": "caf\u00e9"},
        "empty": {"S": ""},
        "int": {"N": "12"},
        "big": {"N": "1" * 38},
        "exp": {"N": "1E+2"},
        "whole_float": {"N": "2.0"},
        "float": {"N": "0.25"},
        "neg": {"N": "-1.5e-3"},
        "t": {"BOOL": True},
        "f": {"BOOL": False},
        "null": {"NULL": True},
        "b": {"B": b"\x00\xff"},
        "ss": {"SS": ["b", "a"]},
        "ns": {"NS": ["2", "1.5"]},
        "l": {"L": [{"N": "1"}, {"S": "x"}, {"M": {"n": {"N": "0.5"}}}]},
        "m": {"M": {"k": {"L": []}, "z": {"NULL": True}}},
    }
    got = _row(row)
    assert got == _from_dynamo({k: de.deserialize(v) for k, v in row.items()})
    assert [type(got[k]) for k in ("int", "big", "exp", "whole_float", "float", "t", "null")] == [
        int,
        int,
        int,
        int,
        float,
        bool,
        type(None),
    ]
    assert got["ss"] == ["a", "b"] and got["m"] == {"k": [], "z": None}


def test_what_an_owner_index_sort_key_implies():
    assert _implied_by_osk("own", "it-1#CH#video_clip") == {
        "pk": "own#it-1",
        "sk": "CH#video_clip",
        "owner_id": "own",
        "item_id": "it-1",
        "channel": "video_clip",
    }
    assert _implied_by_osk("own", "@p~0123456789ab#ITEM") == {
        "pk": "own#@p~0123456789ab",
        "sk": "ITEM",
        "owner_id": "own",
        "item_id": "@p~0123456789ab",
    }


class _Cancelling:
    """A DynamoDB client whose transactions are cancelled with `reasons`; UpdateItems succeed."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons, self.calls = reasons, []

    def transact_write_items(self, **kw):
        from botocore.exceptions import ClientError

        self.calls.append(("transact", len(kw["TransactItems"])))
        body = {
            "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
            "CancellationReasons": [{"Code": c} for c in self.reasons],
        }
        raise ClientError(body, "TransactWriteItems")

    def update_item(self, **kw):
        self.calls.append(("update", kw["Key"]["sk"]["S"]))
        return {"Attributes": {**kw["Key"], "status": {"S": "SUCCEEDED"}}}


def test_a_cancelled_result_transaction_writes_each_row_that_held_on_its_own():
    """DynamoDB cancels a transaction for a concurrent write (TransactionConflict) as well as for a lost
    condition: either way nothing of it was written, and each row whose condition held is written on
    its own under its own condition; a lost one is None."""
    import pytest

    from shared.aws.clients import StoreError
    from shared.aws.ledger import SUCCEEDED, Ledger

    db = _Cancelling(["None", "TransactionConflict", "ConditionalCheckFailed"])
    ledger = Ledger(db, "t")
    results = {ch: (SUCCEEDED, {}) for ch in ("transcript", "video_clip", "video_mae")}
    out = ledger.finish_channels("own", "it", "d1", results, before={})
    assert db.calls == [("transact", 3), ("update", "CH#transcript"), ("update", "CH#video_clip")]
    assert out["video_mae"] is None and out["transcript"]["status"] == SUCCEEDED
    assert ledger.writes == 5 and ledger.write_units == 2 * 3 + 2
    # a claim cancelled by a concurrent write: a retryable error, no partial claim to repair
    claim = dict(channels=["transcript", "video_clip"], input_hashes={"transcript": "h", "video_clip": "h"})
    with pytest.raises(StoreError) as e:
        Ledger(_Cancelling(["None", "TransactionConflict", "None"]), "t").claim(
            "own", "it", dispatch_hash="m", deadline=0.0, **claim
        )
    assert e.value.retryable
    lost = Ledger(_Cancelling(["ConditionalCheckFailed", "None", "None"]), "t")
    assert lost.claim("own", "it", dispatch_hash="m", deadline=0.0, **claim) is None
    # throttled: not about the items, a retryable error
    with pytest.raises(StoreError) as e:
        Ledger(_Cancelling(["ThrottlingError", "None"]), "t").finish_channels(
            "own", "it", "d1", {ch: (SUCCEEDED, {}) for ch in ("transcript", "video_clip")}
        )
    assert e.value.retryable


def test_a_post_image_is_the_row_after_a_plain_update_and_unknown_otherwise():
    from shared.pipeline.ledger_table import Update

    before = {"pk": "p", "sk": "s", "status": "DISPATCHED", "error": {"code": "x"}, "n": 1}
    upd = Update().set(status="SUCCEEDED", dims=512, gpu_seconds=1.0, error=None, tags={"a", "b"})
    assert upd.post_image(before) == {
        "pk": "p",
        "sk": "s",
        "status": "SUCCEEDED",
        "n": 1,
        "dims": 512,
        "gpu_seconds": 1,
        "tags": ["a", "b"],
    }
    assert upd.post_image(None) is None
    assert Update().set(a=1).increment("attempts").post_image(before) is None
    assert Update().set(a=1).add("n", 1).post_image(before) is None
    assert Update().set(a=1).copy("b", "n").post_image(before) is None
    assert Update().set(a=1).set_default("c", 0).post_image(before) is None
