"""The job logic with fake models and local files (no sockets): decode once, channels independent,
artifacts exactly as uploaded, safe errors, faults kept in their channel, temp folders removed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import threading

import numpy as np
import pytest

from shared import spec
from shared.dev.media import make_image_bytes, png_with_claimed_size
from shared.worker import model_time
from shared.worker.faults import redact
from tests.unit.worker.harness import Harness, embed_job, url

pytestmark = pytest.mark.unit


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def test_video_item_runs_every_channel_from_one_download(media, temp_root):
    h = Harness(media)
    channels = ["video_clip", "video_mae", "audio_wav2vec2", "transcript"]
    out = h.run(embed_job("clip.mp4", "video", channels))
    assert h.downloads == [url("clip.mp4")]
    assert list(out["channels"]) == channels
    assert all(r["status"] == "succeeded" for r in out["channels"].values()), out
    assert out["spec_version"] == spec.SPEC_VERSION
    assert out["item"] == {"owner_id": "own", "item_id": "it", "modality": "video"}
    src = media["clip.mp4"].read_bytes()
    assert out["source"]["bytes"] == len(src)
    assert out["source"]["sha256"] == hashlib.sha256(src).hexdigest()
    assert out["source"]["has_video"] and out["source"]["has_audio"]
    assert abs(out["source"]["duration"] - 2.0) < 0.2
    for name in channels:
        data, ctype = h.uploads[f"{name}.out"]
        meta = out["channels"][name]
        assert meta["sha256"] == hashlib.sha256(data).hexdigest()
        assert meta["bytes"] == len(data)
        assert meta["fingerprint"] == spec.CHANNELS[name].fingerprint
        assert meta["content_type"] == ctype
    vc = out["channels"]["video_clip"]
    matrix = load_npy(h.uploads["video_clip.out"][0])
    assert matrix.dtype == np.float32 and matrix.shape == (17, 512) and vc["shape"] == [17, 512]
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    pooled = matrix[1:].mean(axis=0)
    np.testing.assert_allclose(matrix[0], pooled / np.linalg.norm(pooled), atol=1e-6)
    assert len(vc["timestamps"]) == 16 and vc["timestamps"] == sorted(vc["timestamps"])
    assert vc["model"] == "clip-vit-b-32:fake" and vc["random"] is True
    mae = load_npy(h.uploads["video_mae.out"][0])
    assert mae.shape == (768,) and abs(np.linalg.norm(mae) - 1) < 1e-5
    assert h.models.videomae.seen[0][0] == 16  # the same 16 frames video_clip saw
    assert h.models.clip.calls == [("frame", 16)]
    # 2 s at 16 kHz (AAC pads to whole 1024-sample frames), decoded once for both audio channels
    assert len(h.models.wav2vec2.seen) == 1 and abs(h.models.wav2vec2.seen[0] - 32000) <= 1024
    assert h.models.whisper.calls[0]["samples"] == h.models.wav2vec2.seen[0]
    transcript = h.uploads["transcript.out"]
    assert transcript[1] == "application/json"
    import json

    doc = json.loads(transcript[0])
    assert set(doc) == {"text", "segments", "language", "duration"} and doc["text"] == "hello world"
    assert list(temp_root.iterdir()) == []  # the download folder is gone


def test_short_clip_pads_videomae_but_not_the_clip_frame_rows(media, temp_root):
    h = Harness(media)
    out = h.run(embed_job("short.mp4", "video", ["video_clip", "video_mae"]))
    vc = out["channels"]["video_clip"]
    assert vc["status"] == "succeeded"
    assert vc["frames"] == 5 and vc["shape"] == [6, 512]  # 0.5 s at 10 fps: 5 real frames
    assert out["channels"]["video_mae"]["padded"] == 11
    assert h.models.videomae.seen[0][0] == 16


def test_audio_only_source_fails_video_channels_and_serves_audio_ones(media, temp_root):
    h = Harness(media)
    out = h.run(embed_job("tone.wav", "video", ["video_clip", "video_mae", "audio_wav2vec2", "transcript"]))
    ch = out["channels"]
    for name in ("video_clip", "video_mae"):
        assert ch[name]["status"] == "failed"
        assert ch[name]["error"]["code"] == "media_error"
        assert "no video stream" in ch[name]["error"]["message"]
        assert ch[name]["error"]["retryable"] is False
        assert f"{name}.out" not in h.uploads  # no partial artifact
    assert ch["audio_wav2vec2"]["status"] == "succeeded"
    assert ch["transcript"]["status"] == "succeeded"


def test_audio_item(media, temp_root):
    h = Harness(media)
    out = h.run(embed_job("tone.wav", "audio", ["audio_wav2vec2", "transcript"]))
    assert {r["status"] for r in out["channels"].values()} == {"succeeded"}
    assert out["channels"]["audio_wav2vec2"]["shape"] == [768]
    assert out["channels"]["audio_wav2vec2"]["audio_seconds"] == 1.5


def test_image_item_uses_tta_from_settings(media, temp_root):
    h = Harness(media)
    out = h.run(embed_job("photo.png", "image", ["image_clip"]))
    ic = out["channels"]["image_clip"]
    assert ic["status"] == "succeeded" and ic["shape"] == [512] and ic["tta"] is True
    assert h.models.clip.calls == [("image-tta1", 1)]
    assert out["source"]["width"] == 40 and out["source"]["height"] == 30


def test_one_failed_upload_fails_only_that_channel(media, temp_root):
    h = Harness(media)
    h.fail_upload = {"video_mae.out"}
    out = h.run(embed_job("clip.mp4", "video", ["video_clip", "video_mae"]))
    assert out["channels"]["video_clip"]["status"] == "succeeded"
    err = out["channels"]["video_mae"]["error"]
    assert err["code"] == "fetch_error" and err["retryable"] is True
    assert "SECRET" not in err["message"]  # the URL's query was stripped


def test_fingerprint_mismatch_fails_that_channel(media, temp_root):
    h = Harness(media)
    job = embed_job(
        "clip.mp4",
        "video",
        ["video_clip", "video_mae"],
        fingerprints={"video_clip": "0" * 16, "video_mae": spec.CHANNELS["video_mae"].fingerprint},
    )
    out = h.run(job)
    assert out["channels"]["video_clip"]["error"]["code"] == "spec_mismatch"
    assert out["channels"]["video_mae"]["status"] == "succeeded"
    assert "video_clip.out" not in h.uploads


def test_a_channel_this_worker_does_not_serve(media, temp_root):
    h = Harness(media, {"WORKER_CHANNELS": "audio_wav2vec2,transcript"})
    out = h.run(embed_job("clip.mp4", "video", ["video_mae", "transcript"]))
    assert out["channels"]["video_mae"]["error"]["code"] == "channel_disabled"
    assert out["channels"]["transcript"]["status"] == "succeeded"


def test_nan_from_a_model_is_never_uploaded(media, temp_root):
    h = Harness(media)
    h.models.wav2vec2.nan = True
    out = h.run(embed_job("clip.mp4", "video", ["audio_wav2vec2", "video_mae"]))
    assert out["channels"]["audio_wav2vec2"]["error"]["code"] == "model_unhealthy"
    assert "audio_wav2vec2.out" not in h.uploads
    assert out["channels"]["video_mae"]["status"] == "succeeded"


@pytest.mark.parametrize(("name", "code"), [("zero.mp4", "media_error"), ("garbage.mp4", "media_error")])
def test_undecodable_source_fails_the_job_with_a_clean_message(media, temp_root, name, code):
    h = Harness(media)
    out = h.run(embed_job(name, "video", ["video_clip", "transcript"]))
    assert set(out) == {"error"}
    err = out["error"]
    assert err["code"] == code and err["field"] == "input.source_url" and err["retryable"] is False
    assert str(temp_root) not in err["message"] and "download-" not in err["message"]
    assert h.uploads == {}
    assert list(temp_root.iterdir()) == []


def test_oversized_source_is_refused(media, temp_root):
    h = Harness(media, {"MAX_DOWNLOAD_BYTES": "100"})
    out = h.run(embed_job("clip.mp4", "video", ["video_clip"]))
    assert out["error"]["code"] == "payload_too_large"
    assert list(temp_root.iterdir()) == []


def test_bad_input_returns_an_error_never_raises(media):
    h = Harness(media)
    out = h.run({"task": "embed_item", "source_url": url("x")})
    assert out["error"]["code"] == "invalid_input" and out["error"]["field"] == "input.item"
    assert asyncio.run(h.worker.handle({"id": "x"}))["error"]["field"] == "input"
    assert asyncio.run(h.worker.handle("nonsense"))["error"]["field"] == "input"


def test_disabled_task_is_refused(media):
    h = Harness(media, {"WORKER_TASKS": "clip_text"})
    out = h.run({"task": "transcribe", "source_url": url("tone.wav")})
    assert out["error"]["field"] == "input.task" and "WORKER_TASKS" in out["error"]["message"]


def test_transcribe_returns_the_seed_shape(media, temp_root):
    h = Harness(media)
    out = h.run({"task": "transcribe", "source_url": url("clip.mp4"), "beam_size": 2, "vad": False})
    assert set(out) == {"text", "segments", "language", "duration", "model"}
    assert out["segments"] == [{"start": 0.0, "end": 1.0, "text": "hello world"}]
    call = h.models.whisper.calls[0]
    assert call["beam_size"] == 2 and call["vad"] is False and abs(call["samples"] - 32000) <= 1024
    assert list(temp_root.iterdir()) == []


def test_transcribe_refuses_another_language_on_an_english_model(media):
    h = Harness(media)
    out = h.run({"task": "transcribe", "source_url": url("clip.mp4"), "language": "de"})
    assert out["error"]["field"] == "input.language"
    assert h.downloads == []  # refused before any download


def test_clip_text_returns_the_models_vectors(media):
    h = Harness(media)
    out = h.run({"task": "clip_text", "texts": ["a dog", "a cat"]})
    expected = h.models.clip.embed_texts(["a dog", "a cat"])
    np.testing.assert_allclose(np.array(out["vectors"], np.float32), expected, atol=1e-6)
    assert out["dims"] == 512 and out["model"] == "clip-vit-b-32:fake" and out["batch"]["size"] == 2


def test_clip_image_base64_and_url(media, temp_root):
    h = Harness(media)
    b64 = base64.b64encode(make_image_bytes((8, 8))).decode()
    out = h.run({"task": "clip_image", "images": [{"base64": b64}, {"url": url("photo.png")}], "tta": False})
    assert len(out["vectors"]) == 2 and out["tta"] is False
    assert h.models.clip.calls == [("image-tta0", 2)]
    one = h.run(
        {"task": "clip_image", "images": [{"base64": base64.b64encode(make_image_bytes((1, 1))).decode()}]}
    )
    assert len(one["vectors"]) == 1 and one["tta"] is True


@pytest.mark.parametrize(
    ("data", "code"),
    [(png_with_claimed_size(), "media_error"), (b"GIF89a-not-really", "media_error")],
    ids=["claims-20000x20000", "garbage"],
)
def test_clip_image_bad_images_name_their_index(media, data, code):
    h = Harness(media)
    good = base64.b64encode(make_image_bytes((8, 8))).decode()
    out = h.run(
        {"task": "clip_image", "images": [{"base64": good}, {"base64": base64.b64encode(data).decode()}]}
    )
    assert out["error"]["code"] == code and out["error"]["field"] == "input.images[1]"
    assert h.models.clip.calls == []  # validated before anything was enqueued


def test_redact_strips_every_query_string():
    text = "PUT https://b.s3.amazonaws.com/k.npy?X-Amz-Signature=abc&X-Amz-Credential=AKIA failed; http://h:9/x#frag"
    clean = redact(text)
    assert "abc" not in clean and "AKIA" not in clean and "frag" not in clean
    assert "https://b.s3.amazonaws.com/k.npy" in clean


OTHER_JOBS = {
    "transcribe": {"task": "transcribe", "source_url": url("clip.mp4")},
    # an image job may join an image batch, never a text one: it must not hold the queries' pass open
    "clip_image": {"task": "clip_image", "images": [{"url": url("photo.png")}]},
    "embed_item": embed_job("photo.png", "image", ["image_clip"]),
}
# what each of them answers once let through
OTHER_DONE = {
    "transcribe": lambda out: out["text"] == "hello world",
    "clip_image": lambda out: len(out["vectors"]) == 1,
    "embed_item": lambda out: out["channels"]["image_clip"]["status"] == "succeeded",
}


@pytest.mark.parametrize("other", sorted(OTHER_JOBS))
@pytest.mark.parametrize("early_close", ["1", "0"])
def test_concurrent_clip_text_jobs_share_a_pass_and_other_tasks_do_not_hold_it(
    media, temp_root, early_close, other
):
    """Eight clip_text jobs and another job arrive together. The queries share one pass; with early
    close (default) that pass closes early (counted, not timed), even though the other job is still
    in the worker (held in its download until the queries have answered: it never joins a text
    batch); without it the window runs out."""
    h = Harness(media, {"BATCH_WINDOW_MS": "300", "BATCH_EARLY_CLOSE": early_close})
    texts = [f"query {i}" for i in range(8)]
    h.gate = threading.Event()

    async def main():
        other_job = asyncio.ensure_future(h.worker.handle({"id": "o", "input": OTHER_JOBS[other]}))
        queries = await asyncio.gather(
            *(
                h.worker.handle({"id": f"q{i}", "input": {"task": "clip_text", "texts": [t]}})
                for i, t in enumerate(texts)
            )
        )
        assert not other_job.done()  # still in its download while the queries' pass ran
        h.gate.set()
        return [*queries, await other_job]

    *queries, done = asyncio.run(main())
    assert {q["batch"]["size"] for q in queries} == {8}
    assert OTHER_DONE[other](done), done
    assert h.worker.text_batcher.stats.passes == 1
    assert h.worker.text_batcher.stats.early_closes == (1 if early_close == "1" else 0)
    assert all(a.pending == 0 for a in h.worker.arrivals.values())


def test_a_tta_image_job_does_not_hold_a_plain_image_batch_open(media, temp_root):
    """TTA and plain images never share a pass, so a TTA job still in its download must not keep the
    plain batch waiting out its window (early close is counted per batcher)."""
    h = Harness(media, {"BATCH_WINDOW_MS": "2000"})
    h.gate = threading.Event()
    b64 = base64.b64encode(make_image_bytes((8, 8))).decode()

    async def main():
        held = asyncio.ensure_future(
            h.worker.handle(
                {
                    "id": "t",
                    "input": {"task": "clip_image", "images": [{"url": url("photo.png")}], "tta": True},
                }
            )
        )
        plain = await h.worker.handle(
            {"id": "p", "input": {"task": "clip_image", "images": [{"base64": b64}], "tta": False}}
        )
        assert not held.done()
        h.gate.set()
        return plain, await held

    plain, tta = asyncio.run(main())
    assert plain["tta"] is False and tta["tta"] is True and "error" not in tta
    assert h.worker.image_batcher(False).stats.early_closes == 1


def test_a_channels_seconds_are_its_model_time_not_its_wait_for_the_model(media, temp_root, monkeypatch):
    """Three audio items at once: their transcripts queue on Whisper's one thread. Each reports the
    seconds Whisper ran for it (what the reprocess estimate is built from), not the wait behind the
    others, which shows in wall_seconds only.

    The clock is a fake one that only Whisper moves (0.25 s a call). Whisper starts once all three
    transcripts are waiting for it, and takes the next one once the last one's caller has read the
    clock: the seconds are exact, whatever else the machine is doing."""
    h = Harness(media)
    lock, now = threading.Lock(), [0.0]
    monkeypatch.setattr(model_time, "clock", lambda: now[0])
    turns = [threading.Event() for _ in range(3)]  # Whisper's n-th call may start
    queued: list[str] = []
    ran: list[int] = []
    transcribe = h.models.whisper.transcribe

    def whisper_run(audio, **kw):  # on Whisper's thread, one call at a time
        n = len(ran)
        assert turns[n].wait(30), f"Whisper's call {n} never got its turn"
        ran.append(n)
        out = transcribe(audio, **kw)
        with lock:
            now[0] += 0.25
        return out

    h.models.whisper.transcribe = whisper_run
    run_model = h.worker.run_model

    async def counting_run_model(role, fn, *args, **kw):
        if role != "whisper":
            return await run_model(role, fn, *args, **kw)
        queued.append(role)
        if len(queued) == 3:
            turns[0].set()
        out = await run_model(role, fn, *args, **kw)
        if len(ran) < 3:  # the next call, once this job's step (which reads the clock) is over
            asyncio.get_running_loop().call_soon(turns[len(ran)].set)
        return out

    h.worker.run_model = counting_run_model

    async def main():
        jobs = [
            h.worker.handle({"id": f"a{i}", "input": embed_job("tone.wav", "audio", ["transcript"])})
            for i in range(3)
        ]
        return await asyncio.gather(*jobs)

    reports = [out["channels"]["transcript"] for out in asyncio.run(main())]
    assert all(r["status"] == "succeeded" for r in reports), reports
    assert [r["seconds"] for r in reports] == [0.25] * 3, reports  # each its own run, no wait
    # the first waited for nobody, the second for one, the last for two
    assert sorted(r["wall_seconds"] for r in reports) == [0.25, 0.5, 0.75], reports
