"""A fault stays in its channel: injected per channel, per kind (unexpected, CUDA, non-finite), and
for a whole job; what the caller sees is safe, what the log holds has the traceback."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from runpod.serverless.modules.rp_job import run_job

from handlers.runpod_worker import handler as shim
from shared.worker import faults
from shared.worker.channels import RUNNERS
from tests.unit.worker.harness import Harness, embed_job, url

pytestmark = pytest.mark.unit

VIDEO = ["video_clip", "video_mae", "audio_wav2vec2", "transcript"]
ROLE_OF = {name: RUNNERS[name].role for name in VIDEO}
FORBIDDEN = ("Traceback", 'File "', "/tmp", "/work", "SECRET", "X-Amz", ".py", "hostname", "worker_id")


def inject(h: Harness, role: str, exc: BaseException) -> None:
    getattr(h.models, role).fail = exc


def assert_safe(text: str) -> None:
    for bad in FORBIDDEN:
        assert bad not in text, bad


@pytest.mark.parametrize("name", VIDEO)
def test_an_unexpected_exception_fails_only_its_channel(media, temp_root, name, caplog):
    h = Harness(media)
    inject(h, ROLE_OF[name], KeyError(f"boom in /work/secret/{name}.py"))
    with caplog.at_level(logging.ERROR, logger="shared.worker"):
        out = h.run(embed_job("clip.mp4", "video", VIDEO))
    failed = out["channels"][name]
    err = failed["error"]
    assert failed["status"] == "failed" and err["code"] == "internal_error" and err["retryable"] is True
    assert err["correlation_id"] in err["message"] and len(err["correlation_id"]) == 16
    assert_safe(json.dumps(out))
    assert f"{name}.out" not in h.uploads  # nothing written for the failed channel
    for other in VIDEO:
        if other != name:
            assert out["channels"][other]["status"] == "succeeded", other
            assert f"{other}.out" in h.uploads
    assert "refresh_worker" not in out
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert err["correlation_id"] in logged and "Traceback" in logged and "KeyError" in logged
    assert list(temp_root.iterdir()) == []


def test_image_clip_fault_stays_in_its_channel(media, temp_root):
    h = Harness(media)
    inject(h, "clip", ZeroDivisionError("x"))
    out = h.run(embed_job("photo.png", "image", ["image_clip"]))
    assert out["channels"]["image_clip"]["error"]["code"] == "internal_error"
    assert h.uploads == {} and "refresh_worker" not in out
    assert h.worker.budget.stats.in_use == 0  # the image's pixels were given back


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"),
        type("AcceleratorError", (RuntimeError,), {})("device lost"),
    ],
    ids=["illegal-access", "cudnn", "accelerator-error"],
)
@pytest.mark.parametrize("name", VIDEO)
def test_a_cuda_fault_asks_runpod_to_replace_the_worker(media, temp_root, name, exc):
    h = Harness(media)
    inject(h, ROLE_OF[name], exc)
    out = h.run(embed_job("clip.mp4", "video", VIDEO))
    assert out["refresh_worker"] is True
    assert out["channels"][name]["error"]["code"] == "internal_error"
    assert sum(r["status"] == "succeeded" for r in out["channels"].values()) == len(VIDEO) - 1


def test_cuda_out_of_memory_does_not_refresh_the_worker(media, temp_root):
    h = Harness(media)
    inject(h, "videomae", RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    out = h.run(embed_job("clip.mp4", "video", ["video_mae", "video_clip"]))
    assert out["channels"]["video_mae"]["error"]["code"] == "internal_error"
    assert "refresh_worker" not in out


@pytest.mark.parametrize("name", ["video_clip", "video_mae", "audio_wav2vec2"])
def test_non_finite_output_at_run_time_refreshes_the_worker(media, temp_root, name):
    h = Harness(media)
    getattr(h.models, ROLE_OF[name]).nan = True
    out = h.run(embed_job("clip.mp4", "video", VIDEO))
    err = out["channels"][name]["error"]
    assert err["code"] == "model_unhealthy" and err["retryable"] is True
    assert out["refresh_worker"] is True and f"{name}.out" not in h.uploads


def test_a_fault_outside_any_channel_fails_the_job_safely(media, temp_root, monkeypatch):
    from shared.worker.jobs import embed_item

    async def broken(*args, **kw):
        raise OSError("disk full at /var/lib/worker/tmp/embed-item-x?X-Amz-Signature=abc")

    monkeypatch.setattr(embed_item, "decode", broken)
    h = Harness(media)
    out = h.run(embed_job("clip.mp4", "video", VIDEO))
    assert set(out) == {"error"}
    assert out["error"]["code"] == "internal_error" and out["error"]["retryable"] is True
    assert_safe(json.dumps(out))
    assert h.uploads == {} and list(temp_root.iterdir()) == []


@pytest.mark.parametrize("task", ["clip_text", "transcribe"])
def test_query_tasks_keep_faults_safe_too(media, temp_root, task):
    h = Harness(media)
    if task == "clip_text":
        inject(h, "clip", RuntimeError("CUDA error: device-side assert triggered"))
        job = {"task": "clip_text", "texts": ["a"]}
    else:
        h.models.whisper.fail = ValueError("bad /tmp/x")
        job = {"task": "transcribe", "source_url": url("clip.mp4")}
    out = h.run(job)
    assert out["error"]["code"] == "internal_error"
    assert out.get("refresh_worker", False) is (task == "clip_text")
    assert_safe(json.dumps(out))


def test_the_sdk_turns_refresh_worker_into_stop_pod_and_carries_no_traceback(media, monkeypatch):
    """Through the runpod SDK's own run_job: the output asks for stopPod, the error is ours."""
    h = Harness(media)
    inject(h, "clip", RuntimeError("CUDA error: unspecified launch failure"))
    monkeypatch.setattr(shim, "_worker", h.worker)
    result = asyncio.run(run_job(shim.handler, {"id": "j1", "input": {"task": "clip_text", "texts": ["a"]}}))
    assert result["stopPod"] is True
    err = json.loads(result["error"])
    assert err["code"] == "internal_error" and "error_traceback" not in result["error"]
    assert_safe(result["error"])
    h.models.clip.fail = None  # in RunPod a new worker would serve the next job; here the same one
    ok = asyncio.run(run_job(shim.handler, {"id": "j2", "input": {"task": "clip_text", "texts": ["b"]}}))
    assert "stopPod" not in ok and len(ok["output"]["vectors"]) == 1  # healthy: no new worker asked


def test_process_fault_classification():
    assert faults.is_process_fault(RuntimeError("CUDA error: misaligned address"))
    assert not faults.is_process_fault(RuntimeError("CUDA out of memory"))
    assert not faults.is_process_fault(ValueError("CUDA error"))  # only runtime errors carry it
    assert faults.is_process_fault(faults.ModelUnhealthy("x"))
