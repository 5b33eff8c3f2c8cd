"""The product on the local stack with the real worker under the SDK's local API: the README's main
job (`se demo`), and `se stack up` driven from outside the way a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared import spec
from shared.dev import stack_cli
from shared.dev.stack import ENDPOINTS_FILE
from shared.settings import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_demo_runs_sample_media_through_the_whole_pipeline(dev_model_dir: Path, capsys) -> None:
    environ = dict(os.environ)
    assert stack_cli.demo(dev_model_dir) == 0  # raises StackError on any unexpected status
    assert dict(os.environ) == environ
    out, err = capsys.readouterr()
    rows = [line.split()[:3] for line in out.splitlines()]
    assert ["demo/garden-clip", "(item)", "COMPLETE"] in rows and [
        "demo/not-media",
        "(item)",
        "PARTIAL",
    ] in rows
    assert "not a readable media file" in out and "7/7 channels" in err  # the progress bars, on stderr
    assert ["demo", "bad_key", "uploads/demo/../escape/x.mp4"] in [r[1:4] for r in rows_of(out)]
    assert "transcript of garden-clip: 'Please remember to" in out
    # the demo ends with a search: a paraphrase of that sentence finds the clip, and when it is said
    assert "-> garden-clip, 0.0 s to 3.0 s" in out
    assert "X-Amz-Signature" not in out + err and "token=" not in out + err
    # the in-process functions' JSON lines and EMF metrics never reach the terminal
    assert '"_aws"' not in out + err and '"level":' not in out + err


def rows_of(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


def se(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "handlers.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_stack_up_upload_status_invoke_then_ctrl_c(dev_model_dir: Path) -> None:
    if ENDPOINTS_FILE.exists():
        pytest.fail(f"{ENDPOINTS_FILE} exists: is a stack already running? stop it first")
    proc = subprocess.Popen(
        [sys.executable, "-m", "handlers.cli", "stack", "up"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, signalled as a terminal's Ctrl-C signals one
    )
    try:
        deadline = time.monotonic() + 240
        while not ENDPOINTS_FILE.exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the stack did not come up"
            time.sleep(0.5)
        endpoints = json.loads(ENDPOINTS_FILE.read_text())
        assert endpoints["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        up = se("upload", str(REPO_ROOT / "infra/samples/photo.png"), "--owner", "e2e", "--item", "pic")
        assert up.returncode == 0 and "uploads/e2e/pic/photo.png" in up.stdout, up.stderr
        bad = se("upload", str(REPO_ROOT / "infra/samples/photo.png"), "--owner", "../x", "--item", "pic")
        assert bad.returncode == 1 and "owner_id" in bad.stderr
        for _ in range(120):
            st = se("status", "--owner", "e2e", "--json")
            rows = json.loads(st.stdout)["rows"]
            item = [r for r in rows if r["sk"] == "ITEM"]
            if item and item[0]["status"] == "COMPLETE":
                break
            time.sleep(0.5)
        assert item and item[0]["status"] == "COMPLETE", rows
        chans = {r["channel"]: r for r in rows if r["sk"] != "ITEM"}
        assert chans["image_clip"]["status"] == "SUCCEEDED" and chans["image_clip"]["dims"] == 512
        table = se("status", "--owner", "e2e")
        assert "image_clip" in table.stdout and "SUCCEEDED" in table.stdout
        inv = se(
            "invoke", "on_job_done", "--event", str(REPO_ROOT / "infra/events/on_job_done/forged_token.json")
        )
        assert inv.returncode == 0 and json.loads(inv.stdout)["statusCode"] == 401
        # reprocess through the IAM-authorised admin API, signed with the stack's credentials
        dry = se("reprocess", "--scope", "owner", "--owner", "e2e", "--dry-run")
        words = " ".join(dry.stdout.split())  # the estimate is a table: its columns are padded
        assert dry.returncode == 0 and "would reprocess 0" in words, dry.stdout + dry.stderr
        dry = se("reprocess", "--scope", "owner", "--owner", "e2e", "--force", "--dry-run")
        words = " ".join(dry.stdout.split())
        assert "would reprocess 1" in words and "image_clip 1" in words, dry.stdout
        run = se("reprocess", "--scope", "owner", "--owner", "e2e", "--force")
        assert run.returncode == 0 and "finished: 1 done, 0 failed" in run.stdout, run.stdout + run.stderr
        assert "item/s" in run.stderr + run.stdout or "item" in run.stdout  # the progress bar
        runs = se("runs")
        assert runs.returncode == 0 and "finished" in runs.stdout and "owner:e2e" in runs.stdout
        bad = se("reprocess", "--scope", "owner", "--owner", "nobody")
        assert bad.returncode == 2 and "not_found (owner_id)" in bad.stderr
        table = se("status", "--owner", "e2e")
        assert f"owner e2e: reads spec version {spec.SPEC_VERSION}" in table.stdout
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # moto's and the worker's processes get it too
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    assert "stack stopped" in out and not ENDPOINTS_FILE.exists()
    assert "Traceback" not in out and '"_aws"' not in out and '"level":' not in out, out[-3000:]
