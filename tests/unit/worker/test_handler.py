"""The RunPod shim: errors cross the SDK as JSON strings, outputs pass through unchanged."""

from __future__ import annotations

import asyncio
import json

import pytest

from handlers.runpod_worker import handler as shim
from shared.worker.models import Models
from shared.worker.settings import WorkerSettings
from shared.worker.worker import Worker
from tests.unit.worker.fakes import FakeClip

pytestmark = pytest.mark.unit


@pytest.fixture
def started(monkeypatch):
    settings = WorkerSettings.from_env(
        {"WORKER_TASKS": "clip_text", "WORKER_CONCURRENCY": "5"}, cuda_available=lambda: False
    )
    worker = Worker(settings, Models(clip=FakeClip()))
    monkeypatch.setattr(shim, "_worker", worker)
    return worker


def test_output_passes_through(started):
    out = asyncio.run(shim.handler({"id": "j", "input": {"task": "clip_text", "texts": ["a"]}}))
    assert out["dims"] == 512 and len(out["vectors"]) == 1


def test_errors_become_a_json_string_the_sdk_can_carry(started):
    out = asyncio.run(shim.handler({"id": "j", "input": {"task": "clip_text", "texts": []}}))
    assert set(out) == {"error"} and isinstance(out["error"], str)
    err = json.loads(out["error"])
    assert err["code"] == "invalid_input" and err["field"] == "input.texts" and err["retryable"] is False


def test_concurrency_modifier_reports_the_setting(started):
    assert shim.concurrency_modifier(1) == 5


def test_handler_refuses_before_start(monkeypatch):
    monkeypatch.setattr(shim, "_worker", None)
    with pytest.raises(RuntimeError, match="not started"):
        asyncio.run(shim.handler({"id": "j", "input": {}}))
    assert shim.concurrency_modifier(3) == 1


def test_the_handler_module_lists_every_task():
    for task in ("embed_item", "transcribe", "clip_text", "clip_image"):
        assert f'"task": "{task}"' in shim.__doc__
