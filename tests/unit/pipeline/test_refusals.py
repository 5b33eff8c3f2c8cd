"""Refused uploads are visible (shared.pipeline.refusals): each is one ledger row under its owner (else
the pseudo-owner) with a reason from a fixed set, its message and its key made safe to show; a ring per
owner bounds them, the table's TTL ends them; UploadsRefused counts them by reason. On the in-memory
ledger; tests/integration/pipeline/test_on_upload.py checks the rows on moto's DynamoDB."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_lambda_powertools import Logger, Metrics

from shared.dev.stack import _Context
from shared.errors import ConfigError
from shared.pipeline import refusals
from shared.pipeline.events import handle_message
from shared.pipeline.lambdas import build_on_upload
from shared.pipeline.ledger import REFUSED_ITEM, UNOWNED, item_pk
from shared.pipeline.settings import PipelineSettings
from tests.unit.pipeline.test_batch_failures import sqs_event
from tests.unit.pipeline.test_state_machine import Machine

SECRET = b"file content that must never reach the ledger"


def record(key: str, bucket: str = "b") -> dict[str, Any]:
    return {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 5}},
    }


def deliver(m: Machine, *records: dict[str, Any]) -> list[str]:
    return [o.action for o in handle_message(m.p, json.dumps({"Records": list(records)}))]


def stored_rows(m: Machine, owner: str) -> list[dict[str, Any]]:
    pk = item_pk(owner, REFUSED_ITEM)
    return [r for (p, _), r in m.ledger.table._rows.items() if p == pk]  # type: ignore[attr-defined]


def test_each_refusal_is_one_row_with_its_reason_under_its_owner_or_the_pseudo_owner() -> None:
    m = Machine(max_source_bytes=16)
    m.storage.put("uploads/me/big/v.mp4", SECRET)
    actions = deliver(
        m,
        record("uploads/me/harbour+clip/x.mp4"),  # the aws CLI's upload of "harbour clip/x.mp4"
        record("uploads/me/doc/notes.exe"),
        record("uploads/bad%20owner/i/x.mp4"),
        record("uploads/me/i/x.mp4", bucket="someone-elses"),
        record("elsewhere/me/i/x.mp4"),
        record("uploads/me/big/v.mp4"),
    )
    assert actions == ["refused"] * 6
    mine = m.p.refusals.of("me", 50)
    assert [(r["reason"], r["key"]) for r in mine] == [
        ("too_big", "uploads/me/big/v.mp4"),
        ("not_media", "uploads/me/doc/notes.exe"),
        ("bad_id", "uploads/me/harbour clip/x.mp4"),
    ]
    assert mine[2]["message"] == "item_id: item_id must match [A-Za-z0-9_-]{1,64}"
    assert mine[0]["message"] == "the source is larger than 16 bytes" and mine[0]["owner_id"] == "me"
    others = m.p.refusals.of(UNOWNED, 50)
    assert [(r["owner_id"], r["reason"]) for r in others] == [
        (None, "bad_key"),  # outside uploads/ and persons/: the owner part is not trusted
        (None, "wrong_bucket"),  # another bucket's event: never under an owner of this one
        (None, "bad_id"),
    ]
    assert m.p.refusals.owners() == ["me", UNOWNED]
    # nothing else changed for the refused keys: no item rows; the too-big item failed before any GPU work
    assert [r["item_id"] for r in m.ledger.owner_rows("me") if r["sk"] == "ITEM"] == ["big"]
    assert m.runpod.jobs == {}
    assert SECRET.decode() not in json.dumps(list(m.ledger.table._rows.values()), default=str)  # type: ignore[attr-defined]


def test_a_hostile_key_is_shown_escaped_and_cut() -> None:
    m = Machine()
    evil = "uploads/me/i/%E2%80%AEpm4.exe%1B%5B2J%0A" + "x" * 2000 + ".mp4"  # bidi override, ANSI, newline
    assert deliver(m, record(evil)) == ["refused"]
    (row,) = m.p.refusals.of("me", 50)
    assert row["key"].startswith("uploads/me/i/\\u202epm4.exe\\x1b[2J\\x0axxx")
    assert len(row["key"]) == refusals.MAX_SHOWN_KEY and row["key"].endswith("…")
    assert all(c.isprintable() for c in row["key"])
    assert refusals.shown("a\\b\u2028", 10) == "a\\\\b\\u2028"


def test_refusals_are_bounded_per_owner_and_for_the_pseudo_owner_and_expire() -> None:
    m = Machine(refusals_per_owner=3, refusals_unowned=5, refusals_days=1.0)
    for i in range(10):
        deliver(m, record(f"uploads/me/bad+{i}/x.mp4"), record(f"uploads/no+one/{i}/x.mp4"))
    assert len(stored_rows(m, "me")) == 1 + 3 and len(stored_rows(m, UNOWNED)) == 1 + 5  # HEAD + ring
    assert [r["seq"] for r in m.p.refusals.of("me", 3)] == [10, 9, 8]
    assert m.p.refusals.of("me", 3)[0]["key"] == "uploads/me/bad 9/x.mp4"
    assert [r["seq"] for r in m.p.refusals.of(UNOWNED, 5)] == [10, 9, 8, 7, 6]
    m.clock.t += 86400 + 1  # past REFUSALS_DAYS: DynamoDB may not have deleted them yet; reads skip them
    assert m.p.refusals.of("me", 3) == [] and m.p.refusals.owners() == []
    deliver(m, record("uploads/me/again+1/x.mp4"))
    assert [r["key"] for r in m.p.refusals.of("me", 3)] == ["uploads/me/again 1/x.mp4"]
    ttl = {r["expires_at"] for r in stored_rows(m, "me")}
    assert max(ttl) == int(m.clock.t + 86400)


def test_uploads_refused_is_counted_by_reason_from_a_fixed_set(capsys: pytest.CaptureFixture[str]) -> None:
    m = Machine()
    handler = build_on_upload(
        m.p, Logger(service="t-refused", level="ERROR"), Metrics(namespace="Tests", service="t")
    )
    body = json.dumps({"Records": [record("uploads/me/a+b/x.mp4"), record("uploads/me/i/x.exe")]})
    capsys.readouterr()
    assert handler(sqs_event(body), _Context("on_upload")) == {"batchItemFailures": []}
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    refused = [d for d in docs if "UploadsRefused" in d]
    assert sorted(d["reason"] for d in refused) == ["bad_id", "not_media"]
    (directive,) = refused[0]["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Tests" and sorted(directive["Dimensions"][0]) == ["reason", "service"]
    assert refusals.reason_code("uploads/me/i/<script>") == "other" and refusals.reason_code(None) == "other"


@pytest.mark.parametrize(("var", "value"), [("REFUSALS_PER_OWNER", "0"), ("REFUSALS_UNOWNED", "10001")])
def test_an_unbounded_ring_is_a_config_error(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        PipelineSettings.from_env({"MEDIA_BUCKET": "b", "LEDGER_TABLE": "t", var: value})


def test_the_admin_api_lists_refusals_of_every_owner_or_of_one() -> None:
    from shared.errors import InvalidInput
    from shared.pipeline.admin import Admin
    from shared.pipeline.reprocess import Reprocessor

    m = Machine()
    deliver(m, record("uploads/me/a+b/x.mp4"), record("uploads/bad+o/i/x.mp4"))
    admin = Admin(Reprocessor(m.p, object()))
    status, out = admin.route("GET", "/refusals", {}, None)
    assert status == 200 and [(r["owner_id"], r["reason"]) for r in out["refusals"]] == [
        ("me", "bad_id"),
        (None, "bad_id"),
    ]
    _, out = admin.route("GET", "/refusals", {"owner_id": "me", "limit": "1"}, None)
    assert [r["key"] for r in out["refusals"]] == ["uploads/me/a b/x.mp4"]
    with pytest.raises(InvalidInput) as e:
        admin.route("GET", "/refusals", {"owner_id": "bad one"}, None)
    assert e.value.field == "owner_id"
