"""embed_video / qwen3vl_text / the video_qwen3vl channel in-process (tests.unit.worker.harness's
downloads from local files), over the real tiny Qwen3-VL and the real loading code: the settings that
change what they do (overflow policy, deterministic backend, transformers Whisper) and the shared decode."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from shared.dev.media import make_audio, make_video, mux_speech_into_mp4
from shared.worker.models import load_models
from shared.worker.settings import WorkerSettings
from shared.worker.worker import Worker
from tests.unit.worker.harness import Harness, embed_job, url

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("qwen-media")
    return {
        "clip.mp4": make_video(d / "clip.mp4", seconds=6.0, fps=10, size=(96, 64), with_audio=True).path,
        "silent.mp4": make_video(d / "silent.mp4", seconds=2.0, fps=10).path,
        "speech.mp4": mux_speech_into_mp4(d / "speech.mp4", "hello there", size=(64, 48), fps=8).path,
        "tone.wav": make_audio(d / "tone.wav", 1.0),
    }


def harness(files: dict[str, Path], model_dir: Path, **env: str) -> Harness:
    h = Harness(files, {"MODEL_DIR": str(model_dir), **env})  # its settings, the real models
    settings = h.worker.settings
    h.models = load_models(settings)
    h.worker = Worker(settings, h.models)
    h.worker.download, h.worker.upload = h._download, h._upload
    return h


def test_the_overflow_setting_refuses_long_captions_before_downloading(files, dev_model_dir):
    h = harness(
        files,
        dev_model_dir,
        WORKER_TASKS="embed_video,qwen3vl_text",
        QWEN3VL_MAX_TEXT_TOKENS="8",
        QWEN3VL_TEXT_OVERFLOW="refuse",
    )
    caption = "a red car in the street at night with people walking by"
    out = h.run({"task": "embed_video", "source_url": url("clip.mp4"), "caption": caption})
    assert out["error"]["code"] == "invalid_input" and out["error"]["field"] == "input.caption"
    assert "QWEN3VL_MAX_TEXT_TOKENS" in out["error"]["message"] and caption not in out["error"]["message"]
    assert h.downloads == []  # checked before any work
    out = h.run({"task": "qwen3vl_text", "texts": ["a cat", caption]})
    assert out["error"]["field"] == "input.texts[1]"
    ok = h.run({"task": "embed_video", "source_url": url("clip.mp4"), "caption": "a cat"})
    assert ok["caption_truncated"] is False and ok["dims"] == 2048


def test_deterministic_backend_is_labelled_and_never_decodes_frames(files, dev_model_dir, monkeypatch):
    h = harness(
        files, dev_model_dir, WORKER_TASKS="embed_video,qwen3vl_text", EMBEDDING_BACKEND="deterministic"
    )
    assert "qwen3-vl-embedding-2b" not in h.worker.settings.required_models()
    import shared.media

    def no_frames(*a, **kw):
        raise AssertionError("the deterministic backend decoded frames")

    monkeypatch.setattr(shared.media, "sample_frames", no_frames)
    job = {"task": "embed_video", "source_url": url("clip.mp4"), "caption": "a cat", "dims": 128}
    out = h.run(job)
    assert (out["version"], out["model"], out["backend"], out["random"]) == (
        "deterministic",
        "deterministic",
        "deterministic",
        True,
    )
    vec = np.array(out["embedding"], np.float32)
    assert vec.shape == (128,) and abs(float(np.linalg.norm(vec)) - 1) < 1e-5
    assert out["embedding"] == h.run(job)["embedding"]  # stable for the same source and caption
    assert out["embedding"] != h.run({**job, "caption": "a dog"})["embedding"]
    text = h.run({"task": "qwen3vl_text", "texts": ["a cat"], "dims": 64})
    assert text["backend"] == "deterministic" and len(text["vectors"][0]) == 64
    # bad input fails as it would with the model: the source is still probed
    no_video = h.run({"task": "embed_video", "source_url": url("tone.wav")})
    assert no_video["error"]["code"] == "media_error" and no_video["error"]["field"] == "input.source_url"


def test_the_deterministic_backend_cannot_write_the_spec_channel(dev_model_dir):
    from shared.errors import ConfigError

    with pytest.raises(ConfigError, match="EMBEDDING_BACKEND=deterministic"):
        WorkerSettings.from_env(
            {"EMBEDDING_BACKEND": "deterministic", "WORKER_CHANNELS": "video_qwen3vl"},
            cuda_available=lambda: False,
        )


def test_embed_video_transcript_through_transformers_whisper(files, dev_model_dir):
    h = harness(
        files,
        dev_model_dir,
        WORKER_TASKS="embed_video",
        WHISPER_BACKEND="transformers",
        WHISPER_MAX_NEW_TOKENS="6",
    )
    assert h.models.whisper.kind == "transformers"
    out = h.run({"task": "embed_video", "source_url": url("speech.mp4"), "transcribe": True})
    doc = out["transcript"]
    assert set(doc) == {"text", "segments", "language", "duration"} and doc["language"] == "en"
    assert all(0 <= s["start"] <= s["end"] <= doc["duration"] for s in doc["segments"])
    silent = h.run({"task": "embed_video", "source_url": url("silent.mp4"), "transcribe": True})
    assert len(silent["embedding"]) == 2048 and "transcript" not in silent  # the embedding still returns
    assert silent["transcript_error"]["code"] == "media_error"


def test_one_download_serves_both_frame_plans(files, dev_model_dir):
    h = harness(files, dev_model_dir, WORKER_CHANNELS="video_clip,video_mae,video_qwen3vl")
    out = h.run(embed_job("clip.mp4", "video", ["video_clip", "video_mae", "video_qwen3vl"]))
    assert len(h.downloads) == 1
    ch = out["channels"]
    assert all(c["status"] == "succeeded" for c in ch.values()), ch
    assert ch["video_clip"]["frames"] == 16  # the spec's count for CLIP
    assert ch["video_qwen3vl"]["frames"] == 6 and ch["video_qwen3vl"]["timestamps"] == [
        0.5,
        1.5,
        2.5,
        3.5,
        4.5,
        5.5,
    ]  # 1 fps over 6 s
    vec = np.load(io.BytesIO(h.uploads["video_qwen3vl.out"][0]))
    assert vec.shape == (2048,) and abs(float(np.linalg.norm(vec)) - 1) < 1e-5


def test_text_queries_run_max_batch_at_a_time_with_the_same_vectors(files, dev_model_dir):
    h = harness(files, dev_model_dir, WORKER_TASKS="qwen3vl_text", MAX_BATCH="2")
    calls: list[int] = []
    embed = h.models.qwen3vl.embed_texts
    h.models.qwen3vl.embed_texts = lambda texts, instruction=None: (
        calls.append(len(texts)) or embed(texts, instruction)
    )
    texts = ["a cat", "a dog", "a red car", "a train", "a boat"]
    out = h.run({"task": "qwen3vl_text", "texts": texts, "dims": 128})
    assert calls == [2, 2, 1]
    one = [h.run({"task": "qwen3vl_text", "texts": [t], "dims": 128})["vectors"][0] for t in texts]
    np.testing.assert_allclose(np.array(out["vectors"]), np.array(one), atol=2e-5)
