"""The SQS handlers (on_upload, reprocess's queue) with a stub pipeline: a failed message is reported in
`batchItemFailures` (also when it is the whole batch: no BatchProcessingError, which would be an
invocation error and fire the Errors alarm on every redelivery), and its reason is logged with its
message id, never its body."""

from __future__ import annotations

import io
import json
import time
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from aws_lambda_powertools import Logger, Metrics

from shared.dev.stack import _Context
from shared.errors import FetchError
from shared.pipeline.lambdas import build_on_upload, build_reprocess
from shared.pipeline.service import Outcome

pytestmark = pytest.mark.unit

BUCKET = "media-bucket"
POISON = "this is not json { secret-looking body 0xdeadbeef"


class StubPipeline:
    """What handle_message and the reprocess handler's construction read of a Pipeline."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.settings = SimpleNamespace(bucket=BUCKET)
        self.ledger = None
        self.clock = time.time
        self.fail = fail
        self.records: list[dict[str, Any]] = []

    def on_s3_record(self, record: dict[str, Any]) -> Outcome:
        if self.fail is not None:
            raise self.fail
        self.records.append(record)
        return Outcome("dispatched", "stub")


def notification(key: str = "uploads/o1/it/v.mp4") -> str:
    return json.dumps(
        {
            "Records": [
                {
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": BUCKET}, "object": {"key": key, "size": 1}},
                }
            ]
        }
    )


def sqs_event(*bodies: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"msg-{i}",
                "receiptHandle": f"rh-{i}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "2"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(bodies)
        ]
    }


def handler(kind: str, pipeline: StubPipeline) -> tuple[Any, io.StringIO]:
    stream = io.StringIO()
    # one service per handler: Powertools' Loggers of one service share one stdlib logger and stream
    logger = Logger(service=f"tests-{uuid.uuid4().hex[:8]}", level="INFO", stream=stream)
    metrics = Metrics(namespace="Tests", service="tests")
    if kind == "on_upload":
        return build_on_upload(pipeline, logger, metrics, cold_start=False), stream  # type: ignore[arg-type]
    return build_reprocess(pipeline, logger, metrics, cold_start=False, sqs=object()), stream  # type: ignore[arg-type]


def failure_logs(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if "message failed" in line.get("message", "")]


def failed_ids(out: dict[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in out["batchItemFailures"]]


@pytest.mark.parametrize("kind", ["on_upload", "reprocess"])
def test_a_poison_message_alone_is_reported_not_raised(
    kind: str, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    handle, stream = handler(kind, StubPipeline())
    out = handle(sqs_event(POISON), _Context(kind))  # raised BatchProcessingError before
    assert failed_ids(out) == ["msg-0"]
    (log,) = failure_logs(stream)
    assert log["level"] == "WARNING"
    assert log["message_id"] == "msg-0" and log["receive_count"] == "2"
    assert log["code"] == ("poison_message" if kind == "on_upload" else "invalid_input")
    assert log["retryable"] is False and "not JSON" in log["reason"]
    echoed = stream.getvalue() + capsys.readouterr().out + caplog.text
    assert "deadbeef" not in echoed  # the body is never echoed


def test_a_poison_message_in_a_mixed_batch_fails_alone_with_its_reason_logged() -> None:
    pipeline = StubPipeline()
    handle, stream = handler("on_upload", pipeline)
    out = handle(sqs_event(notification(), POISON, json.dumps({"Records": "x"})), _Context("on_upload"))
    assert failed_ids(out) == ["msg-1", "msg-2"]
    assert [r["s3"]["object"]["key"] for r in pipeline.records] == ["uploads/o1/it/v.mp4"]
    logs = failure_logs(stream)
    assert [(x["message_id"], x["code"]) for x in logs] == [
        ("msg-1", "poison_message"),
        ("msg-2", "poison_message"),
    ]
    assert "not an S3 notification" in logs[1]["reason"]


def test_a_retryable_failure_of_the_whole_batch_is_reported_and_logged() -> None:
    handle, stream = handler("on_upload", StubPipeline(fail=FetchError("S3 is throttling")))
    out = handle(sqs_event(notification(), notification("uploads/o1/it2/a.wav")), _Context("on_upload"))
    assert failed_ids(out) == ["msg-0", "msg-1"]
    logs = failure_logs(stream)
    assert [(x["message_id"], x["code"], x["retryable"]) for x in logs] == [
        ("msg-0", "fetch_error", True),
        ("msg-1", "fetch_error", True),
    ]


def test_an_unexpected_exception_is_logged_with_its_class_and_traceback() -> None:
    handle, stream = handler("on_upload", StubPipeline(fail=ZeroDivisionError("boom")))
    out = handle(sqs_event(notification()), _Context("on_upload"))
    assert failed_ids(out) == ["msg-0"]
    (log,) = failure_logs(stream)
    assert log["level"] == "ERROR" and log["code"] == "ZeroDivisionError" and log["message_id"] == "msg-0"
    assert "ZeroDivisionError" in log["exception"]


def test_a_good_batch_reports_no_failures() -> None:
    handle, stream = handler("on_upload", StubPipeline())
    assert handle(sqs_event(notification()), _Context("on_upload")) == {"batchItemFailures": []}
    assert failure_logs(stream) == []
