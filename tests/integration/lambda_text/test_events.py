"""The text handler with the real MiniLM ONNX model, fed the same sample events as `sam local invoke`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from aws_lambda_powertools import Logger, Metrics

from shared.lambda_text import build_handler
from shared.models.minilm_onnx import MiniLMOnnx
from shared.settings import REPO_ROOT, TextSettings
from tests.unit.lambda_text.fakes import LambdaContext
from tests.unit.lambda_text.sample_events import EVENTS_DIR, EXPECTED, check_outcome, load_event

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def real_model(minilm_model_dir: Path) -> MiniLMOnnx:
    env = {"MODEL_DIR": str(minilm_model_dir), "TEXT_THREADS": "1"}  # TEXT_PRECISION: auto, the default
    model = MiniLMOnnx.load(TextSettings.from_env(env))
    model.warmup()
    return model


@pytest.fixture
def handler(real_model: MiniLMOnnx, minilm_model_dir: Path):
    settings = TextSettings.from_env({"MODEL_DIR": str(minilm_model_dir)})
    service = f"embed-text-it-{uuid.uuid4().hex[:8]}"
    fn = build_handler(
        real_model,
        settings,
        logger=Logger(service=service, stream=io.StringIO()),
        metrics=Metrics(namespace="ServerlessEmbeddingsTest", service=service),
    )
    return lambda event: fn(event, LambdaContext())


def matrix(body: dict) -> np.ndarray:
    return np.asarray([v["vector"] for v in body["vectors"]], dtype=np.float32)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_event_with_the_real_model(handler, name: str):
    body = check_outcome(name, handler(load_event(name)))
    if "vectors" in body:
        vecs = matrix(body)
        assert np.isfinite(vecs).all()
        np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
        assert body["model"].startswith("sentence-transformers/all-MiniLM-L6-v2@")


def test_every_shape_gives_the_same_vectors(handler):
    direct = matrix(handler(load_event("direct.json")))
    for name in ("function_url.json", "function_url_base64.json", "apigw_v1.json"):
        proxied = matrix(json.loads(handler(load_event(name))["body"]))
        np.testing.assert_allclose(proxied, direct, atol=1e-6, err_msg=name)


def test_vectors_carry_meaning(handler):
    texts = {
        "cat": "a cat sleeping on a sofa",
        "kitten": "A small kitten curled up and dozed off on the living-room couch.",
        "stocks": "quarterly earnings report for the stock market",
    }
    out = handler({"batch_id": "sem", "chunks": [{"chunk_id": k, "content": v} for k, v in texts.items()]})
    cat, kitten, stocks = matrix(out)
    assert float(cat @ kitten) > float(cat @ stocks) + 0.2


def test_dims_on_the_real_model(handler):
    event = load_event("direct_dims.json")
    cut = matrix(handler(event))
    full = matrix(handler({**event, "dims": None}))
    assert cut.shape == (2, 128)
    prefix = full[:, :128] / np.linalg.norm(full[:, :128], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, prefix, atol=1e-5)


def test_truncate_false_counts_real_tokens(handler, real_model: MiniLMOnnx):
    long_text = "embedding " * 400
    payload = {"batch_id": "t", "chunks": [{"chunk_id": "long", "content": long_text}], "truncate": False}
    err = handler(payload)["error"]
    (n,) = real_model.token_counts([long_text])
    assert n > real_model.max_tokens
    assert err["field"] == "chunks[0].content"
    assert f"is {n} tokens; the model reads at most {real_model.max_tokens}" in err["message"]
    ok = handler({**payload, "truncate": True})
    assert np.isfinite(matrix(ok)).all()


def test_health_with_the_real_model(handler, real_model: MiniLMOnnx):
    body = json.loads(handler(load_event("health_get.json"))["body"])
    assert body["model"] == real_model.model_label and body["precision"] == real_model.precision


def test_a_request_over_the_token_budget_is_413(real_model: MiniLMOnnx, minilm_model_dir: Path):
    settings = TextSettings.from_env({"MODEL_DIR": str(minilm_model_dir), "TEXT_MAX_REQUEST_TOKENS": "600"})
    service = f"embed-text-it-{uuid.uuid4().hex[:8]}"
    fn = build_handler(
        real_model,
        settings,
        logger=Logger(service=service, stream=io.StringIO()),
        metrics=Metrics(namespace="ServerlessEmbeddingsTest", service=service),
    )
    passage = " ".join(["embedding"] * 400)  # 402 tokens, cut to 256
    two = [{"chunk_id": str(i), "content": passage} for i in range(2)]
    assert len(fn({"batch_id": "t", "chunks": two}, LambdaContext())["vectors"]) == 2  # 512 tokens
    err = fn({"batch_id": "t", "chunks": [*two, {"chunk_id": "x", "content": passage}]}, LambdaContext())
    assert err["error"]["code"] == "payload_too_large" and "768 tokens" in err["error"]["message"]


def test_a_lone_surrogate_never_reaches_the_tokenizer(handler):
    err = handler({"batch_id": "s", "chunks": [{"chunk_id": "a", "content": "abc\ud800def"}]})["error"]
    assert err["code"] == "invalid_input" and err["field"] == "chunks[0].content"


def run_handler_module(model_dir: Path, event_file: Path) -> subprocess.CompletedProcess:
    """Cold-start the real handler module in a fresh interpreter, as Lambda does, and invoke it once."""
    code = (
        "import json, sys\n"
        "from handlers.aws_lambda.embed_text import handler\n"
        "from tests.unit.lambda_text.fakes import LambdaContext\n"
        "out = handler(json.load(open(sys.argv[1])), LambdaContext())\n"
        "print('RESULT ' + json.dumps(out))\n"
    )
    env = {**os.environ, "MODEL_DIR": str(model_dir), "POWERTOOLS_METRICS_NAMESPACE": "SE-IT"}
    return subprocess.run(
        [sys.executable, "-c", code, str(event_file)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO_ROOT,
    )


def test_the_handler_module_cold_starts_and_serves(minilm_model_dir: Path):
    proc = run_handler_module(minilm_model_dir, EVENTS_DIR / "function_url.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    (result,) = [json.loads(line[len("RESULT ") :]) for line in lines if line.startswith("RESULT ")]
    check_outcome("function_url.json", result)
    records = [json.loads(line) for line in lines if line.startswith("{")]
    messages = [r.get("message") for r in records]
    assert "embedding.batch_started.v1" in messages and "embedding.batch_completed.v1" in messages
    (selected,) = [r for r in records if r.get("message") == "embedding.model_selected.v1"]
    assert selected["precision"] in {"int8", "fp32"} and selected["precision_requested"] == "auto"
    assert result["body"] and json.loads(result["body"])["model"].endswith(f"onnx-{selected['precision']}")
    emf = [r for r in records if "_aws" in r]
    assert any("TextInt8Serving" in r for r in emf)
    assert emf and {d["Namespace"] for r in emf for d in r["_aws"]["CloudWatchMetrics"]} == {"SE-IT"}
    assert any("ChunksEmbedded" in r for r in emf)


def test_a_missing_model_fails_the_init_naming_dir_and_command(tmp_path: Path):
    proc = run_handler_module(tmp_path, EVENTS_DIR / "direct.json")
    assert proc.returncode != 0
    assert "ModelNotFound" in proc.stderr
    assert str(tmp_path) in proc.stderr
    assert "se bake" in proc.stderr or "setup-models" in proc.stderr
    assert "RESULT" not in proc.stdout
