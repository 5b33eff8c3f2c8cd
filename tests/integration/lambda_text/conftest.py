"""Fixtures for the real-model text-handler tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.lambda_text.dev_model import dev_minilm_model_dir


@pytest.fixture(scope="session")
def minilm_model_dir() -> Path:
    """MODEL_DIR with the real minilm-l6-v2 ONNX export (built once per run)."""
    return dev_minilm_model_dir()
