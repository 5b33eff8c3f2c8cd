"""`se smoke` against a stack created from template.yaml in moto (the harness's): the command reads the
stack's outputs with DescribeStacks, uploads a bundled sample and follows it through the real
handlers and the RunPod stand-in to COMPLETE, reporting each step; a stack that is not there fails at
its first step. The search step is skipped: the moto stack has no search function URL."""

from __future__ import annotations

import json

import pytest

from handlers import cli
from shared.dev.localstack import REGION
from shared.smoke import STEPS
from tests.integration.pipeline.harness import Harness


@pytest.fixture
def deployed(h: Harness, monkeypatch: pytest.MonkeyPatch) -> Harness:
    """The harness's stack, with its upload queue pumped in the background, as AWS would."""
    for k, v in {
        "AWS_ENDPOINT_URL": h.moto.endpoint,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    h.pump.start()
    yield h
    h.pump.stop()


def test_smoke_reports_every_step_of_one_upload(deployed: Harness, capsys: pytest.CaptureFixture) -> None:
    argv = ["smoke", "--stack", deployed.stack_name, "--json", "--poll", "0.1", "--timeout", "30"]
    rc = cli.main(argv)
    out = capsys.readouterr().out  # the handlers run in this process: their EMF lines come first
    report = json.loads(out[out.index("{\n") :])
    assert rc == 0 and report["ok"] and report["failed_step"] is None, report
    assert [s["name"] for s in report["steps"]] == list(STEPS)
    assert [s["ok"] for s in report["steps"]] == [True] * 6 + [None]  # no search URL here
    owner, item = report["owner_id"], report["item_id"]
    assert report["key"] == f"uploads/{owner}/{item}/photo.png" and owner == "smoke"
    assert deployed.status(owner, item) == "COMPLETE" and deployed.jobs(owner, item) == 1
    assert "image_clip" in report["steps"][5]["detail"]

    rc = cli.main(["smoke", "--stack", "no-such-stack", "--poll", "0.1", "--timeout", "5"])
    out = capsys.readouterr().out
    assert rc == 1 and "smoke test FAILED at step 'stack'" in out and "no-such-stack" in out
    rc = cli.main(["smoke", "--stack", deployed.stack_name, "--owner", "bad owner"])
    assert rc == 2 and "owner_id" in capsys.readouterr().err
