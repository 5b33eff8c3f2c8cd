"""The worker under the SDK's local test mode (`--test_input` / ./test_input.json), one job per process,
and its startup failures (exit 1 with one clear line). WORKER_TASKS keeps each process to the models
its job needs."""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from safetensors.numpy import load_file, save_file

from shared.settings import REPO_ROOT
from tests.integration.worker.support import AUDIO_SPEECH, Media, MediaServer, run_test_input, wer

pytestmark = pytest.mark.integration


def test_shipped_test_input_json_runs_offline(dev_model_dir: Path, tmp_path: Path):
    shutil.copy(REPO_ROOT / ".runpod/test_input.json", tmp_path / "test_input.json")
    run = run_test_input(dev_model_dir, None, cwd=tmp_path, WORKER_TASKS="clip_text")
    assert run.returncode == 0, run.output[-3000:]
    assert "Using test_input.json as job input" in run.output
    line = run.result_line()
    assert "'model': 'clip-vit-b-32:random-weights'" in line and "'dims': 512" in line


def test_clip_image_test_input(dev_model_dir: Path, media: Media):
    b64 = base64.b64encode(media.bytes[media.photo_png]).decode()
    run = run_test_input(
        dev_model_dir,
        {"task": "clip_image", "images": [{"base64": b64}], "tta": False},
        WORKER_TASKS="clip_image",
    )
    assert run.returncode == 0, run.output[-3000:]
    assert "'dims': 512" in run.result_line()
    assert "completed successfully" in run.output


def test_transcribe_test_input(dev_model_dir: Path, media_server: MediaServer, media: Media):
    job = {"task": "transcribe", "source_url": media_server.url(media.speech_wav), "beam_size": 5}
    run = run_test_input(dev_model_dir, job, WORKER_TASKS="transcribe", ALLOW_PRIVATE_URLS="1")
    assert run.returncode == 0, run.output[-3000:]
    result = ast.literal_eval(run.result_line())["output"]
    assert result["language"] == "en"
    assert wer(AUDIO_SPEECH, result["text"]) <= 0.3, result["text"]
    assert result["segments"][0]["start"] >= 0


def test_embed_item_test_input(dev_model_dir: Path, media_server: MediaServer, media: Media):
    channels = ["video_clip", "video_mae", "audio_wav2vec2", "transcript"]
    job = {
        "task": "embed_item",
        "item": {"owner_id": "local", "item_id": "mode", "modality": "video"},
        "source_url": media_server.url(media.speech_mp4),
        "channels": channels,
        "outputs": {c: media_server.url(f"/out/local-mode/{c}") for c in channels},
    }
    run = run_test_input(dev_model_dir, job, WORKER_TASKS="embed_item", ALLOW_PRIVATE_URLS="1")
    assert run.returncode == 0, run.output[-3000:]
    line = run.result_line()
    for c in channels:
        data, _ = media_server.upload(f"/out/local-mode/{c}")
        assert hashlib.sha256(data).hexdigest() in line  # the sha256 the worker reported is of what arrived
    assert "'status': 'failed'" not in line


def test_private_url_is_refused_without_the_local_switch(
    dev_model_dir: Path, media_server: MediaServer, media: Media
):
    job = {"task": "transcribe", "source_url": media_server.url(media.speech_wav)}
    run = run_test_input(dev_model_dir, job, WORKER_TASKS="transcribe")
    assert run.returncode == 1
    assert "forbidden_url" in run.output and "not a public address" in run.output
    assert "5ec7e75ec7e7" not in run.output and "AKIAEXAMPLE" not in run.output
    assert not media_server.uploaded("/out/never")


def test_missing_models_exit_1_naming_the_folder_and_the_bake_command(tmp_path: Path):
    run = run_test_input(
        tmp_path / "empty-models", {"task": "clip_text", "texts": ["x"]}, WORKER_TASKS="clip_text"
    )
    assert run.returncode == 1
    assert "startup failed: model 'clip-vit-b-32' is missing from" in run.output
    assert str(tmp_path / "empty-models") in run.output and "se bake" in run.output
    assert "Traceback" not in run.output


def test_bad_setting_exits_1_with_an_example(dev_model_dir: Path):
    run = run_test_input(dev_model_dir, {"task": "clip_text", "texts": ["x"]}, PRECISION="fp8")
    assert run.returncode == 1
    assert "startup failed: PRECISION='fp8' is not valid; example: PRECISION=fp16" in run.output
    assert "Traceback" not in run.output


def test_a_model_that_computes_nan_refuses_to_serve(dev_model_dir: Path, tmp_path: Path):
    """Infinity #609: weights that load fine but produce NaN must stop the worker at start."""
    broken = tmp_path / "models"
    shutil.copytree(dev_model_dir / "clip-vit-b-32", broken / "clip-vit-b-32")
    weights = broken / "clip-vit-b-32" / "open_clip_model.safetensors"
    tensors = load_file(weights)
    for name, t in tensors.items():
        if t.dtype.kind == "f" and "proj" in name:
            t[...] = float("nan")
    save_file(tensors, weights)
    run = run_test_input(broken, {"task": "clip_text", "texts": ["x"]}, WORKER_TASKS="clip_text")
    assert run.returncode == 1
    assert "startup failed" in run.output and "NaN" in run.output
    assert "Job result" not in run.output


def test_error_output_is_json_with_a_code(dev_model_dir: Path):
    run = run_test_input(dev_model_dir, {"task": "clip_text", "texts": []}, WORKER_TASKS="clip_text")
    assert run.returncode == 1
    start = run.output.index("failed with error: ") + len("failed with error: ")
    err = json.loads(run.output[start:].splitlines()[0])
    assert err == {
        "code": "invalid_input",
        "message": "input.texts: List should have at least 1 item after validation, not 0",
        "field": "input.texts",
        "retryable": False,
    }
