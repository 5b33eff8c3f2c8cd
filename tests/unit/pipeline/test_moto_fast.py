"""The local stack's moto encodes DynamoDB attribute values directly (shared.dev.moto_fast): every
attribute type reads back exactly as written, through query pages, get, update and scan."""

from __future__ import annotations

from decimal import Decimal

import boto3
import pytest
from moto import mock_aws
from moto.core.serialize import BaseJSONSerializer

from shared.dev import moto_fast

ITEM = {
    "s": {"S": "caf\u00e9 \U0001f600"},
    "n": {"N": "-1.5e-3"},
    "b": {"B": b"\x00\xff\x10"},
    "ss": {"SS": ["a", "b"]},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": [b"x", b"\x00"]},
    "null": {"NULL": True},
    "t": {"BOOL": True},
    "f": {"BOOL": False},
    "empty": {"S": ""},
    "m": {"M": {"inner": {"L": [{"B": b"\x01"}, {"M": {"deep": {"N": "7"}}}, {"L": []}]}, "e": {"M": {}}}},
}


def _dynamodb():
    """A DynamoDB client of the in-process moto (inside `mock_aws()`)."""
    return boto3.client(
        "dynamodb", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def _table(db, name: str, more: dict[str, str] | None = None, **kw):
    """A table keyed pk (hash) + sk (range), strings; `more`: other key attributes (name -> type)."""
    types = {"pk": "S", "sk": "S", **(more or {})}
    db.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": t} for a, t in types.items()],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        **kw,
    )


def test_encode_attribute_base64s_binary_members_at_any_depth():
    out = moto_fast.encode_attribute({"M": {"k": {"L": [{"B": b"\xff"}, {"BS": [b"a"]}, {"S": "x"}]}}})
    assert out == {"M": {"k": {"L": [{"B": "/w=="}, {"BS": ["YQ=="]}, {"S": "x"}]}}}
    with pytest.raises(ValueError):
        moto_fast.encode_attribute({"S": "a", "N": "1"})


def test_every_type_reads_back_as_written(monkeypatch):
    moto_fast.install()
    moto_fast.install()  # idempotent
    assert BaseJSONSerializer._serialize_type_structure.__module__ == "shared.dev.moto_fast"
    calls = []
    real = moto_fast.encode_attribute
    monkeypatch.setattr(moto_fast, "encode_attribute", lambda v: calls.append(1) or real(v))
    with mock_aws():
        db = _dynamodb()
        _table(
            db,
            "t",
            {"o": "S"},
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "owner-index",
                    "KeySchema": [{"AttributeName": "o", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
        written = {}
        for i in range(7):
            row = {"pk": {"S": f"p{i}"}, "sk": {"S": "ITEM"}, "o": {"S": "own"}, **ITEM, "i": {"N": str(i)}}
            db.put_item(TableName="t", Item=row)
            written[f"p{i}"] = row
        read, start = [], None
        while True:
            kw = {"ExclusiveStartKey": start} if start else {}
            page = db.query(
                TableName="t",
                IndexName="owner-index",
                KeyConditionExpression="o = :o",
                ExpressionAttributeValues={":o": {"S": "own"}},
                Limit=3,
                **kw,
            )
            read += page["Items"]
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        assert sorted(read, key=lambda r: r["pk"]["S"]) == [written[k] for k in sorted(written)]
        key = {"pk": {"S": "p3"}, "sk": {"S": "ITEM"}}
        assert db.get_item(TableName="t", Key=key)["Item"] == written["p3"]
        new = db.update_item(
            TableName="t",
            Key=key,
            UpdateExpression="SET z = :z",
            ExpressionAttributeValues={":z": {"BS": [b"\x02"]}},
            ReturnValues="ALL_NEW",
        )["Attributes"]
        assert new == {**written["p3"], "z": {"BS": [b"\x02"]}}
        assert len(db.scan(TableName="t")["Items"]) == 7
        with pytest.raises(db.exceptions.ConditionalCheckFailedException):  # errors: moto's own path
            db.put_item(TableName="t", Item=written["p1"], ConditionExpression="attribute_not_exists(pk)")
    assert calls, "the direct encoding was not used"


def _pages(db, **kw):
    out, start = [], None
    for _ in range(50):  # a page order that loses its place would page forever
        page = db.query(TableName="q", **kw, **({"ExclusiveStartKey": start} if start else {}))
        out += page["Items"]
        start = page.get("LastEvaluatedKey")
        if not start:
            return out
    raise AssertionError("more than 50 pages")


@pytest.mark.parametrize("serialized", [True, False], ids=["one-request-at-a-time", "threaded"])
def test_queries_read_only_what_matches_in_dynamodbs_order(monkeypatch, serialized):
    """The query fast path (one partition for a table query; index matches picked by their hash key,
    sorts by cast values): same rows, same order, pages and all, and the stored rows stay whole."""
    from moto.dynamodb.models.table import Table

    moto_fast.install()
    monkeypatch.setattr(moto_fast, "_serialized", serialized)  # (this test is single-threaded)
    assert Table.query.__module__ == Table.sorted_items.__module__ == "shared.dev.moto_fast"
    with mock_aws():
        db = _dynamodb()
        _table(
            db,
            "q",
            {"o": "S", "r": "N"},
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "by-o",
                    "KeySchema": [
                        {"AttributeName": "o", "KeyType": "HASH"},
                        {"AttributeName": "r", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                },
                {
                    "IndexName": "by-o-sk",
                    "KeySchema": [
                        {"AttributeName": "o", "KeyType": "HASH"},
                        {"AttributeName": "sk", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                },
                {
                    "IndexName": "keys",
                    "KeySchema": [{"AttributeName": "o", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                },
            ],
        )
        rows = []
        for p in range(5):
            for k in range(7):
                row = {
                    "pk": {"S": f"p{p}"},
                    "sk": {"S": f"s{(k * 5) % 7:02d}"},  # written out of order
                    "r": {"N": str((p * 7 + k * 3) % 11 - 5) + (".50" if k == 3 else "")},  # negatives, 1.50
                    "x": {"L": [{"N": str(k)}, {"M": {"b": {"B": b"\x00"}}}]},
                }
                if k != 6:
                    row["o"] = {"S": f"o{(p + k) % 2}"}  # one row per partition is in no index
                db.put_item(TableName="q", Item=row)
                rows.append(row)

        def num(row):
            return Decimal(row["r"]["N"])

        part = sorted((r for r in rows if r["pk"]["S"] == "p2"), key=lambda r: r["sk"]["S"])
        table_q = {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "p2"}}}
        assert _pages(db, **table_q, Limit=3) == part
        assert _pages(db, **table_q, ScanIndexForward=False) == part[::-1]
        o1 = sorted(
            (r for r in rows if r.get("o") == {"S": "o1"}), key=lambda r: (num(r), r["pk"]["S"], r["sk"]["S"])
        )
        index_q = {
            "IndexName": "by-o",
            "KeyConditionExpression": "o = :o",
            "ExpressionAttributeValues": {":o": {"S": "o1"}},
        }
        assert _pages(db, **index_q, Limit=4) == o1
        between = _pages(
            db,
            IndexName="by-o",
            KeyConditionExpression="o = :o AND r BETWEEN :a AND :b",
            ExpressionAttributeValues={":o": {"S": "o1"}, ":a": {"N": "-2"}, ":b": {"N": "1.5"}},
            Limit=2,
        )
        assert between == [r for r in o1 if -2 <= num(r) <= Decimal("1.5")] and between
        by_sk = sorted(
            (r for r in rows if r.get("o") == {"S": "o1"}), key=lambda r: (r["sk"]["S"], r["pk"]["S"])
        )
        for condition, values, keep in (
            (
                "sk BETWEEN :a AND :b",
                {":a": {"S": "s01"}, ":b": {"S": "s04\x7f"}},
                lambda s: "s01" <= s <= "s04\x7f",
            ),
            ("begins_with(sk, :a)", {":a": {"S": "s05"}}, lambda s: s.startswith("s05")),
            ("sk > :a", {":a": {"S": "s03"}}, lambda s: s > "s03"),
        ):
            expected = [r for r in by_sk if keep(r["sk"]["S"])]
            for forward in (True, False):
                got = _pages(
                    db,
                    IndexName="by-o-sk",
                    KeyConditionExpression=f"o = :o AND {condition}",
                    ExpressionAttributeValues={":o": {"S": "o1"}, **values},
                    ScanIndexForward=forward,
                    Limit=2,
                )
                assert got == (expected if forward else expected[::-1]) and got != by_sk, condition
        keys = _pages(
            db,
            IndexName="keys",
            KeyConditionExpression="o = :o",
            ExpressionAttributeValues={":o": {"S": "o0"}},
        )
        assert {(r["pk"]["S"], r["sk"]["S"]) for r in keys} == {
            (r["pk"]["S"], r["sk"]["S"]) for r in rows if r.get("o") == {"S": "o0"}
        }
        assert all(set(r) == {"pk", "sk", "o"} for r in keys)
        projected = _pages(db, **table_q, ProjectionExpression="sk")
        assert projected == [{"sk": r["sk"]} for r in part]
        for r in part:  # projections built new rows: the stored ones are whole
            assert db.get_item(TableName="q", Key={"pk": r["pk"], "sk": r["sk"]})["Item"] == r


def test_the_local_stacks_server_keeps_connections_and_exact_s3_keys():
    """`python -m shared.dev.moto_fast` (waitress): S3 keys with %XX, "?", "+", spaces and unicode
    stay exactly as sent, and boto3 reuses its connection instead of opening one per call."""
    import urllib3.connection

    from shared.dev.localstack import MotoServer

    opened = []
    real = urllib3.connection.HTTPConnection._new_conn

    def counting(self):
        opened.append(self.port)
        return real(self)

    with MotoServer() as server:
        s3 = server.client("s3")
        s3.create_bucket(Bucket="keys")
        names = ["a%41.png", "what?.jpg", "50%.txt", "sp ace+plus (1).mp4", "ünïcødé 東京.mov"]
        urllib3.connection.HTTPConnection._new_conn = counting
        try:
            for i, name in enumerate(names):
                s3.put_object(Bucket="keys", Key=f"uploads/o/i/{name}", Body=b"%d" % i)
            listed = [o["Key"] for o in s3.list_objects_v2(Bucket="keys")["Contents"]]
            bodies = [s3.get_object(Bucket="keys", Key=f"uploads/o/i/{n}")["Body"].read() for n in names]
        finally:
            urllib3.connection.HTTPConnection._new_conn = real
    assert sorted(listed) == sorted(f"uploads/o/i/{n}" for n in names)
    assert bodies == [b"%d" % i for i in range(len(names))]
    assert len([p for p in opened if p == server.port]) <= 2  # 11 calls, kept-alive connections


def test_the_local_stacks_server_answers_an_empty_put_at_once():
    """An empty file's PutObject (Content-Length: 0 and botocore's `Expect: 100-continue`) is answered,
    not left waiting for the client's read timeout (waitress marked the bodiless request incomplete
    after its 100 Continue), and the object is there, empty; the connection serves the next call."""
    from botocore.config import Config

    from shared.dev.localstack import _MOTO_KEYS, REGION, MotoServer

    with MotoServer() as server:
        s3 = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            region_name=REGION,
            # a hang fails as ReadTimeoutError after 5 s, once (no retries)
            config=Config(read_timeout=5, retries={"total_max_attempts": 1}, s3={"addressing_style": "path"}),
            **_MOTO_KEYS,
        )
        s3.create_bucket(Bucket="empty")
        s3.put_object(Bucket="empty", Key="uploads/o/i/zero.txt", Body=b"")
        assert s3.head_object(Bucket="empty", Key="uploads/o/i/zero.txt")["ContentLength"] == 0
        assert s3.get_object(Bucket="empty", Key="uploads/o/i/zero.txt")["Body"].read() == b""
        s3.put_object(Bucket="empty", Key="uploads/o/i/one.txt", Body=b"1")
        assert s3.get_object(Bucket="empty", Key="uploads/o/i/one.txt")["Body"].read() == b"1"


def test_row_sizes_and_key_equality_are_motos():
    """A row's size (the 1 MB page limit) is moto's, strings and numbers sized in place and anything
    else by moto; key equality casts numbers only ("1" == "1.0"), as DynamoType's does."""
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    moto_fast.install()
    motos = Item.size  # outside a query the installed size is moto's own
    flat = {"s": {"S": "caf\u00e9 \U0001f600"}, "n": {"N": "-1.5e-3"}, "k\u00e9y": {"S": ""}}
    flat["i"] = {"N": "1" * 30}
    for attrs, fast in ((flat, True), (ITEM, False)):
        item = Item(DynamoType({"S": "h"}), None, attrs)
        expected = motos(item)
        assert moto_fast._item_size(item, lambda _: -1) == (expected if fast else -1)
        assert moto_fast._item_size(item, motos) == expected > 0

    def t(kind, value):
        return DynamoType({kind: value})

    for have, want in (
        (t("N", "1.0"), t("N", "1")),
        (t("N", "-2.50"), t("N", "-2.5")),
        (t("S", "a"), t("S", "a")),
        (t("B", b"\x00"), t("B", b"\x00")),
    ):
        assert moto_fast._same(have, want) and have == want
    for have, want in ((t("S", "1"), t("N", "1")), (t("S", "a"), t("S", "b")), (t("N", "1"), t("N", "2"))):
        assert not moto_fast._same(have, want) and have != want
    assert not moto_fast._same(None, t("S", "a"))
    assert moto_fast._key_value(t("N", "1.50")) == Decimal("1.5")
    assert moto_fast._key_value(t("S", "x")) == t("S", "x").cast_value


def test_a_query_answer_written_in_one_pass_is_motos(monkeypatch):
    """Under serve() a Query's body is written as JSON from moto's values; every kind of value, a page
    key, consumed capacity and projections read back as moto's own serializer sends them."""
    from moto.dynamodb.responses import DynamoHandler

    moto_fast.install()
    bodies: list[bool] = []  # per query: answered as a JSON body (the one-pass path)
    installed = DynamoHandler.query
    monkeypatch.setattr(
        DynamoHandler, "query", lambda self: (r := installed(self), bodies.append(isinstance(r, str)))[0]
    )
    with mock_aws():
        db = _dynamodb()
        _table(db, "r")
        for i in range(5):
            db.put_item(TableName="r", Item={"pk": {"S": "p"}, "sk": {"S": f"s{i}"}, **ITEM})
        queries = [
            {"Limit": 2},
            {"Limit": 2, "ExclusiveStartKey": {"pk": {"S": "p"}, "sk": {"S": "s1"}}},
            {"ReturnConsumedCapacity": "TOTAL", "ProjectionExpression": "sk, b, m, ns"},
            {"Select": "COUNT"},
            {"ScanIndexForward": False, "ReturnConsumedCapacity": "INDEXES"},
        ]
        answers = {}
        for serialized in (False, True):
            monkeypatch.setattr(moto_fast, "_serialized", serialized)
            answers[serialized] = []
            for q in queries:
                out = db.query(
                    TableName="r",
                    KeyConditionExpression="pk = :p",
                    ExpressionAttributeValues={":p": {"S": "p"}},
                    **q,
                )
                out.pop("ResponseMetadata")
                answers[serialized].append(out)
        assert bodies == [False] * len(queries) + [True] * len(queries)  # moto's path, then one pass
        assert answers[True] == answers[False]
        assert (
            answers[True][0]["Items"][0]["b"] == {"B": b"\x00\xff\x10"}
            and "LastEvaluatedKey" in answers[True][0]
        )


def _transaction_cases():
    """(name, TransactItems) over a table holding a1 (n=1, s="x") and a2 (n=2)."""

    def upd(sk, expr, values, cond=None, **extra):
        op = {"TableName": "t", "Key": {"pk": {"S": "p"}, "sk": {"S": sk}}, "UpdateExpression": expr}
        op["ExpressionAttributeValues"] = values
        if cond:
            op["ConditionExpression"] = cond
        return {"Update": {**op, **extra}}

    one = {":one": {"N": "1"}}
    return [
        (
            "all written",
            [
                upd("a1", "SET n = n + :one", one, "n = :one"),
                {"Put": {"TableName": "t", "Item": {"pk": {"S": "p"}, "sk": {"S": "new"}, "n": {"N": "9"}}}},
                {
                    "ConditionCheck": {
                        "TableName": "t",
                        "Key": {"pk": {"S": "p"}, "sk": {"S": "a2"}},
                        "ConditionExpression": "attribute_exists(n)",
                    }
                },
                upd("a3", "SET n = :one", one),
            ],
        ),
        (
            "a lost condition",
            [
                upd("a1", "SET n = n + :one", one),
                upd("a2", "SET n = :one", one, "n = :one", ReturnValuesOnConditionCheckFailure="ALL_OLD"),
                upd("a3", "SET n = :one", one, "attribute_exists(n)"),
                upd("a4", "SET n = :one", one),
            ],
        ),
        ("fails while writing", [upd("a1", "SET n = n + :one", one), upd("a2", "SET x = s + :one", one)]),
        ("one item twice", [upd("a1", "SET n = :one", one), upd("a1", "SET s = :one", one)]),
    ]


def test_transactions_write_all_or_nothing_as_motos_without_copying_the_table(monkeypatch):
    """moto_fast's TransactWriteItems: the same table afterwards, the same errors and cancellation
    reasons as moto's own, for a transaction that writes, one whose condition is lost, one that fails
    while writing (a string plus a number) and one naming an item twice, and never a copy of the table
    (moto copied the whole table for each item, and put the copy back on any failure)."""
    import copy

    import moto.dynamodb.models as models
    from botocore.exceptions import ClientError

    moto_fast.install()
    ours = models.DynamoDBBackend.transact_write_items
    copies = []
    real_deepcopy = copy.deepcopy
    monkeypatch.setattr(
        models.copy, "deepcopy", lambda x, *a: copies.append(type(x).__name__) or real_deepcopy(x, *a)
    )

    def run(items):
        with mock_aws():
            db = _dynamodb()
            _table(db, "t")
            db.put_item(
                TableName="t", Item={"pk": {"S": "p"}, "sk": {"S": "a1"}, "n": {"N": "1"}, "s": {"S": "x"}}
            )
            db.put_item(
                TableName="t", Item={"pk": {"S": "p"}, "sk": {"S": "a2"}, "n": {"N": "2"}, "s": {"S": "x"}}
            )
            try:
                db.transact_write_items(TransactItems=items)
                error = None
            except ClientError as e:
                error = (e.response["Error"]["Code"], e.response.get("CancellationReasons"))
            rows = sorted(db.scan(TableName="t")["Items"], key=lambda r: r["sk"]["S"])
            return error, rows

    for name, items in _transaction_cases():
        copies.clear()
        got = run(items)
        assert "Table" not in copies, name
        monkeypatch.setattr(models.DynamoDBBackend, "transact_write_items", ours.motos)
        want = run(items)
        monkeypatch.setattr(models.DynamoDBBackend, "transact_write_items", ours)
        assert got == want, name
        error, rows = got
        if name == "all written":
            assert error is None and [r["sk"]["S"] for r in rows] == ["a1", "a2", "a3", "new"]
            assert rows[0]["n"] == {"N": "2"}
        else:
            assert error is not None and [r["sk"]["S"] for r in rows] == ["a1", "a2"], name
            assert rows[0]["n"] == {"N": "1"}, name  # nothing of it written
    reasons = run(_transaction_cases()[1][1])[0][1]
    lost = "ConditionalCheckFailed"
    assert [r["Code"] for r in reasons] == ["None", lost, lost, "None"]  # a3 does not exist
    assert reasons[1]["Item"]["n"] == {"N": "2"}
