"""The text handler's contract (seed 003) over a fake model: shapes, every validation error, options,
logs and EMF metrics. The real-model run of the same sample events is tests/integration/lambda_text."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from shared.lambda_text import BATCH_COMPLETED, BATCH_REJECTED, BATCH_STARTED
from tests.unit.lambda_text.fakes import Harness, emf_blobs, make_harness
from tests.unit.lambda_text.sample_events import EXPECTED, check_outcome, event_files, load_event

pytestmark = pytest.mark.unit


def chunks(n: int, text: str = "some text") -> list[dict]:
    return [{"chunk_id": f"c{i}", "content": f"{text} {i}"} for i in range(n)]


def ok(n: int = 2, **extra) -> dict:
    return {"batch_id": "b1", "chunks": chunks(n), **extra}


def url_event(body: str | None, *, method: str = "POST", headers: dict | None = None, b64: bool = False):
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "headers": {"content-type": "application/json"} if headers is None else headers,
        "requestContext": {"http": {"method": method, "path": "/"}, "requestId": "r1"},
        "isBase64Encoded": b64,
    }
    if body is not None:
        event["body"] = base64.b64encode(body.encode()).decode() if b64 else body
    return event


def rest_event(body: str, *, method: str = "POST") -> dict:
    return {
        "resource": "/embed",
        "path": "/embed",
        "httpMethod": method,
        "headers": {"Content-Type": "application/json"},
        "requestContext": {"httpMethod": method, "stage": "prod", "requestId": "r1"},
        "body": body,
        "isBase64Encoded": False,
    }


# ---------------------------------------------------------------- sample events (infra/events/embed_text)


def test_every_sample_event_has_an_expectation():
    assert sorted(p.name for p in event_files()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_event(harness: Harness, name: str):
    check_outcome(name, harness(load_event(name)))


# ---------------------------------------------------------------- response shape, direct vs proxy


def test_direct_response_shape(harness: Harness):
    out = harness(ok(3))
    assert set(out) == {"batch_id", "model", "dims", "vectors"}
    assert out["batch_id"] == "b1"
    assert out["model"] == "fake-minilm@test"
    assert out["dims"] == 384
    assert [v["chunk_id"] for v in out["vectors"]] == ["c0", "c1", "c2"]
    for v in out["vectors"]:
        assert set(v) == {"chunk_id", "vector"}
        assert all(type(x) is float for x in v["vector"])
        assert np.linalg.norm(v["vector"]) == pytest.approx(1.0, abs=1e-5)
    json.dumps(out)  # JSON-serialisable as Lambda returns it


def test_proxy_v2_v1_and_direct_give_the_same_body(harness: Harness):
    payload = ok(2)
    direct = harness(payload)
    v2 = harness(url_event(json.dumps(payload)))
    v1 = harness(rest_event(json.dumps(payload)))
    b64 = harness(url_event(json.dumps(payload), b64=True))
    for resp in (v2, v1, b64):
        assert resp["statusCode"] == 200
        assert resp["headers"]["content-type"] == "application/json"
        assert resp["isBase64Encoded"] is False
        assert json.loads(resp["body"]) == direct


def test_order_follows_the_request_not_the_ids(harness: Harness):
    payload = {"batch_id": "b", "chunks": [{"chunk_id": c, "content": c} for c in ("z", "a", "m")]}
    out = harness(payload)
    assert [v["chunk_id"] for v in out["vectors"]] == ["z", "a", "m"]
    assert harness.model.embed_calls == [["z", "a", "m"]]


@pytest.mark.parametrize("content", ["", "   ", "\n\t"])
def test_empty_and_whitespace_content_is_embedded(harness: Harness, content: str):
    out = harness({"batch_id": "b", "chunks": [{"chunk_id": "e", "content": content}]})
    assert np.linalg.norm(out["vectors"][0]["vector"]) == pytest.approx(1.0, abs=1e-5)
    assert harness.model.embed_calls == [[content]]


def test_content_type_with_charset_and_json_suffix_and_none_are_accepted(harness: Harness):
    body = json.dumps(ok(1))
    for headers in (
        {"Content-Type": "application/json; charset=utf-8"},
        {"content-type": "application/vnd.api+json"},
        {},
    ):
        assert harness(url_event(body, headers=headers))["statusCode"] == 200, headers


# ---------------------------------------------------------------- validation: status, code, field path

BAD_PAYLOADS = [
    # (id, payload, status, field, message fragment)
    ("not-an-object", ["x"], 400, None, "must be a JSON object, got array"),
    ("missing-batch-id", {"chunks": chunks(1)}, 400, "batch_id", "is required"),
    ("empty-batch-id", {"batch_id": "", "chunks": chunks(1)}, 400, "batch_id", "must not be empty"),
    ("number-batch-id", {"batch_id": 12, "chunks": chunks(1)}, 400, "batch_id", "got number 12"),
    ("missing-chunks", {"batch_id": "b"}, 400, "chunks", "is required"),
    ("empty-batch", {"batch_id": "b", "chunks": []}, 400, "chunks", "at least one chunk"),
    ("chunks-not-array", {"batch_id": "b", "chunks": {"c": "x"}}, 400, "chunks", "array of chunks"),
    ("chunk-not-object", {"batch_id": "b", "chunks": ["text"]}, 400, "chunks[0]", "must be an object"),
    (
        "missing-chunk-id",
        {"batch_id": "b", "chunks": [*chunks(3), {"content": "x"}]},
        400,
        "chunks[3].chunk_id",
        "is required",
    ),
    (
        "empty-chunk-id",
        {"batch_id": "b", "chunks": [{"chunk_id": "", "content": "x"}]},
        400,
        "chunks[0].chunk_id",
        "must not be empty",
    ),
    (
        "number-chunk-id",
        {"batch_id": "b", "chunks": [{"chunk_id": 7, "content": "x"}]},
        400,
        "chunks[0].chunk_id",
        "must be a string, got number 7",
    ),
    (
        "long-chunk-id",
        {"batch_id": "b", "chunks": [{"chunk_id": "x" * 513, "content": "x"}]},
        400,
        "chunks[0].chunk_id",
        "at most 512 characters",
    ),
    (
        "missing-content",
        {"batch_id": "b", "chunks": [{"chunk_id": "a"}]},
        400,
        "chunks[0].content",
        "is required",
    ),
    (
        "null-content",
        {"batch_id": "b", "chunks": [{"chunk_id": "a", "content": None}]},
        400,
        "chunks[0].content",
        "must be a string, got null",
    ),
    (
        "list-content",
        {"batch_id": "b", "chunks": [{"chunk_id": "a", "content": ["x"]}]},
        400,
        "chunks[0].content",
        "must be a string, got array",
    ),
    (
        "duplicate-ids",
        {"batch_id": "b", "chunks": [*chunks(2), {"chunk_id": "c0", "content": "again"}]},
        400,
        "chunks[2].chunk_id",
        "duplicate chunk_id 'c0' (also at chunks[0])",
    ),
    (
        "unknown-top-field",
        ok(1, normalize=True),
        400,
        "normalize",
        "unknown field; allowed: batch_id, chunks",
    ),
    (
        "unknown-chunk-field",
        {"batch_id": "b", "chunks": [{"chunk_id": "a", "content": "x", "text": "y"}]},
        400,
        "chunks[0].text",
        "unknown field; allowed: chunk_id, content",
    ),
    ("dims-zero", ok(1, dims=0), 400, "dims", "between 1 and 384, got 0"),
    ("dims-too-big", ok(1, dims=385), 400, "dims", "between 1 and 384, got 385"),
    ("dims-string", ok(1, dims="64"), 400, "dims", "must be an integer, got string"),
    ("dims-float", ok(1, dims=64.0), 400, "dims", "must be an integer, got number 64.0"),
    ("dims-bool", ok(1, dims=True), 400, "dims", "must be an integer, got boolean true"),
    ("truncate-string", ok(1, truncate="false"), 400, "truncate", "must be a boolean"),
    (
        "truncate-number",
        ok(1, truncate=0),
        400,
        "truncate",
        "must be a boolean (true or false), got number 0",
    ),
]


@pytest.mark.parametrize(
    ("payload", "status", "field", "fragment"),
    [p[1:] for p in BAD_PAYLOADS],
    ids=[p[0] for p in BAD_PAYLOADS],
)
def test_bad_payload(harness: Harness, payload, status: int, field: str | None, fragment: str):
    direct = harness(payload)
    assert set(direct) == {"error"}
    err = direct["error"]
    assert err["field"] == field
    assert fragment in err["message"], err["message"]
    if field:
        assert err["message"].startswith(f"{field}: ")
    assert err["code"] == ("payload_too_large" if status == 413 else "invalid_input")

    proxied = harness(url_event(json.dumps(payload)))
    assert proxied["statusCode"] == status
    assert json.loads(proxied["body"]) == direct
    assert harness.model.embed_calls == []  # nothing embedded for a refused batch


def test_several_problems_report_the_first_and_count_the_rest(harness: Harness):
    err = harness({"batch_id": 1, "chunks": [{"chunk_id": 2}]})["error"]
    assert err["field"] == "batch_id"
    assert "(and 2 more problems)" in err["message"]


def test_too_many_chunks_is_413_before_any_work():
    h = make_harness(max_chunks=4)
    assert "vectors" in h(ok(4))
    resp = h(url_event(json.dumps(ok(5))))
    body = json.loads(resp["body"])
    assert resp["statusCode"] == 413
    assert body["error"] == {
        "code": "payload_too_large",
        "message": "chunks: has 5 chunks; at most 4 per request (split the batch)",
        "field": "chunks",
    }
    # Counted before validation: a refused oversized batch with bad chunks is still a 413.
    assert h({"batch_id": "b", "chunks": [1, 2, 3, 4, 5]})["error"]["code"] == "payload_too_large"
    assert len(h.model.embed_calls) == 1


def test_oversize_content_is_413_naming_the_chunk():
    h = make_harness(max_content_chars=10)
    payload = {
        "batch_id": "b",
        "chunks": [{"chunk_id": "a", "content": "x" * 10}, {"chunk_id": "b", "content": "y" * 11}],
    }
    resp = h(url_event(json.dumps(payload)))
    err = json.loads(resp["body"])["error"]
    assert resp["statusCode"] == 413
    assert err["field"] == "chunks[1].content"
    assert "is 11 characters; at most 10 per chunk" in err["message"]
    assert h.model.embed_calls == []


# ---------------------------------------------------------------- HTTP-level errors


@pytest.mark.parametrize(
    ("event", "status", "code", "field", "fragment"),
    [
        (url_event("{not json"), 400, "invalid_input", "body", "is not valid JSON"),
        (url_event(""), 400, "invalid_input", "body", "is empty"),
        (url_event(None), 400, "invalid_input", "body", "is empty"),
        (
            {**url_event("x"), "body": "%%%not-base64", "isBase64Encoded": True},
            400,
            "invalid_input",
            "body",
            "base64",
        ),
        (
            {**url_event("x"), "body": base64.b64encode(b"\xff\xfe{}").decode(), "isBase64Encoded": True},
            400,
            "invalid_input",
            "body",
            "is not UTF-8",
        ),
        (url_event("[1, 2]"), 400, "invalid_input", None, "must be a JSON object, got array"),
        (
            url_event(None, method="GET"),
            405,
            "method_not_allowed",
            None,
            "method GET is not allowed; use POST",
        ),
        (rest_event("{}", method="PUT"), 405, "method_not_allowed", None, "method PUT is not allowed"),
        (
            url_event("a=b", headers={"content-type": "text/plain"}),
            415,
            "unsupported_media_type",
            None,
            "'text/plain' is not supported; send application/json",
        ),
    ],
    ids=[
        "not-json",
        "empty-body",
        "no-body",
        "bad-base64",
        "not-utf8",
        "json-array",
        "get",
        "put-v1",
        "text",
    ],
)
def test_http_errors(harness: Harness, event: dict, status: int, code: str, field, fragment: str):
    resp = harness(event)
    body = json.loads(resp["body"])
    assert resp["statusCode"] == status
    assert resp["headers"]["content-type"] == "application/json"
    assert body["error"]["code"] == code
    assert body["error"]["field"] == field
    assert fragment in body["error"]["message"], body
    if status == 405:
        assert resp["headers"]["allow"] == "POST"


# ---------------------------------------------------------------- dims option


@pytest.mark.parametrize("k", [1, 64, 128, 383])
def test_dims_truncates_and_renormalises(harness: Harness, k: int):
    full = np.asarray([v["vector"] for v in harness(ok(3))["vectors"]], dtype=np.float32)
    out = harness(ok(3, dims=k))
    cut = np.asarray([v["vector"] for v in out["vectors"]], dtype=np.float32)
    assert out["dims"] == k
    assert cut.shape == (3, k)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    expect = full[:, :k] / np.linalg.norm(full[:, :k], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expect, atol=1e-6)


def test_dims_equal_to_model_width_is_the_full_vector(harness: Harness):
    assert harness(ok(2, dims=384)) == harness(ok(2)) == harness(ok(2, dims=None))


# ---------------------------------------------------------------- truncate option


def long_text(words: int) -> str:
    return " ".join(f"w{i}" for i in range(words))


def test_truncate_false_refuses_an_over_long_text_naming_it_and_its_token_count(harness: Harness):
    payload = {
        "batch_id": "b",
        "truncate": False,
        "chunks": [
            {"chunk_id": "short", "content": "hi"},
            {"chunk_id": "exact", "content": long_text(254)},  # 254 + [CLS] + [SEP] = 256: fits
            {"chunk_id": "long", "content": long_text(300)},
            {"chunk_id": "longer", "content": long_text(400)},
        ],
    }
    resp = harness(url_event(json.dumps(payload)))
    err = json.loads(resp["body"])["error"]
    assert resp["statusCode"] == 400
    assert err["field"] == "chunks[2].content"
    assert "is 302 tokens; the model reads at most 256" in err["message"]
    assert "1 more chunk(s) are over the limit" in err["message"]
    assert harness.model.embed_calls == []


def test_truncate_true_and_default_embed_over_long_texts(harness: Harness):
    payload = {"batch_id": "b", "chunks": [{"chunk_id": "long", "content": long_text(1000)}]}
    assert len(harness(payload)["vectors"]) == 1
    assert len(harness({**payload, "truncate": True})["vectors"]) == 1


def test_truncate_default_comes_from_settings():
    h = make_harness(truncate=False)
    payload = {"batch_id": "b", "chunks": [{"chunk_id": "long", "content": long_text(300)}]}
    assert h(payload)["error"]["field"] == "chunks[0].content"
    assert len(h({**payload, "truncate": True})["vectors"]) == 1


# ---------------------------------------------------------------- internal faults: 500, no traceback


def test_a_bug_in_the_model_is_a_500_without_internals(harness: Harness, monkeypatch):
    def boom(texts):
        raise RuntimeError("secret internal detail /opt/models/x")

    monkeypatch.setattr(harness.model, "embed", boom)
    resp = harness(url_event(json.dumps(ok(1))))
    body = json.loads(resp["body"])
    assert resp["statusCode"] == 500
    assert body["error"]["code"] == "internal_error"
    assert body["error"]["message"].startswith("internal error; request id ")
    assert "secret" not in resp["body"] and "Traceback" not in resp["body"]
    direct = harness(ok(1))
    assert direct["error"]["code"] == "internal_error" and "secret" not in json.dumps(direct)
    failed = [r for r in harness.logs() if r["message"] == "embedding.batch_failed.v1"]
    assert failed and "secret internal detail" in failed[0]["exception"]  # the log keeps the traceback


def test_non_finite_vectors_are_refused_as_model_unhealthy(harness: Harness, monkeypatch):
    monkeypatch.setattr(harness.model, "embed", lambda texts: np.full((len(texts), 384), np.nan, np.float32))
    err = harness(ok(2))["error"]
    assert err["code"] == "model_unhealthy"
    monkeypatch.setattr(harness.model, "embed", lambda texts: np.ones((len(texts), 10), np.float32))
    assert harness(url_event(json.dumps(ok(2))))["statusCode"] == 500


# ---------------------------------------------------------------- logs and EMF metrics


def test_logs_batch_started_and_completed_with_duration(harness: Harness):
    harness(ok(3, batch_id="b-logs"))
    records = harness.logs()
    events = [r["message"] for r in records]
    assert events == [BATCH_STARTED, BATCH_COMPLETED]
    started, completed = records
    assert started["batch_id"] == completed["batch_id"] == "b-logs"
    assert started["chunk_count"] == completed["chunk_count"] == 3
    assert completed["event"] == BATCH_COMPLETED
    assert isinstance(completed["duration_ms"], float) and completed["duration_ms"] >= 0
    assert completed["dims"] == 384 and completed["model"] == "fake-minilm@test"
    assert started["level"] == "INFO"
    assert started["function_name"] == "embed-text-test"  # inject_lambda_context
    assert started["function_request_id"]


def test_logs_rejections(harness: Harness):
    harness({"batch_id": "b", "chunks": []})
    (record,) = harness.logs()
    assert record["message"] == BATCH_REJECTED
    assert record["level"] == "WARNING"
    assert record["field"] == "chunks" and record["status"] == 400 and record["code"] == "invalid_input"


def test_emf_metrics_for_a_batch(harness: Harness, capsys):
    harness(ok(3))
    blobs = emf_blobs(capsys.readouterr().out)
    values = {}
    for blob in blobs:
        (directive,) = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "ServerlessEmbeddingsTest"
        for metric in directive["Metrics"]:
            values[metric["Name"]] = (blob[metric["Name"]], metric["Unit"])
    assert values["ChunksEmbedded"] == ([3.0], "Count")
    (duration,), unit = values["BatchDurationMs"]
    assert unit == "Milliseconds" and duration >= 0
    assert "ValidationErrors" not in values


def test_emf_metrics_for_a_rejection(harness: Harness, capsys):
    harness(url_event("{oops"))
    blobs = emf_blobs(capsys.readouterr().out)
    names = {m["Name"] for b in blobs for d in b["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert "ValidationErrors" in names
    assert "ChunksEmbedded" not in names
