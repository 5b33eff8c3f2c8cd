"""Qwen3-VL's pure rules and the settings and request shapes around them (no model, no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from shared import spec
from shared.errors import ConfigError, InvalidInput, MediaError
from shared.models import registry
from shared.models.deterministic import DeterministicEmbedder
from shared.models.qwen3vl import VideoPlan, matryoshka, smart_resize, with_period
from shared.worker.requests import MRL_DIMS, parse_job
from shared.worker.settings import WorkerSettings

pytestmark = pytest.mark.unit

PLAN = VideoPlan(registry.get("qwen3-vl-embedding-2b").preprocessing)
URL = "https://bucket.example.com/v.mp4?X-Amz-Signature=abc"


def build(env: dict[str, str]) -> WorkerSettings:
    return WorkerSettings.from_env(env, cuda_available=lambda: False)


@pytest.mark.parametrize(
    ("duration", "frames"),
    [(None, 4), (0.5, 4), (3.0, 4), (5.0, 4), (7.9, 6), (60.0, 60), (61.0, 60), (3600.0, 64)],
)
def test_frame_count_is_one_per_second_within_the_cards_bounds(duration, frames):
    assert PLAN.frame_count(duration) == frames


def test_frame_size_follows_qwen_vl_utils():
    # expected values computed with qwen-vl-utils 0.0.14 vision_process.smart_resize itself
    assert PLAN.frame_size(720, 1280, 4) == (640, 1152)  # short clip: the 768-token frame cap
    assert PLAN.frame_size(720, 1280, 60) == (384, 672)  # a minute: the total-pixel budget
    assert PLAN.frame_size(48, 64, 4) == (320, 448)  # tiny frames are scaled up to >= 128 tokens
    assert PLAN.frame_size(1080, 1920, 64) == (352, 640)
    for n in (4, 10, 60, 64):
        h, w = PLAN.frame_size(1080, 1920, n)
        assert h % 32 == 0 and w % 32 == 0 and h * w <= max(768 * 1024, 7864320 * 2 / n)
    with pytest.raises(MediaError):
        smart_resize(10, 3000, 32, 1024, 4096)


def test_the_worst_video_leaves_room_for_the_caption():
    assert 7680 <= PLAN.max_video_tokens() < 8192  # the card's frame-list budget: 7864320 px / 32^2 / 2 x 2


def test_instruction_gets_the_cards_period():
    assert with_period("Represent the user's input") == "Represent the user's input."
    assert with_period("Find videos!") == "Find videos!"


def test_matryoshka_keeps_a_renormalised_prefix():
    v = np.array([[3.0, 4.0, 12.0]], np.float32)
    np.testing.assert_allclose(matryoshka(v, 2), [[0.6, 0.8]], atol=1e-6)
    with pytest.raises(ValueError):
        matryoshka(v, 4)


def test_deterministic_vectors_are_stable_unit_and_of_the_asked_dims():
    d = DeterministicEmbedder(2048, MRL_DIMS)
    a = d.vector("video", "sha", "cap", dims=256)
    assert a.shape == (256,) and a.dtype == np.float32 and abs(float(np.linalg.norm(a)) - 1) < 1e-6
    np.testing.assert_array_equal(a, d.vector("video", "sha", "cap", dims=256))
    assert not np.allclose(a, d.vector("video", "sha", "other", dims=256))
    assert d.fit_text("a b c d", 2) == ("a b", True) and d.count_tokens("a b c") == 3


def test_dims_must_be_a_matryoshka_size_listed_in_the_error():
    assert parse_job({"task": "embed_video", "source_url": URL, "dims": 512}).dims == 512
    with pytest.raises(InvalidInput) as e:
        parse_job({"task": "embed_video", "source_url": URL, "dims": 500})
    assert e.value.field == "input.dims" and "2048, 1536, 1024, 768, 512, 256, 128, 64" in e.value.message
    assert "500" not in e.value.message  # the caller's value is not echoed
    with pytest.raises(InvalidInput):
        parse_job({"task": "qwen3vl_text", "texts": ["a"], "dims": 2049})


def test_embed_video_shape_is_strict():
    req = parse_job({"task": "embed_video", "source_url": URL, "caption": "a cat", "transcribe": True})
    assert (req.caption, req.dims, req.transcribe) == ("a cat", None, True)
    for bad in (
        {"caption": 5},
        {"transcribe": "yes"},
        {"storage_key": "uploads/x"},
        {"source_url": "file:///etc/passwd"},
    ):
        with pytest.raises(InvalidInput):
            parse_job({"task": "embed_video", "source_url": URL, **bad})
    limits = build({"MAX_TEXT_CHARS": "10", "MAX_TEXTS": "2"})
    with pytest.raises(InvalidInput, match="longer than 10 characters"):
        parse_job({"task": "embed_video", "source_url": URL, "caption": "x" * 11}, limits)
    with pytest.raises(InvalidInput, match="at most 2 texts"):
        parse_job({"task": "qwen3vl_text", "texts": ["a", "b", "c"]}, limits)


def test_qwen3vl_is_opt_in_for_tasks_and_channels():
    s = build({})
    assert "embed_video" not in s.tasks and "video_qwen3vl" not in s.channels
    assert not s.serves_qwen3vl and "qwen3-vl-embedding-2b" not in s.required_models()
    on = build({"WORKER_TASKS": "embed_video"})
    assert on.required_models() == ("whisper-tiny.en", "qwen3-vl-embedding-2b")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EMBEDDING_BACKEND", "openai"),
        ("EMBEDDING_DIMS", "300"),
        ("EMBEDDING_DIMS", "abc"),
        ("QWEN3VL_MAX_TEXT_TOKENS", "0"),
        ("QWEN3VL_TEXT_OVERFLOW", "ignore"),
        ("WHISPER_BACKEND", "whisper.cpp"),
        ("WHISPER_MODEL", "whisper-tiny.en"),  # a faster-whisper folder is not a transformers checkpoint
        ("WHISPER_MAX_NEW_TOKENS", "-1"),
    ],
)
def test_bad_values_fail_fast_with_an_example(name, value):
    with pytest.raises(ConfigError, match=f"{name}=.*example: {name}="):
        build({name: value})


def test_a_caption_budget_that_cannot_fit_beside_a_video_is_refused():
    with pytest.raises(ConfigError, match="QWEN3VL_MAX_TEXT_TOKENS"):
        build({"QWEN3VL_MAX_TEXT_TOKENS": "40000"})


def test_spec_held_channels_refuse_other_backends():
    with pytest.raises(ConfigError, match="video_qwen3vl"):
        build({"EMBEDDING_BACKEND": "deterministic", "WORKER_CHANNELS": "video_clip,video_qwen3vl"})
    with pytest.raises(ConfigError, match="transcript"):
        build({"WHISPER_BACKEND": "transformers"})  # the default channels include the spec's transcript
    ok = build({"WHISPER_BACKEND": "transformers", "WORKER_TASKS": "transcribe,embed_video"})
    assert ok.required_models() == ("distil-whisper-large-v3", "qwen3-vl-embedding-2b")
    det = build({"EMBEDDING_BACKEND": "deterministic", "WORKER_TASKS": "embed_video,qwen3vl_text"})
    assert det.required_models() == ("whisper-tiny.en",)


def test_the_spec_records_the_cards_sampling():
    pp = spec.CHANNELS["video_qwen3vl"].preprocessing
    card = registry.get("qwen3-vl-embedding-2b").preprocessing
    assert (pp["fps"], pp["max_frames"], pp["min_frames"]) == (
        card["fps"],
        card["max_frames"],
        card["min_frames"],
    )
    assert (card["fps"], card["max_frames"], card["pooling"]) == (1.0, 64, "last")
    assert card["instruction"] == "Represent the user's input."
