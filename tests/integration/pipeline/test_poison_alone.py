"""A poison message alone in its batch, through the real on_upload handler on moto: every delivery is a
reported item failure (never a crashed invocation, which is the Lambda Errors alarm), and after the
queue's maxReceiveCount (template.yaml's RedrivePolicy) it is in the dead-letter queue."""

from __future__ import annotations

import json

import pytest

from tests.integration.pipeline.harness import Harness

pytestmark = pytest.mark.integration


def test_a_poison_message_alone_fails_as_an_item_each_time_then_reaches_the_dlq(
    h: Harness, template_pair: tuple[dict, dict]
) -> None:
    attrs = h.sqs.get_queue_attributes(QueueUrl=h.queue_url, AttributeNames=["RedrivePolicy"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    dlq_arn = h.sqs.get_queue_attributes(QueueUrl=h.dlq_url, AttributeNames=["QueueArn"])["Attributes"]
    assert redrive["deadLetterTargetArn"] == dlq_arn["QueueArn"]
    receives = int(redrive["maxReceiveCount"])
    assert receives == int(template_pair[0]["Parameters"]["UploadMaxReceiveCount"]["Default"])

    h.send("this is not json {")
    for _ in range(receives + 2):  # the batch of one, alone each time; then nothing left to receive
        h.pump.deliver_once(wait_s=0)
    assert h.pump.crashes == 0  # BatchProcessingError before: an invocation error on each delivery
    assert h.pump.failures == receives and h.pump.batches == receives
    dlq = h.sqs.receive_message(QueueUrl=h.dlq_url, MaxNumberOfMessages=10).get("Messages", [])
    assert [m["Body"] for m in dlq] == ["this is not json {"]
