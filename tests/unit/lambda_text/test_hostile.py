"""Hostile input always gets a 4xx, never a 500, and errors never echo what they refuse.

Named cases for each attack the text path has seen (issue 10), then a seeded fuzz run that mixes
them over every part of the event. All over the fake model: no socket, no real model."""

from __future__ import annotations

import base64
import json
import random
from types import SimpleNamespace
from typing import Any

import pytest

from shared.lambda_text import proxy
from tests.unit.lambda_text.fakes import Harness, make_harness

pytestmark = pytest.mark.unit

MAX_ERROR_BODY = 600  # bytes: an error body repeats at most a short prefix of what was sent
DEEP = 10_000
DIGITS = 5_000


def url_event(body: Any, *, headers: Any = None, b64: Any = False, method: Any = "POST", path: Any = "/"):
    return {
        "version": "2.0",
        "rawPath": path,
        "headers": {"content-type": "application/json"} if headers is None else headers,
        "requestContext": {"http": {"method": method, "path": path}},
        "isBase64Encoded": b64,
        "body": body,
    }


def valid(**fields: Any) -> dict:
    return {"batch_id": "b", "chunks": [{"chunk_id": "c0", "content": "hello"}], **fields}


def body_with(field: str, raw_json_value: str) -> str:
    """The JSON text of a valid request with one value replaced by `raw_json_value` (raw JSON)."""
    marker = "__RAW__"
    payload = valid()
    if field == "content":
        payload["chunks"][0]["content"] = marker
    else:
        payload[field] = marker
    return json.dumps(payload).replace(json.dumps(marker), raw_json_value)


def refused(resp: dict, status: int | None = None) -> dict:
    """Assert a proxy 4xx with a short error body and no traceback; return the error object."""
    assert 400 <= resp["statusCode"] < 500, resp
    if status is not None:
        assert resp["statusCode"] == status, resp
    assert len(resp["body"]) <= MAX_ERROR_BODY, resp["body"][:200]
    body = json.loads(resp["body"])
    assert set(body) == {"error"} and body["error"]["code"] != "internal_error", body
    assert "Traceback" not in resp["body"]
    return body["error"]


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


# ---------------------------------------------------------------- the named attacks


def test_json_nested_10000_deep_is_400(harness: Harness):
    err = refused(harness(url_event(body_with("dims", "[" * DEEP + "]" * DEEP))), 400)
    assert err["field"] == "body" and "nested too deeply" in err["message"]
    assert harness.model.embed_calls == []


def test_direct_event_nested_10000_deep_is_400(harness: Harness):
    err = harness(valid(dims=nested(DEEP)))["error"]
    assert err["code"] == "invalid_input" and err["field"] == "dims"


@pytest.mark.parametrize("field", ["dims", "batch_id", "content"])
def test_5000_digit_integers_in_the_body_are_400(harness: Harness, field: str):
    err = refused(harness(url_event(body_with(field, "9" * DIGITS))), 400)
    assert err["field"] == "body" and "too many digits" in err["message"]


@pytest.mark.parametrize("field", ["dims", "batch_id", "content"])
def test_5000_digit_integers_in_a_direct_event_are_400_and_not_echoed(harness: Harness, field: str):
    huge = 10 ** (DIGITS - 1)
    payload = valid()
    if field == "content":
        payload["chunks"][0]["content"] = huge
    else:
        payload[field] = huge
    err = harness(payload)["error"]
    assert err["code"] == "invalid_input"
    assert err["field"] == ("chunks[0].content" if field == "content" else field)
    assert "5000 digits" in err["message"] and len(err["message"]) < 200


@pytest.mark.parametrize("where", ["content", "batch_id", "chunk_id"])
def test_lone_surrogates_are_400_before_the_tokenizer(harness: Harness, where: str):
    bad = "abc\ud800def"
    payload = valid()
    if where == "content":
        payload["chunks"][0]["content"] = bad
    elif where == "chunk_id":
        payload["chunks"][0]["chunk_id"] = bad
    else:
        payload["batch_id"] = bad
    field = {"content": "chunks[0].content", "chunk_id": "chunks[0].chunk_id", "batch_id": "batch_id"}[where]
    err = harness(payload)["error"]
    assert err["field"] == field and "lone surrogate (\\ud800) at character 3" in err["message"]
    proxied = refused(harness(url_event(json.dumps(payload))), 400)  # json.dumps writes "\ud800"
    assert proxied == err
    assert harness.model.embed_calls == []


@pytest.mark.parametrize("value", [123, None, ["application/json"], {"a": 1}, True])
def test_non_string_header_values_are_400(harness: Harness, value: Any):
    err = refused(harness(url_event(json.dumps(valid()), headers={"content-type": value})), 400)
    assert err["field"] == "headers.content-type"


@pytest.mark.parametrize("headers", [["content-type", "application/json"], "application/json", 7])
def test_headers_that_are_not_an_object_are_400(harness: Harness, headers: Any):
    assert refused(harness(url_event(json.dumps(valid()), headers=headers)), 400)["field"] == "headers"


def test_other_headers_of_any_type_are_ignored(harness: Harness):
    headers = {"content-type": "application/json", "x-count": 3, "x-list": ["a"], "x-null": None}
    assert harness(url_event(json.dumps(valid()), headers=headers))["statusCode"] == 200


@pytest.mark.parametrize("value", ["false", "true", 0, 1, [], {}])
def test_is_base64_encoded_must_be_a_boolean(harness: Harness, value: Any):
    err = refused(harness(url_event(json.dumps(valid()), b64=value)), 400)
    assert err["field"] == "isBase64Encoded"


def test_is_base64_encoded_true_and_false_and_absent(harness: Harness):
    body = json.dumps(valid())
    assert harness(url_event(base64.b64encode(body.encode()).decode(), b64=True))["statusCode"] == 200
    assert harness(url_event(body, b64=False))["statusCode"] == 200
    event = url_event(body)
    del event["isBase64Encoded"]
    assert harness(event)["statusCode"] == 200


def test_base64_body_with_non_ascii_is_400(harness: Harness):
    assert refused(harness(url_event("é" + "A" * 10, b64=True)), 400)["field"] == "body"


def test_a_4000_digit_value_is_not_echoed(harness: Harness):
    direct = harness(valid(dims=-(10**3999)))["error"]
    assert "4000 digits" in direct["message"] and len(direct["message"]) < 200
    err = refused(harness(url_event(body_with("dims", "-" + "4" * 4000))), 400)
    assert "4444" not in err["message"]


def test_a_huge_unknown_key_is_shortened_in_the_error(harness: Harness):
    key = "k" * 1_000_000
    err = refused(harness(url_event(json.dumps(valid(**{key: 1})))), 400)
    assert err["field"].startswith("kkk") and len(err["field"]) <= 64
    dup = "d" * 500
    payload = {
        "batch_id": "b",
        "chunks": [{"chunk_id": dup, "content": "x"}, {"chunk_id": dup, "content": "y"}],
    }
    assert len(harness(payload)["error"]["message"]) < 200


def test_body_size_is_checked_before_decoding_or_parsing(monkeypatch):
    h = make_harness(max_body_bytes=1000)

    def no_parse(*_args, **_kwargs):
        raise AssertionError("an oversize body must be refused before it is parsed")

    stub_json = SimpleNamespace(loads=no_parse, dumps=json.dumps, JSONDecodeError=json.JSONDecodeError)
    monkeypatch.setattr(proxy, "json", stub_json)
    monkeypatch.setattr(proxy, "base64", SimpleNamespace(b64decode=no_parse))
    big = json.dumps(valid(batch_id="x" * 1000))
    err = refused(h(url_event(big)), 413)
    assert err["field"] == "body" and err["code"] == "payload_too_large" and "1000 bytes" in err["message"]
    assert refused(h(url_event(base64.b64encode(big.encode()).decode(), b64=True)), 413)
    multibyte = "é" * 600  # 600 characters, 1,200 bytes
    assert refused(h(url_event(json.dumps(valid(batch_id=multibyte), ensure_ascii=False))), 413)


def test_the_request_token_budget_is_413_before_any_work():
    h = make_harness(max_request_tokens=20)  # the fake counts words + 2
    ok = {"batch_id": "b", "chunks": [{"chunk_id": f"c{i}", "content": "one two three"} for i in range(4)]}
    assert "vectors" in h(ok)  # 4 x 5 = 20 tokens
    over = {**ok, "chunks": [*ok["chunks"], {"chunk_id": "c9", "content": "x"}]}
    err = h(over)["error"]
    assert err["code"] == "payload_too_large" and err["field"] == "chunks"
    assert "23 tokens" in err["message"] and "at most 20" in err["message"]
    assert len(h.model.embed_calls) == 1


def test_the_token_budget_counts_texts_after_the_cut():
    h = make_harness(max_request_tokens=300)
    long_text = " ".join(["w"] * 1000)  # 1,002 tokens, embedded as 256
    assert "vectors" in h({"batch_id": "b", "chunks": [{"chunk_id": "a", "content": long_text}]})
    two = [{"chunk_id": c, "content": long_text} for c in ("a", "b")]
    assert h({"batch_id": "b", "chunks": two})["error"]["message"].startswith("chunks: hold 512 tokens")


# ---------------------------------------------------------------- fuzz: everything stays 4xx


def _hostile_values(rng: random.Random) -> list[Any]:
    return [
        10 ** rng.randint(4000, 6000),
        -(10 ** rng.randint(19, 5000)),
        float("inf"),
        float("nan"),
        None,
        True,
        rng.random(),
        "abc\ud800def",
        "\udfff",
        "x" * rng.randint(600, 200_000),
        nested(rng.choice([10, 900, DEEP])),
        {"k" * rng.randint(100, 10_000): "v"},
        [],
        {},
        [{"chunk_id": 1}],
        "🚀" * 50,
    ]


def _raw_values(rng: random.Random) -> list[str]:
    return [
        "9" * rng.randint(4301, 6000),
        "-" + "1" * 5000,
        "[" * DEEP + "]" * DEEP,
        "{" * 3000,
        '{"a":' * DEEP + "1" + "}" * DEEP,
        '"abc\\ud800def"',
        '"\\udc00"',
        "1e99999",
        "NaN",
        "-Infinity",
        '"' + "y" * 100_000 + '"',
    ]


def _fuzz_payload(rng: random.Random) -> Any:
    payload: Any = valid(dims=rng.choice([None, 64]))
    for _ in range(rng.randint(1, 3)):
        target = rng.choice(
            ["batch_id", "chunks", "dims", "truncate", "content", "chunk_id", "extra", "root"]
        )
        value = rng.choice(_hostile_values(rng))
        if target == "root":
            payload = value
            break
        if target in {"content", "chunk_id"}:
            chunks = payload["chunks"]
            if isinstance(chunks, list) and chunks and isinstance(chunks[0], dict):
                chunks[0][target] = value
        elif target == "extra":
            payload[rng.choice(["x", "k" * 5000, "\ud800"])] = value
        else:
            payload[target] = value
    return payload


def _fuzz_event(rng: random.Random) -> Any:
    kind = rng.randrange(6)
    if kind == 0:  # a hostile payload, direct
        return _fuzz_payload(rng)
    if kind == 1:  # hostile raw JSON text in the body
        field = rng.choice(["dims", "batch_id", "content", "truncate"])
        return url_event(body_with(field, rng.choice(_raw_values(rng))))
    if kind == 2:  # a hostile payload in the body, maybe base64
        try:
            body = json.dumps(_fuzz_payload(rng))
        except (ValueError, RecursionError, TypeError):
            body = rng.choice(_raw_values(rng))
        if rng.random() < 0.3:
            return url_event(base64.b64encode(body.encode("utf-8", "surrogatepass")).decode(), b64=True)
        return url_event(body)
    if kind == 3:  # hostile envelope fields
        event = url_event(json.dumps(valid()))
        key = rng.choice(["headers", "isBase64Encoded", "body", "method", "path", "requestContext.http"])
        value = rng.choice([*_hostile_values(rng)[:8], "false", "GET", {"content-type": 5}, b"bytes"])
        if key == "method":
            event["requestContext"]["http"]["method"] = value
        elif key == "requestContext.http":
            event["requestContext"]["http"] = value
        elif key == "path":
            event["rawPath"] = value
        else:
            event[key] = value
        return event
    if kind == 4:  # garbage bodies and base64
        junk = "".join(chr(rng.randrange(0, 0x11000)) for _ in range(rng.randint(0, 200)))
        return url_event(junk, b64=rng.choice([True, False]))
    # body over the limit (the fuzz harness sets max_body_bytes=50_000)
    return url_event('{"batch_id": "' + "z" * 60_000 + '"}')


def test_fuzz_hostile_events_never_get_a_500():
    h = make_harness(max_body_bytes=50_000)
    rng = random.Random(10)
    statuses: dict[int, int] = {}
    for i in range(400):
        event = _fuzz_event(rng)
        out = h(event)
        if isinstance(event, dict) and isinstance(event.get("requestContext"), dict):
            status = out["statusCode"]
            if status != 200:
                refused(out)
        else:
            status = 200 if "vectors" in out else 400
            if "error" in out:
                assert out["error"]["code"] != "internal_error", (i, out)
                assert len(json.dumps(out)) <= MAX_ERROR_BODY, (i, json.dumps(out)[:200])
        statuses[status] = statuses.get(status, 0) + 1
    assert 500 not in statuses and sum(v for k, v in statuses.items() if 400 <= k < 500) > 300, statuses
    assert {400, 413} <= set(statuses)
