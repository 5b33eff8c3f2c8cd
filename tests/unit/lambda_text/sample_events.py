"""The sample events in infra/events/embed_text and their expected outcomes (expected.json beside them).

Shared by the unit contract test (fake model) and the integration test (real ONNX model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.settings import REPO_ROOT

EVENTS_DIR = REPO_ROOT / "infra" / "events" / "embed_text"
EXPECTED: dict[str, dict[str, Any]] = json.loads((EVENTS_DIR / "expected.json").read_text())


def event_files() -> list[Path]:
    return sorted(p for p in EVENTS_DIR.glob("*.json") if p.name != "expected.json")


def load_event(name: str) -> Any:
    return json.loads((EVENTS_DIR / name).read_text())


def unwrap(out: dict, proxy: bool) -> tuple[int | None, dict]:
    """(HTTP status or None for a direct invocation, decoded JSON body)."""
    if not proxy:
        return None, out
    assert out["headers"]["content-type"] == "application/json"
    return out["statusCode"], json.loads(out["body"])


def check_outcome(name: str, out: dict) -> dict:
    """Assert `out` (the handler's return for event `name`) matches expected.json; return the body."""
    exp = EXPECTED[name]
    status, body = unwrap(out, exp["proxy"])
    if exp["proxy"]:
        assert status == exp["status"], (name, status, body)
    if exp.get("health"):
        assert set(body) == {"status", "model_loaded", "embedding_dim", "model", "precision"}, body
        assert body["status"] == "healthy" and body["model_loaded"] is True and body["embedding_dim"] == 384
        assert body["precision"] in {"int8", "fp32"} and body["model"]
    elif exp["status"] == 200:
        assert "error" not in body, (name, body)
        assert body["batch_id"] == exp["batch_id"]
        assert body["dims"] == exp["dims"]
        assert len(body["vectors"]) == exp["count"]
        sent = load_event(name)
        if exp["proxy"]:
            raw = sent["body"]
            if sent.get("isBase64Encoded"):
                import base64

                raw = base64.b64decode(raw).decode()
            sent = json.loads(raw)
        assert [v["chunk_id"] for v in body["vectors"]] == [c["chunk_id"] for c in sent["chunks"]]
        assert all(len(v["vector"]) == exp["dims"] for v in body["vectors"])
    else:
        assert set(body) == {"error"}, (name, body)
        assert body["error"]["code"] == exp["code"], (name, body)
        assert body["error"]["field"] == exp["field"], (name, body)
        assert body["error"]["message"], name
        assert "Traceback" not in json.dumps(body)
    return body
