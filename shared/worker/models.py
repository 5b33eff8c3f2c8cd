"""The worker's loaded models: each enabled model loaded once at start from MODEL_DIR."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from shared.models import registry
from shared.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


@dataclass
class Models:
    """The loaded backends by role (None when not enabled). Built by `load_models`, or fakes in tests."""

    clip: Any = None
    whisper: Any = None
    videomae: Any = None
    wav2vec2: Any = None
    qwen3vl: Any = None  # Qwen3VLBackend, or the DeterministicEmbedder (EMBEDDING_BACKEND=deterministic)

    def loaded(self) -> dict[str, Any]:
        """role -> backend, for every loaded model."""
        return {k: v for k, v in vars(self).items() if v is not None}


def _load(kind: str, settings: WorkerSettings, name: str) -> tuple[str, Any]:
    common = {"device": settings.device}
    if kind == "faster-whisper":
        from shared.models.whisper import WhisperBackend

        return "whisper", WhisperBackend.from_model_dir(settings.model_dir, name, **common)
    common["precision"] = settings.precision
    if kind == "whisper-transformers":
        from shared.models.whisper_hf import TransformersWhisperBackend

        return "whisper", TransformersWhisperBackend.from_model_dir(
            settings.model_dir, name, max_new_tokens=settings.whisper_max_new_tokens, **common
        )
    if kind == "qwen3-vl":
        from shared.models.qwen3vl import Qwen3VLBackend

        return "qwen3vl", Qwen3VLBackend.from_model_dir(settings.model_dir, name, **common)
    if kind == "open_clip":
        from shared.models.clip import ClipBackend

        return "clip", ClipBackend.from_model_dir(settings.model_dir, name, **common)
    if kind == "videomae":
        from shared.models.videomae import VideoMAEBackend

        return "videomae", VideoMAEBackend.from_model_dir(settings.model_dir, name, **common)
    if kind == "wav2vec2":
        from shared.models.wav2vec2 import Wav2Vec2Backend

        return "wav2vec2", Wav2Vec2Backend.from_model_dir(settings.model_dir, name, **common)
    raise ValueError(f"no loader for model kind {kind!r}")


def load_models(settings: WorkerSettings) -> Models:
    """Load every model the settings enable, from settings.model_dir only (ModelNotFound if missing)."""
    models = Models()
    for name in settings.required_models():
        started = time.perf_counter()
        role, backend = _load(registry.get(name).kind, settings, name)
        setattr(models, role, backend)
        log.info("loaded %s (%s) in %.1fs", name, backend.model_label, time.perf_counter() - started)
    if settings.serves_qwen3vl and settings.embedding_backend == "deterministic":
        from shared.models.deterministic import DeterministicEmbedder
        from shared.worker.settings import MRL_DIMS

        models.qwen3vl = DeterministicEmbedder(MRL_DIMS[0], MRL_DIMS)
        log.warning(
            "EMBEDDING_BACKEND=deterministic: embed_video/qwen3vl_text return hash-seeded placeholders"
        )
    return models
