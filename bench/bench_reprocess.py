"""Reprocess: planning throughput from the ledger, and the dry run's GPU estimate against a real run.

    .venv/bin/python -m bench.bench_reprocess                  # both parts
    .venv/bin/python -m bench.bench_reprocess --only planning --items 5000
    .venv/bin/python -m bench.bench_reprocess --only estimate --copies 3 --runs 5

planning: N items as the pipeline leaves them (an item row and its channel rows: images, videos with
six channels, in the ratio `--video-share`) are written straight into the local stack's ledger
(setup, not measured), then a dry run of scope all plans them through the real code (owners-index,
owner-index pages, the delta rule). Reported in the same run: items planned per second end to end
(target >= 2,000/s), the ledger reads alone (the same pages, nothing planned), and the planner alone
over rows already in memory, so what bounds the end-to-end number is visible.

estimate: the committed sample media (a clip with speech, a voice memo, a photo), `--copies` items
each, go through the local stack with the real RunPod worker (dev models on CPU, one media job at a
time as on a GPU worker); then `--runs` times: a forced dry run estimates the GPU seconds of
re-running every channel (each channel's seconds as the pass before measured them), and the real
forced run measures them (the sum of the re-run channels' reported seconds: each channel's model
time on the worker, shared.worker.model_time). One row per forced run, then the median and the largest
error. Target: within 20%.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import time
import uuid
from typing import Any

from shared import spec
from shared.aws.ledger import _av
from shared.settings import DEFAULT_MODEL_DIR, REPO_ROOT

VIDEO_CHANNELS = ("video_clip", "video_mae", "audio_wav2vec2", "transcript", "text_transcript")


def _seed(stack: Any, items: int, owners: int, video_share: float) -> int:
    """Rows as the pipeline leaves a completed item, batch-written (25 a request)."""
    db = stack.client("dynamodb")
    table = stack.resources.physical["LedgerTable"]
    reqs: list[dict] = []
    now = "2026-12-01T00:00:00.000Z"
    for i in range(items):
        owner = f"bench{i % owners}"
        item = f"it{i:06d}"
        video = (i % 100) < video_share * 100
        media_hash = uuid.uuid4().hex
        base = {"owner_id": owner, "item_id": item, "created_at": now, "updated_at": now}
        reqs.append(
            {
                **base,
                "pk": f"{owner}#{item}",
                "sk": "ITEM",
                "osk": f"{item}#ITEM",
                "kind": "upload",
                "modality": "video" if video else "image",
                "media_key": f"uploads/{owner}/{item}/{'v.mp4' if video else 'p.jpg'}",
                "media_hash": media_hash,
                "status": "COMPLETE",
                "attempts": 1,
                "gpu_seconds": 1.5,
            }
        )
        from shared.pipeline import plan

        inputs = plan.ItemInputs("video" if video else "image", media_hash, None)
        chans = plan.applicable(inputs, spec.CHANNELS)
        hashes = plan.input_hashes(inputs, chans)
        for ch in chans:
            reqs.append(
                {
                    **base,
                    "pk": f"{owner}#{item}",
                    "sk": f"CH#{ch}",
                    "osk": f"{item}#CH#{ch}",
                    "channel": ch,
                    "status": "SUCCEEDED",
                    "input_hash": hashes[ch],
                    "fingerprint": spec.CHANNELS[ch].fingerprint,
                    "spec_version": "2026-01-01-00000000",  # an older version: planned as carry
                    "runs_on": spec.CHANNELS[ch].runs_on,
                    "attempts": 1,
                    "artifact_key": f"embeddings/2026-01-01-00000000/{ch}/{owner}/{item}.npy",
                    "sha256": "0" * 64,
                    "bytes": 2176,
                    "dims": spec.CHANNELS[ch].dims or 0,
                    "gpu_seconds": 0.25,
                }
            )
    for o in range(owners):
        reqs.append(
            {
                "pk": f"bench{o}#~",
                "sk": "MANIFEST",
                "manifest_owner": f"bench{o}",
                "directory": "owners",
                "dirty_gen": 1,
                "written_gen": 1,
            }
        )
    for i in range(0, len(reqs), 25):
        batch = [{"PutRequest": {"Item": {k: _av(v) for k, v in r.items()}}} for r in reqs[i : i + 25]]
        db.batch_write_item(RequestItems={table: batch})
    return len(reqs)


def planning(items: int, owners: int, video_share: float, repeat: int = 5) -> dict[str, Any]:
    from shared.dev.runpod_standin import RunPodStandIn
    from shared.dev.stack import LocalStack
    from shared.pipeline.reprocess import PagePlan, Reprocessor, Request
    from tests.integration.lambda_text.dev_model import dev_minilm_model_dir

    with (
        RunPodStandIn() as standin,
        LocalStack(dev_minilm_model_dir(), runpod_url=standin.base, pump=False) as st,
    ):
        rows = _seed(st, items, owners, video_share)
        pipeline = st.pipelines["sweeper"]
        r = Reprocessor(pipeline, st.client("sqs"))
        req = Request("all")
        streams = pipeline.settings.reprocess_read_streams
        dry = r.dry_run(req)  # warm: the first query of a process builds botocore's parsers

        def timed(request: Any, read_streams: int) -> float:
            r.settings = dataclasses.replace(pipeline.settings, reprocess_read_streams=read_streams)
            t = time.perf_counter()
            r.dry_run(request)
            took = time.perf_counter() - t
            r.settings = pipeline.settings
            return took

        # alternating, so a noisy neighbour slows both alike
        pairs = [(timed(req, streams), timed(req, 1)) for _ in range(repeat)]
        e2e, one_stream = (statistics.median(x) for x in zip(*pairs, strict=True))
        first_owner = r.ledger.next_owner(None)
        owner_items = r.dry_run(Request("owner", first_owner))["items_in_scope"]
        owner_s = statistics.median(timed(Request("owner", first_owner), streams) for _ in range(repeat))
        t = time.perf_counter()
        pages = list(r.pages(req))
        read = time.perf_counter() - t
        groups = [g for page, _ in pages for g in page]
        t = time.perf_counter()
        total = PagePlan()
        for page, _ in pages:
            total.add(r.plan_page(req, page, False))
        plan_s = time.perf_counter() - t
    assert dry["item_count"] == items, dry
    return {
        "items": items,
        "rows": rows,
        "owners": owners,
        "pages": len(pages),
        "end_to_end_s": e2e,
        "one_stream_s": one_stream,
        "streams": streams,
        "repeat": repeat,
        "owner_items": owner_items,
        "owner_s": owner_s,
        "read_s": read,
        "plan_s": plan_s,
        "planned": len(groups),
        "channels": dry["channel_count"],
    }


def estimate(copies: int, model_dir: str, runs: int) -> dict[str, Any]:
    from shared.aws.admin_api import AdminApi
    from shared.dev.stack import LocalStack

    samples = REPO_ROOT / "infra" / "samples"
    files = [("clip.mp4", "video"), ("memo.m4a", "audio"), ("photo.png", "image")]
    # one media job at a time, as a GPU worker runs them: on two shared cores, concurrent jobs would
    # measure each other's contention rather than their own seconds
    with LocalStack(model_dir, worker_env={"MEDIA_CONCURRENCY": "1"}) as st:
        ep = st.write_endpoints(REPO_ROOT / ".cache" / "bench" / "endpoints.json")
        s3, bucket = st.client("s3"), st.resources.physical["MediaBucket"]
        ledger = st.pipelines["sweeper"].ledger
        # one warm-up item per file first: the worker's first pass of each model is not typical
        for name, _ in files:
            s3.put_object(
                Bucket=bucket,
                Key=f"uploads/warm/w-{name.split('.')[0]}/{name}",
                Body=(samples / name).read_bytes(),
            )
        _wait(lambda: _done(ledger, "warm", len(files)), 600)
        for c in range(copies):
            for name, _ in files:
                key = f"uploads/est/{name.split('.')[0]}-{c}/{name}"
                s3.put_object(Bucket=bucket, Key=key, Body=(samples / name).read_bytes())
        _wait(lambda: _done(ledger, "est", copies * len(files)), 900)
        api = AdminApi.resolve(endpoints=ep)
        body = {"scope": "owner", "owner_id": "est", "force": True}
        passes = []
        # each forced run is estimated from the seconds the pass before it measured: `runs` samples
        for _ in range(runs):
            dry = api.call("POST", "/reprocess", {**body, "dry_run": True})
            t = time.perf_counter()
            run = api.call("POST", "/reprocess", body)
            _wait(lambda run=run: api.call("GET", f"/runs/{run['run_id']}")["status"] == "finished", 1200)
            wall = time.perf_counter() - t
            per_channel: dict[str, float] = {}
            for r in ledger.owner_rows("est"):
                ch = r.get("channel")
                if ch and spec.CHANNELS[ch].runs_on == spec.RUNPOD and r.get("run_id") == run["run_id"]:
                    per_channel[ch] = per_channel.get(ch, 0.0) + float(r.get("gpu_seconds") or 0)
            measured = sum(per_channel.values())
            est_s = dry["gpu_seconds"]
            passes.append(
                {
                    "estimate_s": est_s,
                    "measured_s": measured,
                    "error_pct": (est_s - measured) / measured * 100 if measured else float("nan"),
                    "cost_usd": dry["cost_usd"],
                    "per_channel": per_channel,
                    "estimate_by_channel": dry.get("gpu_seconds_by_channel", {}),
                    "wall_s": wall,
                }
            )
    return {"items": copies * len(files), "runs": passes}


def _done(ledger: Any, owner: str, n: int) -> bool:
    rows = [r for r in ledger.owner_rows(owner) if r["sk"] == "ITEM"]
    return len(rows) == n and all(r.get("status") in ("COMPLETE", "PARTIAL", "QUARANTINED") for r in rows)


def _wait(pred: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["planning", "estimate"])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--owners", type=int, default=4)
    ap.add_argument("--video-share", type=float, default=0.3)
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5, help="forced re-runs, each estimated by a dry run first")
    ap.add_argument("--repeat", type=int, default=5, help="dry runs timed per planning row (median)")
    ap.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out: dict[str, Any] = {}
    if args.only in (None, "planning"):
        p = planning(args.items, args.owners, args.video_share, args.repeat)
        out["planning"] = p
        n, rows = p["items"], p["rows"]
        print(f"\nplanning: {n} items ({rows} ledger rows, {p['owners']} owners, {p['pages']} pages)")
        k, streams = p["repeat"], p["streams"]
        table = [
            (
                f"dry run, scope all, {streams} read streams",
                n,
                p["end_to_end_s"],
                f"target >= 2,000/s; median of {k}",
            ),
            ("dry run, scope all, 1 read stream", n, p["one_stream_s"], f"the reference; median of {k}"),
            (
                f"dry run, scope owner, {streams} read streams",
                p["owner_items"],
                p["owner_s"],
                "the bench's ids all start with 'i': one slice",
            ),
            (
                "ledger pages read alone, in order",
                n,
                p["read_s"],
                f"moto: {p['read_s'] / rows * 1000:.2f} ms a row",
            ),
            ("planner alone (rows in memory)", n, p["plan_s"], "the delta rule + estimate"),
        ]
        print("| stage | seconds | items/s | note |")
        print("|---|---:|---:|---|")
        for name, count, secs, note in table:
            print(f"| {name} | {secs:.3f} | {count / secs:,.0f} | {note} |")
    if args.only in (None, "estimate"):
        e = estimate(args.copies, args.model_dir, args.runs)
        out["estimate"] = e
        print(f"\nestimate: {e['items']} items (video, audio, image), forced re-runs of every GPU channel")
        print("| forced run | dry-run estimate GPU s | measured GPU s | error | est. cost | run wall s |")
        print("|---|---:|---:|---:|---:|---:|")
        for i, r in enumerate(e["runs"], 1):
            cells = [str(i), f"{r['estimate_s']:.2f}", f"{r['measured_s']:.2f}", f"{r['error_pct']:+.1f}%"]
            cells += [f"${r['cost_usd']:.4f}", f"{r['wall_s']:.1f}"]
            print("| " + " | ".join(cells) + " |")
        errors = [r["error_pct"] for r in e["runs"]]
        within = sum(abs(x) <= 20 for x in errors)
        print(
            f"median error {statistics.median(errors):+.1f}%, largest {max(errors, key=abs):+.1f}%, "
            f"{within} of {len(errors)} within the 20% target"
        )
        print("| channel (all runs) | estimate GPU s | measured GPU s |")
        print("|---|---:|---:|")
        est: dict[str, float] = {}
        got: dict[str, float] = {}
        for r in e["runs"]:
            for ch, v in r["estimate_by_channel"].items():
                est[ch] = est.get(ch, 0.0) + v
            for ch, v in r["per_channel"].items():
                got[ch] = got.get(ch, 0.0) + v
        for ch in sorted(set(est) | set(got)):
            print(f"| {ch} | {est.get(ch, 0):.2f} | {got.get(ch, 0):.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
