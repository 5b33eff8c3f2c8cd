"""`se demo`, part 2: the RunPod worker over the embedded local stack, end to end.

1. moto's S3 on 127.0.0.1 (real boto3); a synthetic video with espeak-ng speech is uploaded to
   `uploads/{owner}/{item}/clip.mp4`.
2. The worker starts under the runpod SDK's local API (`--rp_serve_api`) with no AWS credentials.
3. One `embed_item` job (POST /runsync) with a presigned GET for the source and a presigned PUT per
   channel, at the DESIGN.md keys `embeddings/{spec_version}/{channel}/{owner}/{item}.npy` and
   `transcripts/{spec_version}/{owner}/{item}.json`; every artifact is read back from S3 and its
   sha256, shape and norms checked against what the worker reported.
4. A `clip_text` query, and a bad job (a source that does not exist) that must fail cleanly and write
   nothing.

CLIP/VideoMAE/wav2vec2 are the tiny random-weight dev models (their vectors mean nothing; the output
says so); the transcript comes from the real Whisper tiny.en weights.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from shared import spec
from shared.dev.localstack import LocalRunpodWorker, MotoServer

BUCKET = "se-local-media"
OWNER, ITEM = "demo-owner", "demo-video"
SPEECH = "please remember to water the plants every morning"
CHANNELS = ("video_clip", "video_mae", "audio_wav2vec2", "transcript")


class DemoFailed(RuntimeError):
    pass


def artifact_key(channel: str, owner: str, item: str) -> str:
    if channel == "transcript":
        return f"transcripts/{spec.SPEC_VERSION}/{owner}/{item}.json"
    return f"embeddings/{spec.SPEC_VERSION}/{channel}/{owner}/{item}.npy"


def _presigned(s3: Any, method: str, key: str) -> str:
    return s3.generate_presigned_url(method, Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=900)


def _embed_job(s3: Any, owner: str, item: str, source_key: str) -> dict[str, Any]:
    fps = spec.fingerprints()
    return {
        "task": "embed_item",
        "item": {"owner_id": owner, "item_id": item, "modality": "video"},
        "source_url": _presigned(s3, "get_object", source_key),
        "channels": list(CHANNELS),
        "outputs": {ch: _presigned(s3, "put_object", artifact_key(ch, owner, item)) for ch in CHANNELS},
        "fingerprints": {ch: fps[ch] for ch in CHANNELS},
    }


def _check_artifact(s3: Any, channel: str, report: dict[str, Any]) -> tuple[str, Any]:
    """Read the artifact back from S3 and compare it with the worker's report.

    Returns a one-line summary and the parsed artifact (the transcript document, or the array)."""
    data = s3.get_object(Bucket=BUCKET, Key=artifact_key(channel, OWNER, ITEM))["Body"].read()
    if hashlib.sha256(data).hexdigest() != report["sha256"]:
        raise DemoFailed(f"{channel}: the object in S3 is not what the worker reported")
    if channel == "transcript":
        doc = json.loads(data)
        return f"{len(doc['segments'])} segments, {doc['duration']:.1f} s", doc
    arr = np.load(io.BytesIO(data), allow_pickle=False)
    if arr.dtype != np.float32 or list(arr.shape) != report["shape"]:
        raise DemoFailed(f"{channel}: {arr.dtype} {arr.shape} in S3, reported {report['shape']}")
    norms = np.linalg.norm(arr.reshape(-1, arr.shape[-1]), axis=1)
    if not np.allclose(norms, 1.0, atol=1e-4):
        raise DemoFailed(f"{channel}: rows are not L2-normalised")
    return f"float32 {tuple(arr.shape)}, unit rows", arr


def _embed_and_check(s3: Any, worker: LocalRunpodWorker, source_key: str) -> dict[str, Any]:
    """Run embed_item, check every artifact in S3; returns the artifacts as read back."""
    body = worker.runsync(_embed_job(s3, OWNER, ITEM, source_key))
    err = worker.error_of(body)
    if err is not None:
        raise DemoFailed(f"embed_item failed: {err}")
    out = body["output"]
    print(f"\nembed_item {body['status']} in {out['seconds']:.2f} s, spec {out['spec_version']}")
    print(f"  {'channel':16s} {'status':10s} {'model':34s} {'random':6s} {'sec':>6s}  read back from S3")
    artifacts = {}
    for ch in CHANNELS:
        r = out["channels"][ch]
        if r["status"] != "succeeded":
            raise DemoFailed(f"{ch}: {r}")
        check, artifacts[ch] = _check_artifact(s3, ch, r)
        model, rnd = r["model"][:34], str(r["random"])
        print(f"  {ch:16s} {r['status']:10s} {model:34s} {rnd:6s} {r['seconds']:6.2f}  {check}")
    return artifacts


def _query_and_bad_input(s3: Any, worker: LocalRunpodWorker) -> None:
    query = worker.runsync({"task": "clip_text", "texts": ["plants being watered", "a city at night"]})
    if worker.error_of(query) is not None:
        raise DemoFailed(f"clip_text failed: {worker.error_of(query)}")
    q = query["output"]
    print(f"\nclip_text: {len(q['vectors'])} x {q['dims']} from {q['model']} (random: {q['random']})")

    missing = "missing-item"
    bad = worker.runsync(_embed_job(s3, OWNER, missing, f"uploads/{OWNER}/{missing}/clip.mp4"))
    err = worker.error_of(bad)
    listed = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    stray = [o["Key"] for o in listed if f"/{missing}" in o["Key"]]
    if err is None or stray:
        raise DemoFailed(f"a missing source must fail and write nothing: {bad}, {stray}")
    print(f"missing source -> {bad['status']} {err['code']}: {err['message']} (no artifact written)")


def run(model_dir: Path) -> int:
    """The whole worker demo; raises DemoFailed (or WorkerFailed) when anything is not as it must be."""
    from shared.dev.media import mux_speech_into_mp4, word_error_rate

    print("\n== RunPod worker over the local stack: moto S3 on 127.0.0.1 + the SDK's --rp_serve_api")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="se-demo-") as tmp:
        video = mux_speech_into_mp4(Path(tmp) / "clip.mp4", SPEECH, size=(320, 240), fps=10)
        log_path = Path(tmp) / "worker.log"
        with MotoServer() as moto, LocalRunpodWorker(model_dir, log_path=log_path) as worker:
            took = time.perf_counter() - started
            print(f"moto {moto.endpoint}, worker {worker.base} (up in {took:.1f} s, no AWS credentials)")
            s3 = moto.client("s3")
            s3.create_bucket(Bucket=BUCKET)
            source_key = f"uploads/{OWNER}/{ITEM}/clip.mp4"
            s3.upload_file(str(video.path), BUCKET, source_key)
            size = video.path.stat().st_size
            print(f"uploaded s3://{BUCKET}/{source_key} ({size} bytes), speech: {SPEECH!r}")

            text = _embed_and_check(s3, worker, source_key)["transcript"]["text"].strip()
            print(f"  transcript: {text!r} (word error rate {word_error_rate(SPEECH, text):.2f})")
            _query_and_bad_input(s3, worker)

            keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))
            print("\nbucket now holds:\n" + "\n".join(f"  s3://{BUCKET}/{k}" for k in keys))
    print(f"\nworker demo done in {time.perf_counter() - started:.1f} s")
    return 0
