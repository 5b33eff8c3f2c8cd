"""What 1,000 one-minute videos cost on Lambda + RunPod, from what one costs here.

    .venv/bin/python -m bench.bench_cost [--videos 3] [--seconds 60]

Runs the local stack with the real worker under the SDK's local API, uploads `--videos` synthetic
one-minute videos (640x360, 25 fps, espeak-ng speech) with a meta.json, and measures per video:
the worker's compute seconds per channel and the whole job's seconds (download, decode, every
channel, uploads), and the Lambda functions' own wall time (on_upload, on_job_done, the sweeper's
share). Then prices 1,000 such videos.

What the worker seconds are: measured on THIS machine's CPU (2 shared cores) with the dev models
(tiny random-weight CLIP / VideoMAE / wav2vec2, real Whisper tiny.en). On a GPU with the real models
the model seconds differ (no GPU was available to measure them); download and decode run on the
worker's CPU either way. The table therefore prices the measured job seconds as if billed on each
GPU; read it as the cost structure, with the caveat stated.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_pipeline import Timers
from shared.dev.stack import LocalStack
from shared.settings import DEFAULT_MODEL_DIR

# List prices used (USD). RunPod serverless flex workers, docs.runpod.io/serverless/pricing, as
# stored on 2026-12-01; AWS Lambda x86 us-east-1 and DynamoDB on-demand list prices as known on
# 2026-12-01 (check the pricing pages before relying on them).
PRICES = {
    "runpod_h100_per_s": 0.00116,
    "runpod_l4_per_s": 0.00019,
    "lambda_gb_s": 0.0000166667,
    "lambda_request": 0.20 / 1e6,
    "dynamodb_write": 0.625 / 1e6,
    "dynamodb_read": 0.125 / 1e6,
    "s3_put": 0.005 / 1000,
    "s3_get": 0.0004 / 1000,
    "sqs_request": 0.40 / 1e6,
}
LAMBDA_GB = 1.0  # template.yaml: MemorySize 1024 for the orchestrators


def make_video(path: Path, seconds: float) -> Path:
    from shared.dev.media import mux_speech_into_mp4

    text = ("please remember to water the plants every morning and close the window at night " * 4).strip()
    mux_speech_into_mp4(path, text, seconds=seconds, size=(640, 360), fps=25)
    return path


def measure(videos: int, seconds: float) -> dict[str, Any]:
    timers = Timers()
    with tempfile.TemporaryDirectory(prefix="se-cost-") as tmp:
        clip = make_video(Path(tmp) / "clip.mp4", seconds)
        meta = json.dumps({"title": "Garden", "description": "a reminder", "query": "plant care"}).encode()
        with LocalStack(DEFAULT_MODEL_DIR, wrap=timers.wrap, overrides={"MANIFEST_DELAY_S": "1"}) as stack:
            s3 = stack.client("s3")
            bucket = stack.resources.physical["MediaBucket"]
            ledger = stack.pipelines["sweeper"].ledger
            for i in range(videos):
                s3.put_object(Bucket=bucket, Key=f"uploads/cost/v{i}/meta.json", Body=meta)
                s3.put_object(Bucket=bucket, Key=f"uploads/cost/v{i}/clip.mp4", Body=clip.read_bytes())
            deadline = time.monotonic() + 60 + 120 * videos
            while time.monotonic() < deadline:
                items = [r for r in ledger.owner_rows("cost") if r["sk"] == "ITEM"]
                if len(items) == videos and all(r.get("status") in ("COMPLETE", "PARTIAL") for r in items):
                    break
                time.sleep(1)
            rows = list(ledger.owner_rows("cost"))
            writes = sum(p.ledger.writes for p in stack.pipelines.values())
            units = sum(p.ledger.write_units for p in stack.pipelines.values())
    per_channel: dict[str, list[float]] = collections.defaultdict(list)
    for r in rows:
        if r["sk"] != "ITEM" and r.get("status") == "SUCCEEDED":
            per_channel[r["channel"]].append(float(r.get("gpu_seconds") or r.get("seconds") or 0.0))
    job_s = [float(r.get("gpu_seconds") or 0.0) for r in rows if r["sk"] == "ITEM"]
    statuses = collections.Counter(r.get("status") for r in rows if r["sk"] == "ITEM")
    return {
        "videos": videos,
        "statuses": dict(statuses),
        "channel_s": {k: statistics.mean(v) for k, v in per_channel.items()},
        "job_s": statistics.mean(job_s) if job_s else float("nan"),
        "lambda_s": {k: v / videos for k, v in timers.seconds.items()},
        "lambda_calls": {k: v / videos for k, v in timers.calls.items()},
        "writes_per_video": writes / videos,
        "write_units_per_video": units / videos,  # a transactional write is billed twice
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    m = measure(args.videos, args.seconds)
    print(f"\n{args.videos} x {args.seconds:.0f} s videos, local stack, real worker on CPU: {m['statuses']}")
    print("\nworker compute seconds per channel (mean per video, this CPU, dev models):")
    for ch, s in sorted(m["channel_s"].items()):
        print(f"  {ch:16s} {s:7.3f}")
    print(f"  whole job (executionTime: download, decode, channels, uploads): {m['job_s']:.2f} s")
    # The sweeper's wall time is left out: under the SDK's local API a job runs inside the /status poll
    # (the sweeper waits for the whole job there); on RunPod the webhook arrives and /status answers at once.
    lam = sum(v for k, v in m["lambda_s"].items() if k != "sweeper")
    print(f"Lambda wall s per video: {json.dumps({k: round(v, 3) for k, v in m['lambda_s'].items()})}")
    print(
        f"DynamoDB writes per video: {m['writes_per_video']:.1f} "
        f"({m['write_units_per_video']:.1f} write units: a transactional write is billed as two)"
    )
    n = 1000
    billed_job_s = math.ceil(m["job_s"])  # RunPod rounds each request up to a whole second
    lambda_gb_s = lam * LAMBDA_GB
    lambda_cost = n * (lambda_gb_s * PRICES["lambda_gb_s"] + 3 * PRICES["lambda_request"])
    aws_requests = n * (
        m["write_units_per_video"] * PRICES["dynamodb_write"]
        + 20 * PRICES["dynamodb_read"]
        + 10 * PRICES["s3_put"]
        + 12 * PRICES["s3_get"]
        + 3 * PRICES["sqs_request"]
    )
    print(f"\n1,000 x {args.seconds:.0f} s videos (job seconds billed rounded up per job: {billed_job_s} s)")
    print("| GPU | RunPod $ | Lambda $ | DynamoDB+S3+SQS requests $ | total $ | $ per video-hour |")
    print("|---|---:|---:|---:|---:|---:|")
    for gpu, key in (("H100 PRO (flex)", "runpod_h100_per_s"), ("L4 (flex)", "runpod_l4_per_s")):
        runpod = n * billed_job_s * PRICES[key]
        total = runpod + lambda_cost + aws_requests
        hours = n * args.seconds / 3600
        print(
            f"| {gpu} | {runpod:.2f} | {lambda_cost:.2f} | {aws_requests:.2f} | {total:.2f} "
            f"| {total / hours:.3f} |"
        )
    print("\nprices:", json.dumps(PRICES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
