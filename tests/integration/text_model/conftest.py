"""Real all-MiniLM-L6-v2: the ONNX export (built once per run, idempotent) and the torch reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.models.minilm_onnx import MiniLMOnnx
from shared.settings import DEFAULT_MODEL_DIR, TextSettings


@pytest.fixture(scope="session")
def minilm_model_dir() -> Path:
    """The dev MODEL_DIR with minilm-l6-v2 exported by the same code as `se setup-models` (kept when its
    manifest matches the current export recipe and checkpoint)."""
    from shared.models.minilm_export import setup_dev_minilm

    setup_dev_minilm(DEFAULT_MODEL_DIR)
    return DEFAULT_MODEL_DIR


@pytest.fixture(scope="session")
def minilm(minilm_model_dir: Path) -> MiniLMOnnx:
    return MiniLMOnnx.load(TextSettings(model_dir=minilm_model_dir, threads=2, precision="fp32"))


@pytest.fixture(scope="session")
def minilm_int8(minilm_model_dir: Path) -> MiniLMOnnx:
    return MiniLMOnnx.load(TextSettings(model_dir=minilm_model_dir, threads=2, precision="int8"))


@pytest.fixture(scope="session")
def sentence_transformer():
    """sentence-transformers (torch) loaded from the same checkpoint the export read."""
    from sentence_transformers import SentenceTransformer

    from shared.models.minilm_export import dev_checkpoint

    return SentenceTransformer(str(dev_checkpoint()), device="cpu")
