"""Session-wide fixtures shared by every test layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import DEFAULT_MODEL_DIR


@pytest.fixture(scope="session")
def dev_model_dir() -> Path:
    """The dev MODEL_DIR (<repo>/.models), filled once per run by the same code as `se setup-models`.

    The README's test command already fills it; this makes a bare `pytest` work too (idempotent).
    """
    from shared.dev.models import setup_dev_models

    setup_dev_models(DEFAULT_MODEL_DIR)
    return DEFAULT_MODEL_DIR
