"""WorkerSettings.from_env: defaults, device/precision resolution, fail-fast errors, spec consistency."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import spec
from shared.errors import ConfigError
from shared.worker.settings import WorkerSettings

pytestmark = pytest.mark.unit


def build(env=None, cuda=False):
    return WorkerSettings.from_env(env or {}, cuda_available=lambda: cuda)


def test_defaults_on_a_cpu_machine():
    s = build()
    assert s.device == "cpu" and s.precision == "fp32"
    assert s.clip_model == "clip-vit-b-32"
    assert s.channels == tuple(c for c in spec.RUNPOD_CHANNELS if c not in ("video_qwen3vl", "scenes"))
    assert (s.embedding_backend, s.whisper_backend, s.embedding_dims) == ("qwen3_vl", "faster_whisper", 2048)
    assert s.tasks == ("embed_item", "transcribe", "clip_text", "clip_image")
    assert s.tta is True and s.panorama_max_ratio == 2.6
    assert s.allow_private_urls is False
    assert (s.batch_window_ms, s.max_batch, s.concurrency) == (15.0, 64, 8)
    assert s.model_dir.name == ".models"


def test_auto_device_picks_cuda_with_half_precision():
    s = build(cuda=True)
    assert s.device == "cuda" and s.precision == "fp16"
    assert build({"PRECISION": "bf16"}, cuda=True).precision == "bf16"


def test_cpu_forces_fp32_whatever_was_asked():
    assert build({"DEVICE": "cpu", "PRECISION": "fp16"}, cuda=True).precision == "fp32"


def test_explicit_values_are_read():
    s = build(
        {
            "MODEL_DIR": "/opt/models",
            "DEVICE": "cuda:1",
            "ALLOW_PRIVATE_URLS": "1",
            "BATCH_WINDOW_MS": "0",
            "MAX_BATCH": "8",
            "MAX_DOWNLOAD_BYTES": "1000",
            "DOWNLOAD_TIMEOUT_S": "2.5",
            "WORKER_TASKS": "clip_text, clip_image",
            "TRANSCRIPT_MAX_SECONDS": "60",
            "PANORAMA_MAX_TILES": "4",
            "JOB_MAX_PIXELS": "60000000",
            "WORKER_MAX_PIXELS": "70000000",
            "MAX_VIDEO_PIXELS": "2073600",
            "FULL_DECODE_MAX_PIXELS": "1000000",
            "INFLATE_MAX_PIXELS": "20000000",
        },
        cuda=True,
    )
    assert s.image_header_limits() == {
        "max_pixels": 50_000_000,
        "max_aspect": 8.0,
        "max_full_decode_pixels": 1_000_000,
        "max_inflate_pixels": 20_000_000,
    }
    assert (s.panorama_max_tiles, s.job_max_pixels, s.worker_max_pixels) == (4, 60_000_000, 70_000_000)
    assert s.max_video_pixels == 1920 * 1080
    assert s.model_dir == Path("/opt/models")
    assert s.device == "cuda:1" and s.precision == "fp16"
    assert s.allow_private_urls is True
    assert (s.batch_window_ms, s.max_batch, s.max_download_bytes, s.download_timeout_s) == (0.0, 8, 1000, 2.5)
    assert s.tasks == ("clip_text", "clip_image")
    assert s.embed_channels == ()
    assert s.required_models() == ("clip-vit-b-32",)
    assert s.transcript_max_seconds == 60.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEVICE", "tpu"),
        ("PRECISION", "fp8"),
        ("CLIP_MODEL", "whisper-tiny.en"),
        ("CLIP_MODEL", "ViT-B-32"),
        ("WORKER_TASKS", "embed_item,rerank"),
        ("WORKER_TASKS", ","),
        ("WORKER_CHANNELS", "text_meta"),
        ("ENABLE_TTA", "maybe"),
        ("PANORAMA_MAX_RATIO", "0.5"),
        ("MAX_DOWNLOAD_BYTES", "-1"),
        ("MAX_DOWNLOAD_BYTES", "1GB"),
        ("DOWNLOAD_TIMEOUT_S", "0"),
        ("ALLOW_PRIVATE_URLS", "sure"),
        ("BATCH_WINDOW_MS", "-5"),
        ("MAX_BATCH", "0"),
        ("WORKER_CONCURRENCY", "x"),
        ("MAX_TEXTS", "0"),
        ("MAX_IMAGE_BYTES", "1.5"),
        ("INFLATE_MAX_PIXELS", "0"),
        ("FULL_DECODE_MAX_PIXELS", "8K"),
        ("TRANSCRIPT_MAX_SECONDS", "nan"),
    ],
)
def test_malformed_values_fail_fast_with_an_example(name, value):
    with pytest.raises(ConfigError) as info:
        build({name: value})
    assert f"{name}={value!r}" in info.value.message
    assert "example:" in info.value.message


def test_a_clip_model_other_than_the_spec_is_refused_for_spec_channels():
    with pytest.raises(ConfigError, match=r"video_clip|image_clip"):
        build({"CLIP_MODEL": "clip-eva02-l-14-336"})


def test_eva02_is_selectable_for_the_query_tasks():
    s = build({"CLIP_MODEL": "clip-eva02-l-14-336", "WORKER_CHANNELS": "video_mae,audio_wav2vec2,transcript"})
    assert s.clip_model == "clip-eva02-l-14-336"
    assert s.required_models() == ("clip-eva02-l-14-336", "videomae-base", "wav2vec2-base", "whisper-tiny.en")


def test_tta_must_match_the_spec_while_image_clip_is_served():
    with pytest.raises(ConfigError, match="ENABLE_TTA"):
        build({"ENABLE_TTA": "0"})
    with pytest.raises(ConfigError, match="PANORAMA_MAX_RATIO"):
        build({"PANORAMA_MAX_RATIO": "3"})
    s = build({"ENABLE_TTA": "0", "WORKER_CHANNELS": "video_clip"})
    assert s.tta is False


def test_required_models_follow_tasks_and_channels():
    assert build().required_models() == ("clip-vit-b-32", "videomae-base", "wav2vec2-base", "whisper-tiny.en")
    assert build({"WORKER_TASKS": "transcribe"}).required_models() == ("whisper-tiny.en",)
    only_audio = build({"WORKER_TASKS": "embed_item", "WORKER_CHANNELS": "audio_wav2vec2"})
    assert only_audio.required_models() == ("wav2vec2-base",)


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        build().max_batch = 1


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_told_cuda_with_no_gpu_refuses_to_start(device):
    with pytest.raises(ConfigError) as info:
        build({"DEVICE": device}, cuda=False)
    message = info.value.message
    assert f"DEVICE={device} but no CUDA device is visible" in message and "\n" not in message
    assert build({"DEVICE": device}, cuda=True).device == device


def test_auto_still_falls_back_to_the_cpu():
    assert build({"DEVICE": "auto"}, cuda=False).device == "cpu"


@pytest.mark.parametrize("name", ["JOB_MAX_PIXELS", "WORKER_MAX_PIXELS"])
def test_a_budget_smaller_than_one_image_is_refused(name):
    with pytest.raises(ConfigError, match=f"{name}=1000 is below MAX_IMAGE_PIXELS"):
        build({name: "1000"})
    assert getattr(build({name: "1000", "MAX_IMAGE_PIXELS": "1000"}), name.lower()) == 1000


def test_defaults_are_the_dataclass_defaults():
    """parse_job's default limits (WorkerSettings()) are exactly what an empty environment gives."""
    import dataclasses

    from_env = build()
    assert dataclasses.replace(WorkerSettings(), device=from_env.device) == from_env
    from shared.media import image

    assert (from_env.full_decode_max_pixels, from_env.inflate_max_pixels) == (  # open_image's own defaults
        image.FULL_DECODE_MAX_PIXELS,
        image.INFLATE_MAX_PIXELS,
    )
