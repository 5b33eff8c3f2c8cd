"""Seed 000's embed_video and the qwen3vl_text queries on the real worker process under the RunPod
SDK's local API (tiny random Qwen3-VL, real faster-whisper tiny.en), media from the local server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared import spec
from shared.worker.settings import MRL_DIMS
from tests.integration.worker.support import SECRET, SPEECH, ApiWorker, Media, MediaServer, wer
from tests.integration.worker.test_api_worker import assert_artifact, assert_unit_vectors, embed_job, npy

pytestmark = pytest.mark.integration

FINGERPRINT = spec.CHANNELS["video_qwen3vl"].fingerprint


def video_job(server: MediaServer, source: str, **extra) -> dict:
    return {"task": "embed_video", "source_url": server.url(source), **extra}


def vector(out: dict) -> np.ndarray:
    vec = np.array(out["embedding"], np.float32)
    assert_unit_vectors(vec, out["dims"])
    return vec


def test_embed_video_with_caption_dims_and_transcript(
    api_worker: ApiWorker, media_server: MediaServer, media: Media
):
    job = video_job(media_server, media.speech_mp4, caption="a moving square", dims=256, transcribe=True)
    out = api_worker.output(job)
    assert {"version", "dims", "embedding", "model", "transcript"} <= set(out)
    assert out["version"] == FINGERPRINT and out["dims"] == 256 and len(out["embedding"]) == 256
    assert out["backend"] == "qwen3_vl" and out["model"] == "qwen3-vl-embedding-2b:random-weights"
    assert out["random"] is True and out["caption_truncated"] is False
    vector(out)
    frames = out["frames"]  # 1 fps over the clip, at least the card's 4, an even count
    assert frames["frames"] == max(4, int(media.speech_seconds) // 2 * 2)
    assert frames["frame_size"][0] % 32 == 0 and frames["frame_size"][1] % 32 == 0
    doc = out["transcript"]  # the transcript channel over the same download and decode
    assert set(doc) == {"text", "segments", "language", "duration"}
    assert wer(SPEECH, doc["text"]) <= 0.25, doc["text"]
    assert SECRET not in json.dumps(out)


def test_the_caption_changes_the_vector_and_dims_are_a_prefix(
    api_worker: ApiWorker, media_server: MediaServer, media: Media
):
    plain = api_worker.output(video_job(media_server, media.speech_mp4))
    assert plain["dims"] == 2048 and "transcript" not in plain  # EMBEDDING_DIMS default: full width
    full = vector(plain)
    again = vector(api_worker.output(video_job(media_server, media.speech_mp4)))
    np.testing.assert_allclose(full, again, atol=1e-5)
    captioned = vector(
        api_worker.output(video_job(media_server, media.speech_mp4, caption="a moving square"))
    )
    assert float(full @ captioned) < 0.9999
    small = vector(api_worker.output(video_job(media_server, media.speech_mp4, dims=64)))
    np.testing.assert_allclose(small, full[:64] / np.linalg.norm(full[:64]), atol=1e-5)


def test_the_embed_item_artifact_is_the_captionless_video_vector(
    api_worker: ApiWorker, media_server: MediaServer, media: Media
):
    chans = ["video_clip", "video_qwen3vl"]
    out = api_worker.output(embed_job(media_server, media.speech_mp4, "video", chans, "qwen-item"))
    meta = out["channels"]["video_qwen3vl"]
    arr = npy(assert_artifact(media_server, "qwen-item", "video_qwen3vl", meta))
    assert arr.shape == (2048,) and meta["fingerprint"] == FINGERPRINT
    assert out["channels"]["video_clip"]["status"] == "succeeded"
    task = vector(api_worker.output(video_job(media_server, media.speech_mp4)))
    np.testing.assert_allclose(arr, task, atol=1e-5)


def test_long_captions_are_truncated_and_said_so(
    api_worker: ApiWorker, media_server: MediaServer, media: Media
):
    caption = "a red car in the street at night with people walking by and a dog barking at a cat"
    out = api_worker.output(video_job(media_server, media.speech_mp4, caption=caption))
    assert out["caption_truncated"] is True  # the worker runs QWEN3VL_MAX_TEXT_TOKENS=24
    vector(out)


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"dims": 300}, "input.dims", ", ".join(map(str, MRL_DIMS))),
        ({"dims": "512"}, "input.dims", "integer"),
        ({"caption": "x" * 2001}, "input.caption", "2000 characters"),
        ({"caption": "   "}, "input.caption", "empty"),
        ({"frames": 8}, "input.*", "unknown field"),
    ],
)
def test_bad_inputs_are_refused_without_echo(
    api_worker: ApiWorker, media_server: MediaServer, media: Media, extra, field, words
):
    err = api_worker.error(video_job(media_server, media.speech_mp4, **extra))
    assert err["code"] == "invalid_input" and err["field"] == field and words in err["message"]
    assert "x" * 50 not in err["message"] and SECRET not in json.dumps(err)


def test_a_source_without_video_is_a_media_error(
    api_worker: ApiWorker, media_server: MediaServer, media: Media
):
    err = api_worker.error(video_job(media_server, media.tone_m4a))
    assert err["code"] == "media_error" and "no video stream" in err["message"]
    err = api_worker.error(video_job(media_server, media.empty_mp4))
    assert err["code"] == "media_error" and SECRET not in json.dumps(err)
    assert api_worker.output({"task": "qwen3vl_text", "texts": ["still serving"]})["dims"] == 2048


def test_text_queries_share_the_space(api_worker: ApiWorker):
    out = api_worker.output({"task": "qwen3vl_text", "texts": ["a cat", "a red car", "a cat"], "dims": 512})
    assert out["version"] == FINGERPRINT and out["dims"] == 512 and out["truncated"] == [False] * 3
    vecs = np.array(out["vectors"], np.float32)
    assert vecs.shape == (3, 512)
    assert_unit_vectors(vecs, 512)
    np.testing.assert_allclose(vecs[0], vecs[2], atol=1e-5)
    assert float(vecs[0] @ vecs[1]) < 0.9999
    job = {"task": "qwen3vl_text", "texts": ["a cat"], "instruction": "Find videos", "dims": 512}
    other = np.array(api_worker.output(job)["vectors"][0], np.float32)
    assert_unit_vectors(other, 512)
    assert float(other @ vecs[0]) < 0.9999  # the instruction is part of the input
