"""Deep health: the one canary mechanism, an inference on every loaded model before the worker
accepts a job (the backends have no canary of their own).

A process whose models load but compute garbage must not serve (infinity issue #609: /health stayed
green while every embedding was broken). Each model runs a fixed synthetic input (a rendered frame, a
clip of frames, tones, two texts, a second of silence; for Qwen3-VL two clips, one captioned, and two
queries); the worker refuses to start (ModelUnhealthy) when any
output is NaN/inf, has the wrong shape or dims, is not unit length, or when two different inputs
collapse onto the same vector. Whisper must return a well-formed transcript of the tone's length.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from shared.errors import ModelUnhealthy
from shared.models import registry
from shared.models.backend import check_unit_rows

log = logging.getLogger(__name__)

SAME_VECTOR_COSINE = 0.99999
SAMPLE_RATE = 16000


def _frame(seed: int, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A deterministic RGB frame: a gradient with a bright square whose place depends on `seed`."""
    h, w = size
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    img[..., 1] = np.linspace(255, 0, h, dtype=np.uint8)[:, None]
    img[..., 2] = (seed * 37) % 256
    y, x = (seed * 13) % (h - 24), (seed * 29) % (w - 24)
    img[y : y + 24, x : x + 24] = 255
    return img


def _tone(freq: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def check_embeddings(name: str, what: str, array: Any, rows: int, dims: int) -> np.ndarray:
    """Raise ModelUnhealthy unless `array` is finite float [rows, dims] with unit rows, all distinct."""
    arr = np.asarray(array)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.shape != (rows, dims):
        raise ModelUnhealthy(
            f"model {name}: {what} returned shape {tuple(arr.shape)}, expected ({rows}, {dims})"
        )
    check_unit_rows(arr, f"model {name}: {what}")
    if rows > 1:
        cos = arr @ arr.T
        np.fill_diagonal(cos, -1.0)
        if cos.max() > SAME_VECTOR_COSINE:
            raise ModelUnhealthy(f"model {name}: {what} maps different inputs to the same vector")
    return arr


def _expected_dims(backend: Any) -> int:
    dims = registry.get(backend.name).dims
    if backend.dims != dims:
        raise ModelUnhealthy(f"model {backend.name}: reports {backend.dims} dims, the registry says {dims}")
    return dims


def canary_clip(clip: Any) -> None:
    from PIL import Image

    dims = _expected_dims(clip)
    texts = ["a photo of a cat sleeping on a sofa", "a wiring diagram of an electric circuit"]
    check_embeddings(clip.name, "text canary", clip.embed_texts(texts), 2, dims)
    images = [Image.fromarray(_frame(1)), Image.fromarray(_frame(2, (80, 80)))]
    check_embeddings(clip.name, "image canary", clip.embed_images(images), 2, dims)
    frames = np.stack([_frame(3), _frame(4)])
    check_embeddings(clip.name, "frame canary", clip.embed_frames(frames), 2, dims)


def canary_videomae(model: Any) -> None:
    dims = _expected_dims(model)
    n = int(getattr(model, "num_frames", 16))
    moving = np.stack([_frame(i) for i in range(n)])
    still = np.stack([_frame(50)] * n)
    out = np.stack([np.asarray(model.embed(moving)).reshape(-1), np.asarray(model.embed(still)).reshape(-1)])
    check_embeddings(model.name, "clip canary", out, 2, dims)


def canary_wav2vec2(model: Any) -> None:
    dims = _expected_dims(model)
    rng = np.random.default_rng(0)
    noisy = (_tone(880.0) + 0.05 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32)
    out = np.stack(
        [np.asarray(model.embed(_tone(440.0))).reshape(-1), np.asarray(model.embed(noisy)).reshape(-1)]
    )
    check_embeddings(model.name, "audio canary", out, 2, dims)


def canary_whisper(model: Any) -> None:
    # Silence, VAD off: encoder and decoder both run (a pure tone makes Whisper walk its whole
    # temperature fallback ladder, ~6 s on CPU, for the same check). The transformers backend has no
    # fallback ladder but may decode to its window's limit: 8 tokens prove the decoder runs.
    extra = {"max_new_tokens": 8} if getattr(model, "kind", "") == "transformers" else {}
    result = model.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32), vad=False, beam_size=1, **extra)
    if not isinstance(result, dict) or not isinstance(result.get("text"), str):
        raise ModelUnhealthy(f"model {model.name}: transcript canary returned no text field")
    if not isinstance(result.get("segments"), list) or not isinstance(result.get("language"), str):
        raise ModelUnhealthy(f"model {model.name}: transcript canary is malformed")
    duration = result.get("duration")
    if not isinstance(duration, int | float) or not math.isfinite(duration) or abs(duration - 1.0) > 0.1:
        raise ModelUnhealthy(
            f"model {model.name}: transcript canary reports duration {duration!r}, expected 1.0"
        )
    for seg in result["segments"]:
        if not (math.isfinite(seg["start"]) and math.isfinite(seg["end"]) and seg["end"] >= seg["start"]):
            raise ModelUnhealthy(f"model {model.name}: transcript canary has a malformed segment")


def canary_qwen3vl(model: Any) -> None:
    """Two different clips, one of them with a caption, and two query texts: right width, unit, distinct
    (the deterministic stand-in passes the same checks)."""
    from shared.models.qwen3vl import VideoInput

    dims = model.dims
    if model.kind != "deterministic":
        dims = _expected_dims(model)
    moving = np.stack([_frame(i) for i in range(4)])
    still = np.stack([_frame(50)] * 4)
    times = [0.5, 1.5, 2.5, 3.5]
    clips = [
        VideoInput(moving, times),
        VideoInput(still, times),
        VideoInput(moving, times, "a bright square"),
    ]
    check_embeddings(model.name, "video canary", model.embed_videos(clips), 3, dims)
    texts = ["a photo of a cat sleeping on a sofa", "a wiring diagram of an electric circuit"]
    check_embeddings(model.name, "text canary", model.embed_texts(texts), 2, dims)


CANARIES = {
    "clip": canary_clip,
    "videomae": canary_videomae,
    "wav2vec2": canary_wav2vec2,
    "whisper": canary_whisper,
    "qwen3vl": canary_qwen3vl,
}


def run_canaries(models: Any) -> dict[str, float]:
    """Run the canary of every loaded model (a `shared.worker.models.Models`); role -> seconds.

    Raises ModelUnhealthy naming the model and what was wrong.
    """
    timings: dict[str, float] = {}
    for role, backend in models.loaded().items():
        started = time.perf_counter()
        CANARIES[role](backend)
        timings[role] = round(time.perf_counter() - started, 3)
        log.info("canary ok: %s (%s) in %.2fs", backend.name, backend.model_label, timings[role])
    if not timings:
        raise ModelUnhealthy("no model is loaded; check WORKER_TASKS and WORKER_CHANNELS")
    return timings
