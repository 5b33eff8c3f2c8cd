"""RunPod serverless GPU worker: a thin shim over shared.worker.

Start: `python -u -m handlers.runpod_worker` (the image's CMD). The runpod SDK's own flags work:
`--rp_serve_api --rp_api_port 8000` (local HTTP API: POST /runsync, /run), `--test_input '<job json>'`
(run one job and exit 0 or 1), or a `test_input.json` in the working directory.

At start, settings are read from the environment (shared.worker.settings documents every variable),
every enabled model is loaded from MODEL_DIR and a canary inference runs on each; any failure prints
one clear line to stderr and exits 1 before a job is accepted (DEVICE=cuda, as the GPU image sets, with no
CUDA device visible is such a failure). Once ready, the worker writes WORKER_READY_FILE if that is set
(the image's HEALTHCHECK looks for it).

Accepted `job["input"]` (full rules in shared.worker.requests):

    {"task": "embed_item", "item": {"owner_id", "item_id", "modality": "video" | "audio" | "image"},
     "source_url": presigned GET, "channels": [video_clip | video_mae | audio_wav2vec2 | transcript |
     image_clip | video_qwen3vl, ...], "outputs": {channel: presigned PUT}, "fingerprints"?: {channel:
     fingerprint}}
        -> {"item", "spec_version", "source", "channels": {name: {"status", ...}}, "seconds"}
    {"task": "transcribe", "source_url", "language"?, "vad"?, "word_timestamps"?, "beam_size"?}
        -> {"text", "segments": [{"start", "end", "text"}], "language", "duration", "model"}
    {"task": "clip_text", "texts": [str, ...]}
        -> {"model", "dims", "vectors", "random", "batch"}
    {"task": "clip_image", "images": [{"url"} | {"base64"}, ...], "tta"?}
        -> {"model", "dims", "vectors", "random", "batch", "tta"}
    {"task": "embed_video", "source_url", "caption"?, "dims"?, "transcribe"?}        (opt-in, seed 000)
        -> {"version", "dims", "embedding", "model", "backend", "random", "caption_truncated",
            "frames", "source", "transcript"? | "transcript_error"?}
    {"task": "qwen3vl_text", "texts": [str, ...], "dims"?, "instruction"?}           (opt-in)
        -> {"version", "model", "backend", "random", "dims", "vectors", "truncated"}

embed_video/qwen3vl_text run Qwen3-VL-Embedding-2B (EMBEDDING_BACKEND=qwen3_vl), or, for callers'
integration tests only, hash-seeded placeholders labelled "deterministic" (EMBEDDING_BACKEND=
deterministic). `version` is the video_qwen3vl channel's fingerprint; `dims` one of the model's
Matryoshka sizes (2048 ... 64).

A whole-job failure returns {"error": "<json>"}: the SDK (and RunPod's job status) carry `error` as a
string, so the worker's `{"code", "message", "retryable", "field"?, "correlation_id"?}` travels
JSON-encoded; `json.loads` it. Bad input is `invalid_input` (or a more specific code); an unexpected
fault is `internal_error` (retryable) with a correlation id whose traceback is only in the worker's
log. The handler never raises, so the SDK's own error (traceback, host name) never reaches a caller.
embed_item reports a failed channel in its result and still returns the others.

When a fault means this process is unhealthy (CUDA error, non-finite model output), the output also
holds "refresh_worker": true; the SDK pops it and reports stopPod, so RunPod replaces the worker.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from shared import logs
from shared.errors import EmbeddingError
from shared.worker.health import run_canaries
from shared.worker.settings import WorkerSettings
from shared.worker.worker import Worker

log = logging.getLogger("handlers.runpod_worker")
_worker: Worker | None = None


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    """The SDK's async handler: one RunPod job in, its output (or {"error": ...}) out."""
    if _worker is None:
        raise RuntimeError("the worker is not started; run main()")
    token = logs.job_id.set(str(job.get("id", "-"))[:80] if isinstance(job, dict) else None)
    try:
        out = await _worker.handle(job)
    finally:
        logs.job_id.reset(token)
    if isinstance(out.get("error"), dict):
        return {**out, "error": json.dumps(out["error"], separators=(",", ":"))}
    return out


def concurrency_modifier(current: int) -> int:
    """How many jobs RunPod may hand this worker at once (WORKER_CONCURRENCY)."""
    return _worker.settings.concurrency if _worker is not None else 1


def start_worker(env: dict[str, str] | None = None) -> Worker:
    """Settings -> models -> canary; raises EmbeddingError (ConfigError, ModelNotFound, ModelUnhealthy)."""
    settings = WorkerSettings.from_env(os.environ if env is None else env)
    log.info(
        "starting: device=%s precision=%s tasks=%s channels=%s model_dir=%s",
        settings.device,
        settings.precision,
        ",".join(settings.tasks),
        ",".join(settings.embed_channels) or "-",
        settings.model_dir,
    )
    worker = Worker.from_settings(settings)
    timings = run_canaries(worker.models)
    log.info("ready: canaries passed %s", timings)
    return worker


def main() -> int:
    """Start the worker and hand it to runpod.serverless.start; exit code 1 on a startup failure."""
    global _worker
    # structured (JSON lines) on RunPod, which sets RUNPOD_ENDPOINT_ID, as the SDK's own logger decides
    logs.worker(
        os.environ.get("WORKER_LOG_LEVEL", "INFO"), structured=bool(os.environ.get("RUNPOD_ENDPOINT_ID"))
    )
    try:
        _worker = start_worker()
    except EmbeddingError as e:
        print(
            f"serverless-embeddings worker: startup failed: {e.public_message}", file=sys.stderr, flush=True
        )
        return 1
    ready = os.environ.get("WORKER_READY_FILE")
    if ready:
        Path(ready).write_text(f"ready: {_worker.settings.device}\n")
    import runpod
    from runpod.serverless.modules.rp_logger import RunPodLogger

    if not (os.environ.get("RUNPOD_LOG_LEVEL") or os.environ.get("RUNPOD_DEBUG_LEVEL")):
        # The SDK defaults to DEBUG, which prints whole job inputs: presigned URLs are credentials.
        RunPodLogger().set_level("INFO")
    runpod.serverless.start(
        {"handler": handler, "concurrency_modifier": concurrency_modifier, "return_aggregate_stream": False}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
