"""The real worker process under the RunPod SDK's local API (`--rp_serve_api`), dev models on CPU
(tiny random CLIP/VideoMAE/wav2vec2, real Whisper tiny.en), media from a local HTTP server."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from shared import spec
from tests.integration.worker.support import AUDIO_SPEECH, SPEECH, ApiWorker, Media, MediaServer, wer

pytestmark = pytest.mark.integration

ALL_VIDEO = ["video_clip", "video_mae", "audio_wav2vec2", "transcript"]


def embed_job(server: MediaServer, source: str, modality: str, channels: list[str], prefix: str) -> dict:
    return {
        "task": "embed_item",
        "item": {"owner_id": "owner-1", "item_id": prefix, "modality": modality},
        "source_url": server.url(source),
        "channels": channels,
        "outputs": {c: server.url(f"/out/{prefix}/{c}") for c in channels},
    }


def npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def assert_artifact(server: MediaServer, prefix: str, name: str, meta: dict) -> bytes:
    data, ctype = server.upload(f"/out/{prefix}/{name}")
    assert meta["status"] == "succeeded", meta
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["bytes"] == len(data)
    assert meta["content_type"] == ctype
    assert meta["fingerprint"] == spec.CHANNELS[name].fingerprint
    return data


def assert_unit_vectors(arr: np.ndarray, dims: int) -> None:
    assert arr.dtype == np.float32 and arr.shape[-1] == dims
    assert np.isfinite(arr).all()
    np.testing.assert_allclose(np.linalg.norm(arr.reshape(-1, dims), axis=1), 1.0, atol=1e-4)


def assert_still_serving(worker: ApiWorker) -> None:
    out = worker.output({"task": "clip_text", "texts": ["still alive"]})
    assert len(out["vectors"]) == 1 and out["dims"] == 512


def test_video_item_all_four_channels(api_worker: ApiWorker, media_server: MediaServer, media: Media):
    out = api_worker.output(embed_job(media_server, media.speech_mp4, "video", ALL_VIDEO, "video"))
    assert out["spec_version"] == spec.SPEC_VERSION
    assert out["item"] == {"owner_id": "owner-1", "item_id": "video", "modality": "video"}
    src = media.bytes[media.speech_mp4]
    assert out["source"]["bytes"] == len(src) and out["source"]["sha256"] == hashlib.sha256(src).hexdigest()
    assert out["source"]["duration"] == pytest.approx(media.speech_seconds, abs=0.5)
    ch = out["channels"]
    assert list(ch) == ALL_VIDEO

    matrix = npy(assert_artifact(media_server, "video", "video_clip", ch["video_clip"]))
    assert matrix.shape == (17, 512) == tuple(ch["video_clip"]["shape"])
    assert_unit_vectors(matrix, 512)
    pooled = matrix[1:].mean(axis=0)
    np.testing.assert_allclose(matrix[0], pooled / np.linalg.norm(pooled), atol=1e-5)
    times = ch["video_clip"]["timestamps"]
    assert len(times) == 16 and times == sorted(times) and times[-1] <= media.speech_seconds + 0.5
    assert ch["video_clip"]["random"] is True and ch["video_clip"]["model_name"] == "clip-vit-b-32"

    mae = npy(assert_artifact(media_server, "video", "video_mae", ch["video_mae"]))
    assert mae.shape == (768,)
    assert_unit_vectors(mae, 768)
    w2v = npy(assert_artifact(media_server, "video", "audio_wav2vec2", ch["audio_wav2vec2"]))
    assert w2v.shape == (768,)
    assert_unit_vectors(w2v, 768)

    doc = json.loads(assert_artifact(media_server, "video", "transcript", ch["transcript"]))
    assert set(doc) == {"text", "segments", "language", "duration"}
    assert doc["language"] == "en" and ch["transcript"]["random"] is False
    assert wer(SPEECH, doc["text"]) <= 0.25, doc["text"]
    assert doc["segments"] and all(s["end"] >= s["start"] >= 0 for s in doc["segments"])
    assert doc["duration"] == pytest.approx(media.speech_seconds, abs=0.6)


def test_audio_item(api_worker: ApiWorker, media_server: MediaServer, media: Media):
    chans = ["audio_wav2vec2", "transcript"]
    out = api_worker.output(embed_job(media_server, media.speech_wav, "audio", chans, "audio"))
    assert out["source"]["has_video"] is False
    vec = npy(assert_artifact(media_server, "audio", "audio_wav2vec2", out["channels"]["audio_wav2vec2"]))
    assert_unit_vectors(vec, 768)
    doc = json.loads(assert_artifact(media_server, "audio", "transcript", out["channels"]["transcript"]))
    assert wer(AUDIO_SPEECH, doc["text"]) <= 0.3, doc["text"]


def test_image_item_with_tta_matches_the_query_path(
    api_worker: ApiWorker, media_server: MediaServer, media: Media
):
    out = api_worker.output(embed_job(media_server, media.photo_png, "image", ["image_clip"], "image"))
    meta = out["channels"]["image_clip"]
    vec = npy(assert_artifact(media_server, "image", "image_clip", meta))
    assert vec.shape == (512,) and meta["tta"] is True
    assert_unit_vectors(vec, 512)
    query = api_worker.output({"task": "clip_image", "images": [{"url": media_server.url(media.photo_png)}]})
    assert query["tta"] is True
    np.testing.assert_allclose(np.array(query["vectors"][0], np.float32), vec, atol=1e-5)
    plain = api_worker.output(
        {"task": "clip_image", "images": [{"url": media_server.url(media.photo_png)}], "tta": False}
    )
    assert not np.allclose(np.array(plain["vectors"][0], np.float32), vec, atol=1e-4)  # TTA really ran


def test_transcribe(api_worker: ApiWorker, media_server: MediaServer, media: Media):
    out = api_worker.output({"task": "transcribe", "source_url": media_server.url(media.speech_wav)})
    assert {"text", "segments", "language", "duration"} <= set(out)
    assert out["language"] == "en"
    assert wer(AUDIO_SPEECH, out["text"]) <= 0.3, out["text"]
    assert out["duration"] == pytest.approx(media.audio_speech_seconds, abs=0.1)
    words = api_worker.output(
        {"task": "transcribe", "source_url": media_server.url(media.speech_mp4), "word_timestamps": True}
    )
    assert wer(SPEECH, words["text"]) <= 0.25
    assert all("words" in s and s["words"] for s in words["segments"])


def test_clip_text(api_worker: ApiWorker):
    out = api_worker.output({"task": "clip_text", "texts": ["a dog", "a cat", "a dog"]})
    vecs = np.array(out["vectors"], np.float32)
    assert vecs.shape == (3, 512) and out["dims"] == 512 and out["random"] is True
    assert_unit_vectors(vecs, 512)
    np.testing.assert_allclose(vecs[0], vecs[2], atol=1e-6)
    assert not np.allclose(vecs[0], vecs[1], atol=1e-3)


def test_clip_image_url_and_base64_agree(api_worker: ApiWorker, media_server: MediaServer, media: Media):
    b64 = base64.b64encode(media.bytes[media.photo_png]).decode()
    out = api_worker.output(
        {
            "task": "clip_image",
            "images": [
                {"url": media_server.url(media.photo_png)},
                {"base64": b64},
                {"base64": f"data:image/png;base64,{b64}"},
                {"url": media_server.url(media.panorama_jpg)},
                {"url": media_server.url(media.tiny_png)},
            ],
        }
    )
    vecs = np.array(out["vectors"], np.float32)
    assert vecs.shape == (5, 512)
    assert_unit_vectors(vecs, 512)
    np.testing.assert_allclose(vecs[0], vecs[1], atol=1e-6)
    np.testing.assert_allclose(vecs[0], vecs[2], atol=1e-6)


def test_audio_only_source_fails_only_the_video_channels(
    api_worker: ApiWorker, media_server: MediaServer, media: Media
):
    out = api_worker.output(embed_job(media_server, media.tone_m4a, "video", ALL_VIDEO, "audio-only"))
    ch = out["channels"]
    for name in ("video_clip", "video_mae"):
        assert ch[name]["status"] == "failed"
        assert (
            ch[name]["error"]["code"] == "media_error" and "no video stream" in ch[name]["error"]["message"]
        )
        assert not media_server.uploaded(f"/out/audio-only/{name}")
    for name in ("audio_wav2vec2", "transcript"):
        assert_artifact(media_server, "audio-only", name, ch[name])
    assert_still_serving(api_worker)


def _bad_cases(server: MediaServer, m: Media) -> list[tuple[str, dict, str]]:
    return [
        (
            "truncated mp4",
            embed_job(server, m.truncated_mp4, "video", ["video_clip", "video_mae"], "trunc"),
            "media_error",
        ),
        ("zero-byte file", embed_job(server, m.empty_mp4, "video", ALL_VIDEO, "empty"), "media_error"),
        (
            "png claiming 20000x20000",
            embed_job(server, m.huge_claim_png, "image", ["image_clip"], "huge"),
            "media_error",
        ),
        ("url returns 404", embed_job(server, m.missing, "video", ["video_clip"], "404"), "fetch_error"),
        (
            "oversized body",
            embed_job(server, m.oversized_bin, "video", ["video_clip"], "big"),
            "payload_too_large",
        ),
        (
            "huge image on the query path",
            {
                "task": "clip_image",
                "images": [{"url": server.url(m.photo_png)}, {"url": server.url(m.huge_claim_png)}],
            },
            "media_error",
        ),
        (
            "transcribe of a zero-byte file",
            {"task": "transcribe", "source_url": server.url(m.empty_mp4)},
            "media_error",
        ),
        ("unknown task", {"task": "embed_everything"}, "invalid_input"),
        (
            "bad owner id",
            {
                **embed_job(server, m.photo_png, "image", ["image_clip"], "x"),
                "item": {"owner_id": "a/b", "item_id": "i", "modality": "image"},
            },
            "invalid_input",
        ),
    ]


def test_bad_inputs_fail_cleanly_and_the_worker_keeps_serving(
    api_worker: ApiWorker, media_server: MediaServer, media: Media
):
    for name, job, code in _bad_cases(media_server, media):
        body = api_worker.runsync(job)
        if body["status"] == "COMPLETED":  # a source that opens but whose streams fail: every channel failed
            assert name == "truncated mp4", body
            statuses = {c["status"] for c in body["output"]["channels"].values()}
            codes = {c["error"]["code"] for c in body["output"]["channels"].values()}
            assert statuses == {"failed"} and codes == {code}, body
        else:
            assert body["status"] == "FAILED", (name, body)
            err = json.loads(body["error"])
            assert err["code"] == code, (name, err)
            assert err["message"] and "Traceback" not in err["message"]
            assert "SECRET" not in err["message"] and "X-Amz" not in err["message"]
            assert "/tmp" not in err["message"]
        assert not any(
            p.startswith(f"/out/{job.get('item', {}).get('item_id')}/") for p in media_server.store.uploads
        )
        assert_still_serving(api_worker)
    not_found = api_worker.error(embed_job(media_server, media.missing, "video", ["video_clip"], "404b"))
    assert not_found["retryable"] is False and not_found["field"] == "input.source_url"
    assert "HTTP 404" in not_found["message"]


def test_one_x_one_image_is_embedded(api_worker: ApiWorker, media_server: MediaServer, media: Media):
    out = api_worker.output(embed_job(media_server, media.tiny_png, "image", ["image_clip"], "tiny"))
    vec = npy(assert_artifact(media_server, "tiny", "image_clip", out["channels"]["image_clip"]))
    assert_unit_vectors(vec, 512)


def test_concurrent_clip_text_requests_share_forward_passes(api_worker: ApiWorker):
    texts = [f"query number {i} about dogs" for i in range(32)]
    with ThreadPoolExecutor(32) as pool:
        outs = list(pool.map(lambda t: api_worker.output({"task": "clip_text", "texts": [t]}), texts))
    passes = {o["batch"]["pass"] for o in outs}
    print(f"32 concurrent clip_text jobs -> {len(passes)} forward passes")
    assert len(passes) < 32, passes
    assert max(o["batch"]["size"] for o in outs) > 1
    # every caller got its own row: equal to the vector of its text computed alone
    alone = api_worker.output({"task": "clip_text", "texts": [texts[7], texts[23]]})["vectors"]
    np.testing.assert_allclose(outs[7]["vectors"][0], alone[0], atol=1e-5)
    np.testing.assert_allclose(outs[23]["vectors"][0], alone[1], atol=1e-5)


def test_no_presigned_query_ever_reaches_the_log(
    api_worker: ApiWorker, media_server: MediaServer, media: Media
):
    api_worker.runsync(embed_job(media_server, media.missing, "video", ["video_clip"], "leak"))
    log = api_worker.log()
    assert "Started." in log  # the SDK did log the jobs
    assert "5ec7e75ec7e7" not in log and "AKIAEXAMPLE" not in log
    assert "Traceback" not in log
