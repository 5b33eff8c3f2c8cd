"""`se embed-text` as a person runs it, with the real MiniLM: a table on stdout, and not one of the
Lambda handler's JSON log lines or EMF metrics (it printed 7 of its 8 lines before)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from shared.settings import REPO_ROOT
from tests.integration.lambda_text.dev_model import dev_minilm_model_dir


def se(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "handlers.cli", "--model-dir", str(dev_minilm_model_dir()), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_embed_text_prints_people_a_table_and_nothing_of_the_lambdas() -> None:
    run = se("embed-text", "hello world")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 3 and lines[1].split()[:3] == ["0", "hello", "world"], run.stdout
    assert "all-MiniLM-L6-v2" in lines[2]
    for text in (run.stdout, run.stderr):
        assert '"_aws"' not in text and '"level":' not in text and "{" not in text, text


def test_embed_text_json() -> None:
    run = se("embed-text", "--json", "hello world", "a cat")
    body = json.loads(run.stdout)
    assert run.returncode == 0 and [v["chunk_id"] for v in body["vectors"]] == ["0", "1"]
    assert body["dims"] == 384 and len(body["vectors"][0]["vector"]) == 384
