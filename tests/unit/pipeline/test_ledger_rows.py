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
