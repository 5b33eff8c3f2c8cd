"""Contract tests: the RunPod files, the Dockerfile and the code cannot drift apart."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from shared.worker import settings as settings_module
from shared.worker.requests import parse_job
from shared.worker.settings import WorkerSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
HUB = json.loads((ROOT / "infra/runpod/hub.json").read_text())
TESTS = json.loads((ROOT / "infra/runpod/tests.json").read_text())
TEST_INPUT = json.loads((ROOT / "infra/runpod/test_input.json").read_text())
DOCKERFILE = (ROOT / "Dockerfile.gpu").read_text()
FIXED_BY_IMAGE = {"MODEL_DIR"}  # set by the Dockerfile, not a deploy-time choice


class RecordingEnv(Mapping[str, str]):
    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values = values or {}
        self.read: list[str] = []

    def __getitem__(self, key: str) -> str:
        self.read.append(key)
        return self.values[key]

    def get(self, key, default=None):
        self.read.append(key)
        return self.values.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def settings_vars() -> set[str]:
    env = RecordingEnv()
    WorkerSettings.from_env(env, cuda_available=lambda: False)
    return set(env.read)


def hub_env() -> dict[str, dict]:
    return {e["key"]: e["input"] for e in HUB["config"]["env"]}


def test_the_settings_read_a_known_set_of_variables():
    names = settings_vars()
    assert {
        "MODEL_DIR",
        "DEVICE",
        "PRECISION",
        "CLIP_MODEL",
        "ALLOW_PRIVATE_URLS",
        "BATCH_WINDOW_MS",
    } <= names


def test_every_setting_is_documented_in_the_dockerfile_and_the_module():
    for name in settings_vars():
        assert re.search(rf"^#\s+{name}\s", DOCKERFILE, re.M), f"{name} missing from Dockerfile.gpu docs"
        assert re.search(rf"^\s+{name}\s", settings_module.__doc__, re.M), (
            f"{name} missing from settings docs"
        )


def test_hub_json_offers_exactly_the_deploy_time_settings():
    assert set(hub_env()) == settings_vars() - FIXED_BY_IMAGE


def test_hub_json_defaults_are_the_code_defaults():
    env = {}
    for key, spec in hub_env().items():
        value = spec["default"]
        if spec["type"] == "boolean":
            env[key] = spec["trueValue"] if value else spec["falseValue"]
        elif isinstance(value, float) and value.is_integer():
            env[key] = str(int(value))
        else:
            env[key] = str(value)
    from_hub = WorkerSettings.from_env(env, cuda_available=lambda: True)
    from_defaults = WorkerSettings.from_env({}, cuda_available=lambda: True)
    assert from_hub == from_defaults


def test_hub_json_has_the_required_metadata():
    assert HUB["type"] == "serverless" and HUB["category"] == "embedding"
    assert HUB["title"] and HUB["description"]
    assert HUB["config"]["runsOn"] == "GPU"


def test_test_input_json_is_an_offline_job_that_parses():
    req = parse_job(TEST_INPUT["input"])
    assert req.task == "clip_text"  # needs no network: it runs at image build time


def test_every_hub_test_parses_and_uses_known_settings():
    assert TESTS["tests"]
    for test in TESTS["tests"]:
        req = parse_job(test["input"])
        assert req.task in ("clip_text", "clip_image"), "hub tests must not depend on reachable URLs"
        assert test["timeout"] > 0
    known = settings_vars() | {"WORKER_LOG_LEVEL"}
    for item in TESTS["config"].get("env", []):
        assert item["key"] in known


def test_the_image_bakes_what_the_default_settings_load():
    match = re.search(r"^ARG BAKE_MODELS=(\S+)$", DOCKERFILE, re.M)
    assert match
    assert set(match.group(1).split(",")) == set(
        WorkerSettings.from_env({}, cuda_available=lambda: True).required_models()
    )


def test_the_hub_token_never_lands_in_a_layer():
    assert "--mount=type=secret,id=hf_token" in DOCKERFILE
    for line in DOCKERFILE.splitlines():
        if line.startswith(("ARG", "ENV")):
            assert "TOKEN" not in line.upper(), line
    assert re.search(r"^ENV .*MODEL_DIR=/models.*HF_HUB_OFFLINE=1", DOCKERFILE, re.M)
    assert 'CMD ["python", "-u", "-m", "handlers.runpod_worker"]' in DOCKERFILE
    assert (ROOT / "handlers/runpod_worker/__main__.py").is_file()
    assert "COPY infra/runpod/test_input.json" in DOCKERFILE
