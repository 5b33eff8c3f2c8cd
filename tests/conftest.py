"""Session-wide fixtures shared by every test layer, and the layers themselves.

A test's layer is its folder: tests/unit -> `unit`, tests/integration -> `integration`, tests/e2e ->
`e2e` (pyproject.toml says what each may use). `pytest_collection_modifyitems` gives every test the
marker of its folder, so `-m unit` and friends select by folder, and fails the collection, naming
each test, when a test sits outside the three folders or carries the marker of another layer: a
test that needs another layer's means moves to that layer's folder. An explicit `pytestmark` equal
to the folder's layer is redundant, and harmless.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from shared.settings import DEFAULT_MODEL_DIR

pytest_plugins = ["pytester"]  # tests/unit/test_layers.py runs pytest on a small tree of its own

LAYERS = ("unit", "integration", "e2e")


def layer_of(path: Path, root: Path) -> str | None:
    """The layer of a test file under `root` (its first folder), or None when it sits in none."""
    path = Path(path).resolve()
    if not path.is_relative_to(root):
        return None
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 and parts[0] in LAYERS else None


def assign_layers(items: Iterable[pytest.Item], root: Path) -> None:
    """Mark each item under `root` with its folder's layer; a UsageError naming every test whose
    folder has no layer or whose markers name another layer. Items outside `root` are left alone."""
    root, wrong = root.resolve(), []
    for item in items:
        if not Path(item.path).resolve().is_relative_to(root):
            continue
        layer = layer_of(item.path, root)
        if layer is None:
            wrong.append(f"{item.nodeid}: not in a layer folder (tests/{{{','.join(LAYERS)}}}/)")
            continue
        others = sorted({m.name for m in item.iter_markers() if m.name in LAYERS} - {layer})
        if others:
            wrong.append(
                f"{item.nodeid}: marked {', '.join(others)} but its folder makes it {layer} "
                f"(move it to tests/{others[0]}/ or drop the marker)"
            )
            continue
        item.add_marker(layer)
    if wrong:
        raise pytest.UsageError("a test's layer is its folder (tests/conftest.py):\n  " + "\n  ".join(wrong))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    assign_layers(items, config.rootpath / "tests")


@pytest.fixture(scope="session")
def dev_model_dir() -> Path:
    """The dev MODEL_DIR (<repo>/.models), filled once per run by the same code as `se setup-models`.

    The README's test command already fills it; this makes a bare `pytest` work too (idempotent).
    """
    from shared.dev.models import setup_dev_models

    setup_dev_models(DEFAULT_MODEL_DIR)
    return DEFAULT_MODEL_DIR
