"""Every sample event in infra/events/{on_upload,on_job_done,sweeper,reprocess} through `se invoke`'s
code: the function built from template.yaml's environment, in-process, against a running local stack."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.dev import stack_cli
from shared.dev.runpod_standin import RunPodStandIn
from shared.dev.stack import LocalStack
from shared.settings import REPO_ROOT
from tests.integration.lambda_text.dev_model import dev_minilm_model_dir

pytestmark = pytest.mark.integration
EVENTS = REPO_ROOT / "infra" / "events"
CASES = [
    (fn, name, exp)
    for fn in ("on_upload", "on_job_done", "sweeper", "reprocess")
    for name, exp in json.loads((EVENTS / fn / "expected.json").read_text()).items()
]


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with (
        RunPodStandIn() as standin,
        LocalStack(dev_minilm_model_dir(), runpod_url=standin.base, pump=False) as st,
    ):
        path = st.write_endpoints(tmp_path_factory.mktemp("stack") / "endpoints.json")
        yield path


def test_every_sample_event_has_an_expectation() -> None:
    for fn in ("on_upload", "on_job_done", "sweeper", "reprocess"):
        files = {p.name for p in (EVENTS / fn).glob("*.json")} - {"expected.json"}
        assert files == set(json.loads((EVENTS / fn / "expected.json").read_text())), fn


@pytest.mark.parametrize(("function", "name", "expected"), CASES, ids=[f"{c[0]}/{c[1]}" for c in CASES])
def test_sample_event(endpoints: Path, function: str, name: str, expected: dict) -> None:
    out = stack_cli.invoke(function, EVENTS / function / name, endpoints)
    if function == "on_upload":
        failures = [f["itemIdentifier"] for f in out["batchItemFailures"]]
        assert len(failures) == expected["batchItemFailures"], out
        assert failures == expected.get("failed", failures)
    elif function == "on_job_done":
        assert out["statusCode"] == expected["statusCode"]
        assert json.loads(out["body"])["error"]["code"] == expected["code"]
    elif function == "reprocess" and "batchItemFailures" in expected:
        failures = [f["itemIdentifier"] for f in out["batchItemFailures"]]
        assert len(failures) == expected["batchItemFailures"] and failures == expected["failed"], out
    elif function == "reprocess":
        assert out["statusCode"] == expected["statusCode"], out
        body = json.loads(out["body"])
        if "status" in expected:
            assert body["status"] == expected["status"]
        if "code" in expected:
            assert body["error"]["code"] == expected["code"] and body["error"]["field"] == expected["field"]
    else:
        assert out == expected
