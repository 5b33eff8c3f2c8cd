"""Dev-only code (shared.dev) never reaches an image: excluded from the distribution and from every
Docker build context."""

from __future__ import annotations

import re
import tomllib

import pytest

from shared.settings import REPO_ROOT

pytestmark = pytest.mark.unit


def test_distribution_excludes_shared_dev() -> None:
    from setuptools import find_packages

    cfg = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    found = find_packages(str(REPO_ROOT), include=cfg["include"], exclude=cfg["exclude"])
    assert "shared" in found and "shared.worker" in found
    assert not [p for p in found if p == "shared.dev" or p.startswith("shared.dev.")]


def test_dockerignore_keeps_dev_code_out_of_build_contexts() -> None:
    lines = {ln.strip() for ln in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    assert "shared/dev" in lines and "tests" in lines


def test_nothing_outside_dev_and_tests_imports_shared_dev() -> None:
    offenders = []
    for folder in ("shared", "handlers"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            if "dev" in path.relative_to(REPO_ROOT).parts[1:2]:
                continue
            text = path.read_text()
            for line in text.splitlines():
                stripped = line.strip()
                if stripped.startswith(("from shared.dev", "import shared.dev", "from shared import dev")):
                    offenders.append(f"{path.relative_to(REPO_ROOT)}: {stripped}")
    # the CLI may reach dev tooling lazily inside dev-only commands (setup-models, demo, stack)
    offenders = [o for o in offenders if not o.startswith("handlers/cli.py")]
    assert offenders == []


def test_the_cli_needs_no_extra_for_its_output() -> None:
    """`se` is the distribution's console script, installed with every install: rich (its tables,
    progress bars and log lines) is a dependency of the distribution itself, not of an extra."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["se"] == "handlers.cli:main"
    assert "rich" in {re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0] for d in project["dependencies"]}
