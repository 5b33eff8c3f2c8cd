"""Dev models for the GPU-side backends, built once per run into the dev MODEL_DIR (idempotent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.dev.models import setup_dev_models
from shared.settings import DEFAULT_MODEL_DIR
from shared.worker.health import CANARIES

GPU_DEV_MODELS = (
    "whisper-tiny.en",
    "clip-vit-b-32",
    "clip-eva02-l-14-336",
    "videomae-base",
    "wav2vec2-base",
    "qwen3-vl-embedding-2b",
    "distil-whisper-large-v3",
)


@pytest.fixture(scope="session")
def gpu_model_dir() -> Path:
    setup_dev_models(DEFAULT_MODEL_DIR, GPU_DEV_MODELS)
    return DEFAULT_MODEL_DIR


@pytest.fixture(scope="session")
def clip(gpu_model_dir: Path):
    from shared.models.clip import ClipBackend

    backend = ClipBackend.from_model_dir(gpu_model_dir, "clip-vit-b-32")
    CANARIES["clip"](backend)  # the worker's one canary, as at start
    return backend


@pytest.fixture(scope="session")
def whisper(gpu_model_dir: Path):
    from shared.models.whisper import WhisperBackend

    backend = WhisperBackend.from_model_dir(gpu_model_dir, cpu_threads=2)
    CANARIES["whisper"](backend)
    return backend


@pytest.fixture(scope="session")
def videomae(gpu_model_dir: Path):
    from shared.models.videomae import VideoMAEBackend

    backend = VideoMAEBackend.from_model_dir(gpu_model_dir)
    CANARIES["videomae"](backend)
    return backend


@pytest.fixture(scope="session")
def wav2vec2(gpu_model_dir: Path):
    from shared.models.wav2vec2 import Wav2Vec2Backend

    backend = Wav2Vec2Backend.from_model_dir(gpu_model_dir)
    CANARIES["wav2vec2"](backend)
    return backend


@pytest.fixture(scope="session")
def qwen3vl(gpu_model_dir: Path):
    from shared.models.qwen3vl import Qwen3VLBackend

    backend = Qwen3VLBackend.from_model_dir(gpu_model_dir)
    CANARIES["qwen3vl"](backend)
    return backend


@pytest.fixture(scope="session")
def whisper_hf(gpu_model_dir: Path):
    from shared.models.whisper_hf import TransformersWhisperBackend

    # Random weights decode to the window's limit: a few tokens keep every call short.
    backend = TransformersWhisperBackend.from_model_dir(gpu_model_dir, max_new_tokens=6)
    CANARIES["whisper"](backend)
    return backend
