"""embed_video: seed 000's `POST /v1/embed/video` as a RunPod task.

Input: `{"task": "embed_video", "source_url", "caption"?, "dims"?, "transcribe"?}`. Output:
`{"version", "dims", "embedding", "model", "model_name", "backend", "random", "caption_truncated",
"frames", "source", "transcript"? | "transcript_error"?}`.

- `embedding`: the video_qwen3vl channel's vector of the frames with the caption in the same input
  (shared.worker.channels.video_qwen3vl), truncated to `dims` (default EMBEDDING_DIMS) and
  renormalised; `version` is that channel's fingerprint (the spec's), so a caller can tell vectors of
  another recipe apart.
- The caption's token limit is applied before anything is downloaded (QWEN3VL_TEXT_OVERFLOW).
- `transcript`: the transcript channel's document over the same download and the same decode (its
  audio), from whatever WHISPER_BACKEND runs; a transcript failure (no audio track) is reported in
  `transcript_error` and does not fail the embedding.
- EMBEDDING_BACKEND=deterministic: the source is downloaded and probed (bad input fails the same way)
  but no frame is decoded; the vector is hash-seeded from the file's sha256 and the caption, and
  `version`, `model` and `backend` all say "deterministic".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from shared.errors import EmbeddingError, MediaError
from shared.models.backend import check_unit_rows
from shared.models.qwen3vl import matryoshka
from shared.worker.channels import RUNNERS
from shared.worker.channels.video_qwen3vl import fit_text
from shared.worker.faults import failure, redact, rescrubbed
from shared.worker.jobs.embed_item import decode
from shared.worker.requests import EmbedVideoRequest

log = logging.getLogger(__name__)
DETERMINISTIC_VERSION = "deterministic"


def batch_role(request: EmbedVideoRequest, settings: Any) -> str | None:
    return None


async def run(worker: Any, req: EmbedVideoRequest) -> dict[str, Any]:
    from shared.media import temp_workdir

    started = time.perf_counter()
    settings = worker.settings
    backend = worker.models.qwen3vl
    deterministic = backend.kind == "deterministic"
    dims = req.dims or settings.embedding_dims
    caption, cut = None, False
    if req.caption is not None:
        caption, cut = fit_text(backend, settings, req.caption, "input.caption")
    qwen, transcript = RUNNERS["video_qwen3vl"], RUNNERS["transcript"]
    runners = ([] if deterministic else [qwen]) + ([transcript] if req.transcribe else [])
    async with contextlib.AsyncExitStack() as held:
        with temp_workdir("embed-video-") as workdir:
            async with worker.media_slot():
                try:
                    path = await asyncio.to_thread(
                        worker.download, req.source_url, workdir, settings.max_download_bytes
                    )
                    decoded = await decode(worker, "video", path, runners, held)
                    if not decoded.facts["has_video"]:
                        raise MediaError("the source has no video stream")
                    if "frames" in decoded.errors:
                        raise decoded.errors["frames"]
                except EmbeddingError as e:
                    raise rescrubbed(e, str(workdir), field="input.source_url") from None
        if deterministic:
            vec = backend.vector("video", decoded.facts["sha256"], caption or "", dims=dims)
            frames: dict[str, Any] = {}
        else:
            vec = matryoshka(await qwen.embed(worker, decoded, caption), dims)
            frames = qwen.facts(decoded)
        vec = check_unit_rows(vec, "embed_video")
        out: dict[str, Any] = {
            "version": DETERMINISTIC_VERSION if deterministic else qwen.spec.fingerprint,
            "dims": int(vec.shape[-1]),
            "embedding": vec.tolist(),
            "model": backend.model_label,
            "model_name": backend.name,
            "backend": backend.kind,
            "random": bool(backend.random),
            "caption_truncated": cut,
            "frames": frames,
            "source": decoded.facts,
        }
        if req.transcribe:
            await _transcript(worker, decoded, out, str(workdir))
    log.info(
        "embed_video backend=%s dims=%d caption=%s transcribe=%s done in %.2fs",
        backend.kind,
        dims,
        "truncated" if cut else ("yes" if caption else "no"),
        req.transcribe,
        time.perf_counter() - started,
    )
    return out


async def _transcript(worker: Any, decoded: Any, out: dict[str, Any], workdir: str) -> None:
    """The transcript channel's document, or its contained failure."""
    try:
        if "audio" in decoded.errors:
            raise decoded.errors["audio"]
        doc, _ = await RUNNERS["transcript"].document(worker, decoded)
    except Exception as e:  # the transcript's fault boundary: the embedding still returns
        payload, refresh = failure(e, "embed_video transcript", scrub=(workdir,))
        log.info("embed_video transcript failed: %s", redact(payload["message"]))
        out["transcript_error"] = payload
        if refresh:
            out["refresh_worker"] = True
        return
    out["transcript"] = doc
