"""The local stack's SQS pump delivers as Lambda's event source mapping does: a batch stays invisible
for the queue's own VisibilityTimeout (template.yaml) while its invocation runs, and what failed comes
back soon. A pump that held batches for 2 s handed a slow batch to its second worker, and a redelivered
upload event that arrived after a spec change started a GPU job the test had not asked for."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from shared.dev.stack import Pump
from tests.integration.pipeline.harness import Harness


def _pump(h: Harness, handler: Any, **kw: Any) -> Pump:
    return Pump(h.sqs, h.queue_url, h.res.arn("UploadQueue"), handler, None, batch_size=2, **kw)


def _send(h: Harness, n: int) -> list[str]:
    bodies = [f"m{i}" for i in range(n)]
    for b in bodies:
        h.sqs.send_message(QueueUrl=h.queue_url, MessageBody=b)
    return bodies


def test_a_batch_is_held_for_the_queues_visibility_while_it_runs(h: Harness) -> None:
    attrs = h.sqs.get_queue_attributes(QueueUrl=h.queue_url, AttributeNames=["VisibilityTimeout"])
    seen: Counter = Counter()
    lock = threading.Lock()

    def slow(event: dict, _ctx: Any) -> dict:
        with lock:
            seen.update(r["body"] for r in event["Records"])
        time.sleep(3)  # longer than the 2 s the pump used to hold a batch for
        return {"batchItemFailures": []}

    bodies = _send(h, 4)
    pump = _pump(h, slow, workers=2)
    assert pump.visibility_s == int(attrs["Attributes"]["VisibilityTimeout"]) > 3
    pump.start()
    try:
        deadline = time.monotonic() + 60
        while sum(seen.values()) < len(bodies) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # a second worker would receive the slow batch again here
    finally:
        pump.stop()
    assert seen == Counter(bodies)  # each message handled once
    assert pump.redelivered == 0


def test_what_failed_comes_back_after_retry_after_s(h: Harness) -> None:
    calls: list[list[str]] = []

    def fail_first(event: dict, _ctx: Any) -> dict:
        calls.append([r["body"] for r in event["Records"]])
        if len(calls) == 1:
            return {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
        return {"batchItemFailures": []}

    _send(h, 1)
    pump = _pump(h, fail_first, retry_after_s=1)
    assert pump.deliver_once(wait_s=0) == 1 and pump.failures == 1
    deadline = time.monotonic() + 30  # the queue's visibility timeout is 360 s
    while len(calls) < 2 and time.monotonic() < deadline:
        pump.deliver_once(wait_s=1)
    assert calls == [["m0"], ["m0"]] and pump.redelivered == 1
    assert pump.deliver_once(wait_s=1) == 0  # handled: deleted
