"""A reprocess run over 20 items on the local stack (template.yaml on moto, the functions in-process,
the SQS pumps and the sweeper running) with the fast RunPod-API stand-in: after a spec change, every
item ends under the new version and the owner's readers switch exactly once."""

from __future__ import annotations

import dataclasses
import time
from types import MappingProxyType

from shared import spec
from shared.aws.admin_api import AdminApi
from shared.dev.runpod_standin import RunPodStandIn
from shared.dev.stack import LocalStack
from shared.pipeline import keys
from tests.integration.lambda_text.dev_model import dev_minilm_model_dir

N = 20  # one page of the run either way; bench_reprocess.py measures runs of thousands


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def test_reprocess_run_switches_the_owner_once(tmp_path, monkeypatch) -> None:
    with (
        RunPodStandIn() as standin,
        LocalStack(
            dev_minilm_model_dir(),
            runpod_url=standin.base,
            sweep_every_s=1.0,
            pump_workers=2,
            # the stand-in sends every webhook: no /status polling; one manifest rebuild per burst
            overrides={"POLL_AFTER_S": "60", "MANIFEST_DELAY_S": "10"},
        ) as st,
    ):
        ep = st.write_endpoints(tmp_path / "endpoints.json")
        s3, bucket = st.client("s3"), st.resources.physical["MediaBucket"]
        ledger = st.pipelines["sweeper"].ledger
        for i in range(N):
            s3.put_object(Bucket=bucket, Key=f"uploads/big/it{i:03d}/p.jpg", Body=b"\xff\xd8" + bytes(62))

        def statuses() -> list[str]:
            return [r.get("status") for r in ledger.owner_rows("big") if r["sk"] == "ITEM"]

        t0 = time.monotonic()
        wait(lambda: statuses().count("COMPLETE") == N, 240, "ingest did not complete")
        print(f"ingest {time.monotonic() - t0:.1f} s")
        old = spec.SPEC_VERSION
        wait(lambda: (ledger.owner_state("big") or {}).get("current_version") == old, 60, "no first version")
        # the new spec is deployed once the ingest is quiet: an upload event handled after it would
        # (rightly) dispatch its item under the new spec, outside the run
        wait(lambda: st.queued() == 0, 60, "messages still queued")
        jobs_before = len(standin.jobs)

        ch = spec.CHANNELS["image_clip"]
        changed = dataclasses.replace(ch, preprocessing=MappingProxyType({**ch.preprocessing, "tta": "none"}))
        chans = MappingProxyType({**spec.CHANNELS, "image_clip": changed})
        monkeypatch.setattr(spec, "CHANNELS", chans)
        monkeypatch.setattr(spec, "SPEC_VERSION", spec.spec_version(chans))
        new = spec.SPEC_VERSION

        api = AdminApi.resolve(endpoints=ep)
        dry = api.call("POST", "/reprocess", {"scope": "all", "dry_run": True})
        assert dry["item_count"] == N and dry["channels"] == {"image_clip": N}
        run = api.call("POST", "/reprocess", {"scope": "all"})
        assert run["status"] == "queued" and run["spec_version"] == new

        def finished() -> bool:
            return api.call("GET", f"/runs/{run['run_id']}")["status"] == "finished"

        t0 = time.monotonic()
        wait(finished, 300, "the run did not finish")
        print(f"run {time.monotonic() - t0:.1f} s")
        final = api.call("GET", f"/runs/{run['run_id']}")
        assert (final["planned"], final["done"], final["failed"]) == (N, N, 0)
        assert len(standin.jobs) - jobs_before == N  # one GPU job per item, no duplicates
        wait(lambda: (ledger.owner_state("big") or {}).get("current_version") == new, 60, "no switch")
        state = ledger.owner_state("big")
        assert state["switches"] == 2 and state["previous_version"] == old  # first version, then once
        for r in ledger.owner_rows("big"):
            if r.get("channel"):
                assert r["spec_version"] == new and r["fingerprint"] == changed.fingerprint
        new_keys = s3.list_objects_v2(Bucket=bucket, Prefix=f"embeddings/{new}/image_clip/big/", MaxKeys=1000)
        assert new_keys["KeyCount"] == N
        assert s3.head_object(Bucket=bucket, Key=keys.manifest_key(old, "big"))  # the old one stays
