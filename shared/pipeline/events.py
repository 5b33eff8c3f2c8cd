"""What arrives at on_upload: SQS messages whose bodies are S3 notifications.

Accepted bodies (Powertools' parser with the models below; S3 really sends the first two, and moto's
notifications carry no userIdentity/requestParameters/sequencer, so those are optional here):

    {"Service": "Amazon S3", "Event": "s3:TestEvent", ...}      sent once when notifications are set up
    {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put" | "ObjectRemoved:Delete" | ...,
                  "s3": {"bucket": {"name"},
                         "object": {"key" (URL-encoded), "size"?, "eTag"?, "sequencer"?}}}, ...]}

A body that is not JSON or not one of these raises `PoisonMessage`: that message alone fails, SQS
delivers it again and, after the queue's maxReceiveCount, moves it to the dead-letter queue. A record
whose key is not ours, or that names another bucket, is refused with a logged reason, recorded for the
operator (`Pipeline.refuse`: the ledger's refusal rows) and consumed (retrying cannot help). A retryable
failure (DynamoDB or S3 throttling) raises, so SQS retries.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import EmbeddingError, InvalidInput
from shared.pipeline import refusals
from shared.pipeline.keys import InvalidKey
from shared.pipeline.service import Outcome, Pipeline

log = logging.getLogger(__name__)
MAX_BODY_CHARS = 256 * 1024  # SQS's own message limit
MAX_RECORDS = 100


class PoisonMessage(InvalidInput):
    code = "poison_message"


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class S3Object(_Loose):
    key: str = Field(min_length=1, max_length=3072)
    size: int | None = None
    eTag: str | None = None
    sequencer: str | None = None


class S3Bucket(_Loose):
    name: str = Field(min_length=1, max_length=255)


class S3Entity(_Loose):
    bucket: S3Bucket
    object: S3Object


class S3Record(_Loose):
    eventSource: str
    eventName: str = Field(max_length=100)
    s3: S3Entity


class S3Notification(_Loose):
    Records: list[S3Record] = Field(min_length=1, max_length=MAX_RECORDS)


class S3TestEvent(_Loose):
    Event: str
    Service: str | None = None


def parse_body(body: Any) -> S3Notification | S3TestEvent:
    """The message body as a notification or a test event; PoisonMessage for anything else."""
    from aws_lambda_powertools.utilities.parser import parse

    if not isinstance(body, str) or len(body) > MAX_BODY_CHARS:
        raise PoisonMessage("the message body is missing or larger than SQS allows")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise PoisonMessage("the message body is not JSON") from None
    if not isinstance(doc, dict):
        raise PoisonMessage("the message body is not a JSON object")
    try:
        if doc.get("Event") == "s3:TestEvent":
            return parse(event=doc, model=S3TestEvent)
        return parse(event=doc, model=S3Notification)
    except (ValidationError, ValueError):
        raise PoisonMessage("the message body is not an S3 notification") from None


def handle_message(pipeline: Pipeline, body: Any) -> list[Outcome]:
    """Every record of one message, each on its own: a refused key never stops the others."""
    note = parse_body(body)
    if isinstance(note, S3TestEvent):
        log.info("S3 test event: notifications are set up")
        return [Outcome("skipped", "s3:TestEvent")]
    outcomes = []
    for i, rec in enumerate(note.Records):
        if rec.eventSource != "aws:s3" or rec.s3.bucket.name != pipeline.settings.bucket:
            log.warning("record %d refused: not an event of this stack's bucket", i)
            key = refusals.event_key(rec.s3.object.key)
            msg = "not an event of this stack's bucket"
            outcomes.append(pipeline.refuse(key, refusals.WRONG_BUCKET, msg, owned=False))
            continue
        try:
            out = pipeline.on_s3_record(rec.model_dump())
        except InvalidKey as e:
            log.warning("record %d refused: %s", i, e.public_message)
            out = pipeline.refuse(refusals.event_key(rec.s3.object.key), e.reason, e.public_message)
        except EmbeddingError as e:
            if e.retryable:
                raise
            log.warning("record %d failed: %s", i, e.public_message)
            out = Outcome("failed", e.public_message)
        else:
            log.info("record %d: %s (%s)", i, out.action, out.reason)
        outcomes.append(out)
    return outcomes
