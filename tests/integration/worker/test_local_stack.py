"""shared.dev.localstack: the worker subprocess holds no credentials, fails loudly, and moto's
presigned URLs work with plain HTTP clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.dev.localstack import LocalRunpodWorker, MotoServer, WorkerFailed

pytestmark = pytest.mark.integration


def test_the_local_worker_inherits_no_credentials(monkeypatch, tmp_path: Path):
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RUNPOD_API_KEY", "RUNPOD_WEBHOOK_GET_JOB"):
        monkeypatch.setenv(name, "must-not-leak")
    worker = LocalRunpodWorker(tmp_path, env={"MAX_BATCH": "8"})
    assert "must-not-leak" not in worker.env.values()
    assert worker.env["ALLOW_PRIVATE_URLS"] == "1" and worker.env["MAX_BATCH"] == "8"
    assert worker.env["MODEL_DIR"] == str(tmp_path)


def test_a_worker_that_cannot_start_raises_with_its_log(tmp_path: Path):
    worker = LocalRunpodWorker(tmp_path / "no-models", log_path=tmp_path / "w.log", startup_s=120)
    with pytest.raises(WorkerFailed, match="exited with 1 at start") as err:
        worker.start()
    assert "se bake" in str(err.value) or "setup-models" in str(err.value)


def test_moto_presigned_put_round_trip(tmp_path: Path):
    import requests

    with MotoServer() as moto:
        s3 = moto.client("s3")
        s3.create_bucket(Bucket="round-trip")
        params = {"Bucket": "round-trip", "Key": "k.bin"}
        url = s3.generate_presigned_url("put_object", Params=params, ExpiresIn=60)
        assert url.startswith(moto.endpoint)
        assert requests.put(url, data=b"\x00\x01", timeout=10).status_code == 200
        assert s3.get_object(Bucket="round-trip", Key="k.bin")["Body"].read() == b"\x00\x01"
