"""The RunPod worker's job logic: one `Worker` per process, models loaded once at start.

`await worker.handle(job)` takes a RunPod job (`{"id", "input"}`, input shapes in
shared.worker.requests) and returns the output dict. Bad input and other expected failures
(EmbeddingError: undecodable media, refused URL, oversized body, HTTP errors) come back as
`{"error": {"code", "message", "retryable", "field"?}}` with a safe message; anything else is an
internal fault and raises (the SDK reports it and the orchestrator retries the job).

embed_item: the source is downloaded once into a temporary folder that is always removed, decoded
once (video: probe + 16 frames sampled by timestamp, shared by video_clip and video_mae, frames
downscaled to at most FRAME_MAX_SIDE px since both models resize to 224-336 px anyway; audio: decoded
once at 16 kHz mono, the first 90 s feed audio_wav2vec2, up to TRANSCRIPT_MAX_SECONDS feed transcript),
then every requested channel runs on its own (concurrently, one executor thread per model): a channel
that fails reports `{"status": "failed", "error": {...}}` while the others succeed. A source that
cannot be opened as media at all fails the whole job.

Artifacts (each PUT to its presigned URL; sha256/bytes in the result are of exactly those bytes):
- video_mae, audio_wav2vec2, image_clip: `.npy`, float32 [dims], L2-normalised.
- video_clip: `.npy`, float32 [1 + n, dims], every row L2-normalised: row 0 is the video vector
  (mean of the frame rows, renormalised), rows 1..n are the n distinct sampled frames in time order
  (frames repeated only to pad a short clip are left out). The frames' timestamps (seconds, pts) are
  in the result as `timestamps`; `pooled_row` is 0.
- transcript: JSON `{"text", "segments": [{"start", "end", "text"}], "language", "duration"}`.

Result: `{"item", "spec_version", "source": {"bytes", "sha256", "duration", ...}, "channels":
{name: {"status": "succeeded", "shape", "dims", "sha256", "bytes", "model", "random", "fingerprint",
"seconds", ...} | {"status": "failed", "error": {...}}}, "seconds"}`.

clip_text / clip_image go through the micro-batcher (shared.worker.batching) and return
`{"model", "dims", "vectors", "random", "batch": {"pass", "size"}}`. transcribe returns seed 000's
`{"text", "segments", "language", "duration"}` plus `model`.

The worker holds no cloud credentials: it only follows presigned URLs. URLs never appear in logs or
messages (query strings are stripped from anything that could carry one).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from shared import spec
from shared.errors import EmbeddingError, InvalidInput, MediaError, ModelUnhealthy
from shared.models import registry
from shared.models.backend import l2_normalize
from shared.worker.batching import Arrivals, BatchInfo, MicroBatcher
from shared.worker.requests import (
    ClipImageRequest,
    ClipTextRequest,
    EmbedItemRequest,
    JobRequest,
    Limits,
    TranscribeRequest,
    parse_job,
)
from shared.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
NUM_FRAMES = int(spec.CHANNELS["video_mae"].preprocessing["frames"])
WAV2VEC2_SECONDS = float(spec.CHANNELS["audio_wav2vec2"].preprocessing["max_seconds"])
TRANSCRIPT_DEFAULTS = spec.CHANNELS["transcript"].preprocessing
FRAME_MAX_SIDE = 512
NORM_TOLERANCE = 1e-3
VIDEO_CHANNELS = ("video_clip", "video_mae")
AUDIO_CHANNELS = ("audio_wav2vec2", "transcript")
_URL_QUERY = re.compile(r"(?i)\b(https?://[^\s?#'\"<>]*)[?#][^\s'\"<>]*")


class SpecMismatch(InvalidInput):
    """The dispatcher expects a channel fingerprint this worker's spec does not have (stale image)."""

    status = 409
    code = "spec_mismatch"


class ChannelDisabled(InvalidInput):
    status = 409
    code = "channel_disabled"


@dataclass
class Models:
    """The loaded backends (None when not enabled). Built by `load_models`, or fakes in unit tests."""

    clip: Any = None
    whisper: Any = None
    videomae: Any = None
    wav2vec2: Any = None

    def loaded(self) -> dict[str, Any]:
        """role -> backend, for every loaded model."""
        return {k: v for k, v in vars(self).items() if v is not None}


_ROLE_BY_KIND = {
    "open_clip": "clip",
    "faster-whisper": "whisper",
    "videomae": "videomae",
    "wav2vec2": "wav2vec2",
}


def load_models(settings: WorkerSettings) -> Models:
    """Load every model the settings enable, from settings.model_dir only (ModelNotFound if missing)."""
    models = Models()
    for name in settings.required_models():
        kind = registry.get(name).kind
        role = _ROLE_BY_KIND[kind]
        started = time.perf_counter()
        if kind == "open_clip":
            from shared.models.clip import ClipBackend

            backend = ClipBackend.from_model_dir(
                settings.model_dir, name, device=settings.device, precision=settings.precision
            )
        elif kind == "faster-whisper":
            from shared.models.whisper import WhisperBackend

            backend = WhisperBackend.from_model_dir(settings.model_dir, name, device=settings.device)
        elif kind == "videomae":
            from shared.models.videomae import VideoMAEBackend

            backend = VideoMAEBackend.from_model_dir(
                settings.model_dir, name, device=settings.device, precision=settings.precision
            )
        else:
            from shared.models.wav2vec2 import Wav2Vec2Backend

            backend = Wav2Vec2Backend.from_model_dir(
                settings.model_dir, name, device=settings.device, precision=settings.precision
            )
        setattr(models, role, backend)
        log.info("loaded %s (%s) in %.1fs", name, backend.model_label, time.perf_counter() - started)
    return models


def redact(text: str) -> str:
    """Strip query strings and fragments from any URL in `text` (presigned signatures live there)."""
    return _URL_QUERY.sub(r"\1?…", text)


def error_payload(exc: EmbeddingError, *, scrub: tuple[str, ...] = ()) -> dict[str, Any]:
    """The safe `{"code", "message", "retryable", "field"?}` of a domain error."""
    out = exc.to_dict()
    message = redact(out["message"])
    for secret in scrub:
        if secret:
            message = message.replace(secret, "<source>")
    out["message"] = message
    out["retryable"] = bool(exc.retryable)
    return out


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def check_unit_rows(array: np.ndarray, what: str) -> np.ndarray:
    """Refuse to ship a vector that is NaN/inf or not unit length (raises ModelUnhealthy)."""
    arr = np.asarray(array, dtype=np.float32)
    if arr.size == 0 or not np.isfinite(arr).all():
        raise ModelUnhealthy(f"{what}: the model returned NaN/inf or nothing")
    norms = np.linalg.norm(arr.reshape(-1, arr.shape[-1]), axis=-1)
    if np.abs(norms - 1.0).max() > NORM_TOLERANCE:
        raise ModelUnhealthy(f"{what}: the model returned vectors that are not unit length")
    return arr


@dataclass
class _Decoded:
    """What one embed_item decode produced; an error instead of data when a stream is unusable."""

    duration: float | None = None
    frames: Any = None  # shared.media.VideoFrames
    video_error: EmbeddingError | None = None
    audio: np.ndarray | None = None
    audio_error: EmbeddingError | None = None
    image: Any = None  # PIL.Image
    facts: dict[str, Any] = field(default_factory=dict)


def _may_batch(request: JobRequest) -> bool:
    """Whether a job can submit to a CLIP batcher (clip_text, clip_image, an image's image_clip)."""
    if isinstance(request, ClipTextRequest | ClipImageRequest):
        return True
    return isinstance(request, EmbedItemRequest) and "image_clip" in request.channels


class Worker:
    """Serves RunPod jobs with models loaded once. Thread/loop model: each model runs in its own
    single-thread executor (so one model is never entered twice at once, and the event loop stays free);
    download/decode/upload run in the default thread pool."""

    def __init__(self, settings: WorkerSettings, models: Models) -> None:
        self.settings = settings
        self.models = models
        self.limits = Limits.from_settings(settings)
        self._executors = {
            role: ThreadPoolExecutor(1, thread_name_prefix=f"model-{role}") for role in models.loaded()
        }
        self._image_batchers: dict[bool, MicroBatcher] = {}
        # jobs that may still join a CLIP batch; with BATCH_EARLY_CLOSE a batch runs once none remain
        self.arrivals = Arrivals()
        self._batch_arrivals = self.arrivals if settings.batch_early_close else None
        self.text_batcher: MicroBatcher | None = None
        if models.clip is not None:
            self.text_batcher = MicroBatcher(
                models.clip.embed_texts,
                window_ms=settings.batch_window_ms,
                max_batch=settings.max_batch,
                executor=self._executors["clip"],
                name="clip_text",
                arrivals=self._batch_arrivals,
            )
        self._media_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self.jobs = 0

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> Worker:
        """Load every enabled model (raises ModelNotFound naming the folder and the bake command)."""
        return cls(settings, load_models(settings))

    def image_batcher(self, tta: bool) -> MicroBatcher:
        """The CLIP image batcher for one TTA setting (TTA and plain requests never share a pass)."""
        batcher = self._image_batchers.get(tta)
        if batcher is None:
            fn = partial(
                self.models.clip.embed_images, tta=tta, panorama_max_ratio=self.settings.panorama_max_ratio
            )
            batcher = self._image_batchers[tta] = MicroBatcher(
                fn,
                window_ms=self.settings.batch_window_ms,
                max_batch=self.settings.max_batch,
                executor=self._executors["clip"],
                name=f"clip_image{'_tta' if tta else ''}",
                arrivals=self._batch_arrivals,
            )
        return batcher

    def close(self) -> None:
        for ex in self._executors.values():
            ex.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ entry point

    async def handle(self, job: dict[str, Any]) -> dict[str, Any]:
        """Run one RunPod job; returns the output or `{"error": {...}}` for an expected failure."""
        job_id = str(job.get("id", "-")) if isinstance(job, dict) else "-"
        started = time.perf_counter()
        self.jobs += 1
        with self.arrivals.job():
            return await self._handle(job, job_id, started)

    async def _handle(self, job: Any, job_id: str, started: float) -> dict[str, Any]:
        try:
            request = parse_job(job.get("input") if isinstance(job, dict) else None, self.limits)
            self._check_task(request)
            if not _may_batch(request):
                self.arrivals.release()  # never joins a CLIP batch: do not hold batches open for it
            if isinstance(request, EmbedItemRequest):
                out = await self.embed_item(request)
            elif isinstance(request, TranscribeRequest):
                out = await self.transcribe(request)
            elif isinstance(request, ClipTextRequest):
                out = await self.clip_text(request)
            else:
                out = await self.clip_image(request)
        except EmbeddingError as e:
            payload = error_payload(e)
            log.info("job %s failed in %.2fs: %s", job_id, time.perf_counter() - started, payload["message"])
            return {"error": payload}
        log.info("job %s %s done in %.2fs", job_id, request.task, time.perf_counter() - started)
        return out

    def _check_task(self, request: JobRequest) -> None:
        if request.task not in self.settings.tasks:
            raise InvalidInput(
                f"this worker does not serve {request.task} (WORKER_TASKS={','.join(self.settings.tasks)})",
                field="input.task",
            )

    @contextlib.asynccontextmanager
    async def _media_slot(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        sem = self._media_slots.get(loop)
        if sem is None:
            sem = self._media_slots[loop] = asyncio.Semaphore(self.settings.media_concurrency)
        async with sem:
            yield

    async def _model(self, role: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executors[role], partial(fn, *args, **kw))

    def _download(self, url: str, dest: Path, max_bytes: int) -> Path:
        from shared.media import download

        return download(
            url,
            dest,
            max_bytes=max_bytes,
            timeout_s=self.settings.download_timeout_s,
            allow_private=self.settings.allow_private_urls,
        )

    def _upload(self, url: str, data: bytes, content_type: str) -> None:
        from shared.media import upload

        upload(
            url,
            data,
            content_type=content_type,
            timeout_s=self.settings.download_timeout_s,
            allow_private=self.settings.allow_private_urls,
        )

    # ------------------------------------------------------------------ embed_item

    async def embed_item(self, req: EmbedItemRequest) -> dict[str, Any]:
        """Download once, decode once, run each channel independently, PUT each artifact."""
        from shared.media import temp_workdir

        started = time.perf_counter()
        async with self._media_slot():
            with temp_workdir("embed-item-") as workdir:
                try:
                    path = await asyncio.to_thread(
                        self._download, req.source_url, workdir, self.settings.max_download_bytes
                    )
                    decoded = await asyncio.to_thread(self._decode_item, req, path)
                except EmbeddingError as e:
                    raise _rescrubbed(e, str(workdir), field="input.source_url") from None
        # Channels run concurrently: each model has its own executor, so e.g. Whisper and CLIP overlap.
        results = await asyncio.gather(*(self._channel(n, req, decoded, str(workdir)) for n in req.channels))
        channels: dict[str, Any] = dict(zip(req.channels, results, strict=True))
        ok = [n for n, r in channels.items() if r["status"] == "succeeded"]
        log.info(
            "embed_item %s/%s %s: %d/%d channels succeeded (%s)",
            req.item.owner_id,
            req.item.item_id,
            req.item.modality,
            len(ok),
            len(channels),
            ", ".join(f"{n}={r['status']}" for n, r in channels.items()),
        )
        return {
            "item": req.item.model_dump(),
            "spec_version": spec.SPEC_VERSION,
            "source": decoded.facts,
            "channels": channels,
            "seconds": round(time.perf_counter() - started, 4),
        }

    def _decode_item(self, req: EmbedItemRequest, path: Path) -> _Decoded:
        from shared.media import decode_audio, load_image, probe, sample_frames

        size, digest = _file_facts(path)
        out = _Decoded(facts={"bytes": size, "sha256": digest, "duration": None})
        wanted = set(req.channels)
        if req.item.modality == "image":
            image = load_image(path, max_pixels=self.settings.max_image_pixels)
            out.image = image
            out.facts.update(width=image.width, height=image.height)
            return out
        info = probe(path)  # a file that is not media at all fails the whole job here
        out.duration = info.duration
        out.facts.update(duration=info.duration, has_video=info.has_video, has_audio=info.has_audio)
        if wanted & set(VIDEO_CHANNELS):
            if not info.has_video:
                out.video_error = MediaError("the source has no video stream")
            else:
                try:
                    out.frames = sample_frames(path, NUM_FRAMES, max_side=FRAME_MAX_SIDE)
                except MediaError as e:
                    out.video_error = e
        if wanted & set(AUDIO_CHANNELS):
            if not info.has_audio:
                out.audio_error = MediaError("the source has no audio stream")
            else:
                seconds = WAV2VEC2_SECONDS
                if "transcript" in wanted:
                    seconds = max(seconds, self.settings.transcript_max_seconds)
                try:
                    out.audio = decode_audio(path, sample_rate=SAMPLE_RATE, max_seconds=seconds)
                except MediaError as e:
                    out.audio_error = e
        return out

    async def _channel(
        self, name: str, req: EmbedItemRequest, decoded: _Decoded, workdir: str
    ) -> dict[str, Any]:
        ch = spec.CHANNELS[name]
        try:
            if name not in self.settings.embed_channels:
                served = ",".join(self.settings.channels)
                raise ChannelDisabled(f"this worker does not serve channel {name} (WORKER_CHANNELS={served})")
            expected = (req.fingerprints or {}).get(name)
            if expected is not None and expected != ch.fingerprint:
                raise SpecMismatch(
                    f"the job expects {name} fingerprint {expected[:32]}, this worker has {ch.fingerprint} "
                    f"(spec {spec.SPEC_VERSION}); deploy the matching worker image"
                )
            started = time.perf_counter()
            data, content_type, meta = await self._compute(name, decoded)
            computed = time.perf_counter() - started
            await asyncio.to_thread(self._upload, req.outputs[name], data, content_type)
        except EmbeddingError as e:
            log.info("channel %s failed: %s", name, redact(e.public_message))
            return {"status": "failed", "error": error_payload(e, scrub=(workdir,))}
        return {
            "status": "succeeded",
            **meta,
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "content_type": content_type,
            "fingerprint": ch.fingerprint,
            "seconds": round(computed, 4),
            "upload_seconds": round(time.perf_counter() - started - computed, 4),
        }

    async def _compute(self, name: str, d: _Decoded) -> tuple[bytes, str, dict[str, Any]]:
        if name in VIDEO_CHANNELS and d.video_error is not None:
            raise d.video_error
        if name in AUDIO_CHANNELS and d.audio_error is not None:
            raise d.audio_error
        if name == "video_clip":
            frames = d.frames
            real = max(1, len(frames.frames) - int(frames.padded))
            rows = await self._model("clip", self.models.clip.embed_frames, frames.frames[:real])
            rows = check_unit_rows(rows, "video_clip")
            pooled = l2_normalize(rows.mean(axis=0))
            matrix = check_unit_rows(np.vstack([pooled[None, :], rows]), "video_clip")
            meta = {
                "timestamps": [round(float(t), 4) for t in frames.timestamps[:real]],
                "frames": real,
                "pooled_row": 0,
                "sampling": frames.mode,
            }
            return (
                npy_bytes(matrix),
                "application/octet-stream",
                self._vector_meta(self.models.clip, matrix, meta),
            )
        if name == "video_mae":
            vec = await self._model("videomae", self.models.videomae.embed, d.frames.frames)
            vec = check_unit_rows(np.asarray(vec).reshape(-1), "video_mae")
            meta = {"frames": len(d.frames.frames), "padded": int(d.frames.padded)}
            return (
                npy_bytes(vec),
                "application/octet-stream",
                self._vector_meta(self.models.videomae, vec, meta),
            )
        if name == "audio_wav2vec2":
            clip = d.audio[: int(WAV2VEC2_SECONDS * SAMPLE_RATE)]
            vec = await self._model("wav2vec2", self.models.wav2vec2.embed, clip)
            vec = check_unit_rows(np.asarray(vec).reshape(-1), "audio_wav2vec2")
            meta = {"audio_seconds": round(len(clip) / SAMPLE_RATE, 3)}
            return (
                npy_bytes(vec),
                "application/octet-stream",
                self._vector_meta(self.models.wav2vec2, vec, meta),
            )
        if name == "transcript":
            audio = d.audio[: int(self.settings.transcript_max_seconds * SAMPLE_RATE)]
            result = await self._model(
                "whisper",
                self.models.whisper.transcribe,
                audio,
                vad=bool(TRANSCRIPT_DEFAULTS.get("vad", True)),
                word_timestamps=bool(TRANSCRIPT_DEFAULTS.get("word_timestamps", False)),
                beam_size=int(TRANSCRIPT_DEFAULTS.get("beam_size", 5)),
            )
            doc = _transcript_doc(result)
            data = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
            meta = {
                "model": self.models.whisper.model_label,
                "model_name": self.models.whisper.name,
                "random": bool(self.models.whisper.random),
                "language": doc["language"],
                "duration": doc["duration"],
                "segments": len(doc["segments"]),
                "chars": len(doc["text"]),
                "truncated": (d.duration or 0.0) > self.settings.transcript_max_seconds,
            }
            return data, "application/json", meta
        if name == "image_clip":
            rows, _ = await self.image_batcher(self.settings.tta).submit([d.image])
            vec = check_unit_rows(np.asarray(rows)[0], "image_clip")
            meta = {"tta": self.settings.tta, "panorama_max_ratio": self.settings.panorama_max_ratio}
            return npy_bytes(vec), "application/octet-stream", self._vector_meta(self.models.clip, vec, meta)
        raise ChannelDisabled(f"channel {name} does not run on the RunPod worker")

    @staticmethod
    def _vector_meta(backend: Any, array: np.ndarray, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "shape": list(array.shape),
            "dims": int(array.shape[-1]),
            "dtype": "float32",
            "model": backend.model_label,
            "model_name": backend.name,
            "random": bool(backend.random),
            **extra,
        }

    # ------------------------------------------------------------------ transcribe

    async def transcribe(self, req: TranscribeRequest) -> dict[str, Any]:
        """Seed 000's transcript shape for one audio/video URL."""
        from shared.media import decode_audio, temp_workdir

        whisper = self.models.whisper
        if req.language is not None and whisper.name.endswith(".en") and req.language != "en":
            raise InvalidInput(f"{whisper.name} only transcribes English", field="input.language")
        async with self._media_slot():
            with temp_workdir("transcribe-") as workdir:
                try:
                    path = await asyncio.to_thread(
                        self._download, req.source_url, workdir, self.settings.max_download_bytes
                    )
                    audio = await asyncio.to_thread(
                        decode_audio,
                        path,
                        sample_rate=SAMPLE_RATE,
                        max_seconds=self.settings.transcript_max_seconds,
                    )
                except EmbeddingError as e:
                    raise _rescrubbed(e, str(workdir), field="input.source_url") from None
        result = await self._model(
            "whisper",
            whisper.transcribe,
            audio,
            language=req.language,
            vad=bool(TRANSCRIPT_DEFAULTS.get("vad", True)) if req.vad is None else req.vad,
            word_timestamps=req.word_timestamps,
            beam_size=int(TRANSCRIPT_DEFAULTS.get("beam_size", 5))
            if req.beam_size is None
            else req.beam_size,
        )
        return {**_transcript_doc(result, words=req.word_timestamps), "model": whisper.model_label}

    # ------------------------------------------------------------------ CLIP queries

    async def clip_text(self, req: ClipTextRequest) -> dict[str, Any]:
        """CLIP text vectors through the batcher."""
        rows, info = await self.text_batcher.submit(req.texts)
        return self._vectors(check_unit_rows(rows, "clip_text"), info)

    async def clip_image(self, req: ClipImageRequest) -> dict[str, Any]:
        """CLIP image vectors; every image is fetched/decoded and validated before it is enqueued."""
        from shared.media import load_image, temp_workdir

        images = []
        with temp_workdir("clip-image-") as workdir:
            for i, ref in enumerate(req.images):
                try:
                    if ref.url is not None:
                        src: bytes | Path = await asyncio.to_thread(
                            self._download, ref.url, workdir, self.settings.max_image_bytes
                        )
                    else:
                        src = ref.data(self.settings.max_image_bytes)
                    images.append(
                        await asyncio.to_thread(load_image, src, max_pixels=self.settings.max_image_pixels)
                    )
                except EmbeddingError as e:
                    raise _rescrubbed(e, str(workdir), field=f"input.images[{i}]") from None
        tta = self.settings.tta if req.tta is None else req.tta
        rows, info = await self.image_batcher(tta).submit(images)
        out = self._vectors(check_unit_rows(rows, "clip_image"), info)
        out["tta"] = tta
        return out

    def _vectors(self, rows: np.ndarray, info: BatchInfo) -> dict[str, Any]:
        clip = self.models.clip
        return {
            "model": clip.model_label,
            "model_name": clip.name,
            "dims": int(rows.shape[1]),
            "random": bool(clip.random),
            "vectors": rows.astype(np.float32).tolist(),
            "batch": {"pass": info.pass_id, "size": info.size},
        }


def _file_facts(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _transcript_doc(result: dict[str, Any], *, words: bool = False) -> dict[str, Any]:
    segments = []
    for seg in result.get("segments", []):
        item = {"start": float(seg["start"]), "end": float(seg["end"]), "text": str(seg["text"])}
        if words and "words" in seg:
            item["words"] = seg["words"]
        segments.append(item)
    return {
        "text": str(result.get("text", "")),
        "segments": segments,
        "language": str(result.get("language", "")),
        "duration": float(result.get("duration", 0.0)),
    }


def _rescrubbed(exc: EmbeddingError, workdir: str, *, field: str | None = None) -> EmbeddingError:
    """The same error with temp paths and URL queries removed from its message (and a field if given)."""
    exc.message = redact(exc.message).replace(workdir, "<source>")
    exc.args = (exc.message,)
    if field is not None:
        exc.field = field
    return exc
