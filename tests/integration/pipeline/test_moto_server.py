"""The local stack's moto server (shared.dev.moto_server): moto as released, with DynamoDB's atomic
conditional writes, S3 keys exactly as sent, kept connections and an empty upload answered at once."""

from __future__ import annotations

import threading

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from shared.dev.localstack import _MOTO_KEYS, REGION, MotoServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server():
    with MotoServer() as s:
        yield s


def test_concurrent_conditional_claims_of_one_item_have_one_winner(server) -> None:
    """16 threads claim the same row with a condition on its old state, 8 rounds: exactly one wins
    each round, as on DynamoDB (moto's threaded server without the lock let 3 of 16 win)."""
    ddb = server.client("dynamodb")
    ddb.create_table(
        TableName="claims",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    gate = threading.Barrier(16)
    outcomes: list[tuple[str, int, str]] = []

    def claim(pk: str, n: int) -> None:
        gate.wait()
        try:
            ddb.update_item(  # a boto3 client is thread-safe: one client, 16 connections
                TableName="claims",
                Key={"pk": {"S": pk}},
                UpdateExpression="SET #s = :claimed, #by = :n",
                ConditionExpression="#s = :free",
                ExpressionAttributeNames={"#s": "state", "#by": "by"},
                ExpressionAttributeValues={
                    ":claimed": {"S": "CLAIMED"},
                    ":free": {"S": "FREE"},
                    ":n": {"N": str(n)},
                },
            )
            outcomes.append((pk, n, "won"))
        except ClientError as e:
            outcomes.append((pk, n, e.response["Error"]["Code"]))

    for round_ in range(8):
        pk = f"item{round_}"
        ddb.put_item(TableName="claims", Item={"pk": {"S": pk}, "state": {"S": "FREE"}})
        threads = [threading.Thread(target=claim, args=(pk, n)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        mine = [(n, what) for p, n, what in outcomes if p == pk]
        won = [n for n, what in mine if what == "won"]
        assert len(mine) == 16 and len(won) == 1, mine
        assert {what for _, what in mine} == {"won", "ConditionalCheckFailedException"}
        row = ddb.get_item(TableName="claims", Key={"pk": {"S": pk}})["Item"]
        assert row["by"] == {"N": str(won[0])}


def test_s3_keys_stay_exact_and_connections_are_kept(server) -> None:
    """S3 keys with %XX, "?", "+", spaces and unicode stay exactly as sent, and boto3 reuses its
    connection instead of opening one per call (HTTP/1.1 keep-alive)."""
    import urllib3.connection

    opened = []
    real = urllib3.connection.HTTPConnection._new_conn

    def counting(self):
        opened.append(self.port)
        return real(self)

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
    assert len([p for p in opened if p == server.port]) <= 2  # 11 calls on kept-alive connections


def test_an_empty_upload_is_answered_at_once(server) -> None:
    """An empty file's PutObject (Content-Length: 0 and botocore's `Expect: 100-continue`) is answered,
    not left waiting for the client's read timeout; the object is there, empty."""
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
