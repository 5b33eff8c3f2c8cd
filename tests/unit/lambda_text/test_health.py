"""GET /health (seed 003, deep), the cold-start self-check report, and the text settings."""

from __future__ import annotations

import json

import pytest

from shared.errors import ConfigError
from shared.lambda_text.app import MODEL_SELECTED
from shared.models.minilm_onnx import SelfCheck, cpu_info
from shared.settings import TextSettings
from tests.unit.lambda_text.fakes import FakeTextModel, Harness, emf_blobs, make_harness

pytestmark = pytest.mark.unit


def get(path: str, *, v1: bool = False) -> dict:
    if v1:
        return {"httpMethod": "GET", "path": path, "headers": {}, "requestContext": {"stage": "prod"}}
    return {"version": "2.0", "rawPath": path, "headers": {}, "requestContext": {"http": {"method": "GET"}}}


def test_health_is_200_from_the_loaded_model(harness: Harness):
    for event in (get("/health"), get("/health/"), get("/health", v1=True)):
        resp = harness(event)
        assert resp["statusCode"] == 200
        assert json.loads(resp["body"]) == {
            "status": "healthy",
            "model_loaded": True,
            "embedding_dim": 384,
            "model": "fake-minilm@test",
            "precision": "fp32",
        }


def test_health_is_503_when_the_deep_check_fails(harness: Harness, capsys):
    harness.model.healthy = False
    resp = harness(get("/health"))
    assert resp["statusCode"] == 503
    body = json.loads(resp["body"])
    assert body["status"] == "unhealthy" and body["model_loaded"] is True and body["precision"] == "fp32"
    assert body["error"]["code"] == "model_unhealthy" and "cosine" in body["error"]["message"]
    names = {
        m["Name"]
        for b in emf_blobs(capsys.readouterr().out)
        for d in b["_aws"]["CloudWatchMetrics"]
        for m in d["Metrics"]
    }
    assert "HealthCheckFailures" in names


def test_health_is_503_without_a_traceback_when_the_check_crashes(harness: Harness, monkeypatch):
    def crash() -> None:
        raise RuntimeError("onnxruntime: secret internal detail")

    monkeypatch.setattr(harness.model, "health", crash)
    resp = harness(get("/health"))
    assert resp["statusCode"] == 503
    assert json.loads(resp["body"])["error"] == {
        "code": "internal_error",
        "message": "health check failed",
        "field": None,
    }


def test_other_gets_stay_405_and_post_health_embeds(harness: Harness):
    assert harness(get("/"))["statusCode"] == 405
    assert harness(get("/healthz"))["statusCode"] == 405
    post = get("/health")
    post["requestContext"]["http"]["method"] = "POST"
    post["body"] = json.dumps({"batch_id": "b", "chunks": [{"chunk_id": "a", "content": "x"}]})
    assert "vectors" in json.loads(harness(post)["body"])


def test_the_self_check_is_logged_once_and_emitted_as_metrics(capsys):
    check = SelfCheck(
        "auto", "int8", 0.9973, "int8 min probe cosine 0.9973 >= 0.995", "Xeon", ("avx2", "vnni"), 0.2
    )
    model = FakeTextModel(self_check=check)
    model.precision = "int8"
    h = make_harness(model=model)
    blobs = emf_blobs(capsys.readouterr().out)
    values = {
        m["Name"]: blob[m["Name"]]
        for blob in blobs
        for d in blob["_aws"]["CloudWatchMetrics"]
        for m in d["Metrics"]
    }
    assert values == {"TextInt8Serving": [1.0], "TextInt8ProbeMinCosine": [0.9973]}
    assert all(blob["precision"] == "int8" and blob["isa"] == "avx2+vnni" for blob in blobs)
    h({"batch_id": "b", "chunks": [{"chunk_id": "a", "content": "x"}]})
    selected = [r for r in h.logs() if r["message"] == MODEL_SELECTED]
    assert len(selected) == 1 and selected[0]["precision"] == "int8"
    assert selected[0]["int8_min_cosine"] == 0.9973 and selected[0]["isa"] == "avx2+vnni"


def test_fp32_without_a_measurement_emits_only_the_choice(capsys):
    make_harness(
        model=FakeTextModel(self_check=SelfCheck("fp32", "fp32", None, "TEXT_PRECISION=fp32", "x", (), 0))
    )
    blobs = emf_blobs(capsys.readouterr().out)
    assert [
        (m["Name"], b[m["Name"]]) for b in blobs for d in b["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]
    ] == [("TextInt8Serving", [0.0])]


@pytest.mark.parametrize("value", ["auto", "int8", "fp32"])
def test_text_precision_setting(value: str):
    assert TextSettings.from_env({"TEXT_PRECISION": value}).precision == value


def test_text_settings_defaults_and_bad_values():
    settings = TextSettings.from_env({})
    assert settings.precision == "auto" and settings.max_request_tokens == 32_768
    assert settings.max_body_bytes == 6_291_456
    custom = TextSettings.from_env({"TEXT_MAX_REQUEST_TOKENS": "1000", "TEXT_MAX_BODY_BYTES": "2048"})
    assert (custom.max_request_tokens, custom.max_body_bytes) == (1000, 2048)
    for name, bad in (
        ("TEXT_PRECISION", "INT8"),
        ("TEXT_PRECISION", "fp16"),
        ("TEXT_MAX_REQUEST_TOKENS", "0"),
    ):
        with pytest.raises(ConfigError, match=f"{name}=.*example: {name}="):
            TextSettings.from_env({name: bad})
    assert TextSettings.from_env({"TEXT_INT8": "1"}).precision == "auto"  # the old switch is gone


def test_cpu_info_reads_model_and_isa():
    text = (
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\n"
        "flags\t\t: fpu sse avx2 avx512f avx512_vnni amx_int8 amx_tile\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: fpu\n"
    )
    assert cpu_info(text) == ("Intel(R) Xeon(R) Platinum 8488C", ("avx2", "avx512", "vnni", "amx"))
    assert cpu_info("model name : AMD EPYC 7R13\nflags : sse avx2 fma\n") == ("AMD EPYC 7R13", ("avx2",))
    assert cpu_info("") == ("unknown", ())
    assert isinstance(cpu_info()[1], tuple)
