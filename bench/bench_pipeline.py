"""Load and faults through the local stack: N items uploaded in one burst, the real handlers on moto,
and a fast RunPod-API stand-in (shared.dev.runpod_standin: same HTTP contract, canned artifacts) that
injects faults.

    .venv/bin/python -m bench.bench_pipeline                 # 1,000 items: a clean run, then a faulty one
    .venv/bin/python -m bench.bench_pipeline --items 200 --only faults

Faults in the faulty run: 10% 503 on /run, 5% lost webhooks, 5% jobs that FAIL retryably, and on_upload
killed mid-batch (it handles half the batch, then dies: SQS delivers the whole batch again) every
`--kill-every` batches; and (issue 20) 5% jobs whose worker dies (no webhook; their /status fails for
longer than their deadline, then 404; the endpoint refuses every call for a second after the death),
5% jobs whose webhook is lost and whose result RunPod has forgotten by the first poll (/status 404),
and 5% jobs with one channel's report garbled (`seconds` a string, object, list or NaN, sha256 missing,
or a permanent failure with a lone surrogate in its message). The faulty run uses short job times
(FAULT_OVERRIDES: a 10 s TTL, so a lost job is found in seconds and an ambiguous /run's claim waits
70 s) so that its whole retry horizon fits in minutes; the clean run keeps OVERRIDES.

Reported per run: items completed / quarantined (with reasons, grouped by code, each checked against
the faults the stand-in injected into that item: `untrue` counts reasons no injected fault explains) /
lost (not final when the run ends, target 0) / stuck (not settled when the run ends: not final, or a
dispatch still open; target 0), time to settle per item (upload to the item's final ledger write, wall
seconds, p50 and p99), lost jobs (dispatches the sweeper found lost and retried), GPU jobs per item
(target 1.00 without faults), DynamoDB write
requests per item-channel (target <= 3), orchestration time per item with model time excluded (the
CPU time of the handlers' own threads, our code and boto3, less the text model's own CPU time; the
stand-in's jobs and moto run in other threads/processes; target <= 50 ms), the handlers' wall time
per item (mostly waiting on moto, which answers in ~10 ms a request here; DynamoDB and S3 answer in
single-digit ms), and wall time.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import re
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from shared.dev.runpod_standin import GARBLES, Faults, RunPodStandIn
from shared.dev.stack import LocalStack
from shared.settings import DEFAULT_MODEL_DIR
from shared.timestamps import iso_epoch

FINAL = ("COMPLETE", "PARTIAL", "QUARANTINED")
OVERRIDES = {
    "POLL_AFTER_S": "3",
    "POLL_INTERVAL_S": "2",
    "BACKOFF_BASE_S": "0.5",
    "BACKOFF_MAX_S": "4",
    "RUNPOD_BACKOFF_S": "0.05",
    "MAX_ATTEMPTS": "5",
    "SWEEP_BATCH": "500",
    "MANIFEST_DELAY_S": "120",  # a rebuild reads every row of the owner: on moto, seconds per 1,000 items
}
# The faulty run in wall time: a job lives 10 s (so a lost one is found ~11 s after its submission) and an
# ambiguous /run's claim is dispatched again after TTL + 60 s (policy.CLAIM_GRACE_S); backoffs as above.
FAULT_OVERRIDES = {
    **OVERRIDES,
    "EXECUTION_TIMEOUT_S": "5",
    "JOB_TTL_S": "10",
    "MAX_POLL_FAILURES": "3",
}
FAULT_JOB_TTL_S = float(FAULT_OVERRIDES["JOB_TTL_S"])
FAULTS = Faults(
    run_5xx=0.10,
    lost_webhook=0.05,
    fail_retryable=0.05,
    worker_down=0.05,
    worker_down_s=FAULT_JOB_TTL_S + 5,  # past the dead jobs' deadline
    outage_s=1.0,
    forgotten=0.05,
    forget_after_s=0.0,  # gone by the first poll (RunPod keeps a result 30 min; POLL_AFTER_S is 16 min)
    garbled=0.05,
    seed=11,
)
# a quarantine reason's code, and the injected faults that make it true
REASON_FAULTS = {
    "submit_unconfirmed": ("run_5xx", "run_500", "outage_run"),
    "runpod_error": ("run_429",),
    "internal_error": ("fail_retryable",),
    "job_lost": ("worker_down", "forgotten"),
    "bad_output": tuple(f"garbled:{g}" for g in GARBLES if g != "surrogate_error"),
    "decode_error": ("garbled:surrogate_error",),
    "dependency_failed": ("garbled:surrogate_error",),  # a channel whose upstream failed for good
}
REASON_CODE = re.compile(r"; last: ([^:]*):")


class Timers:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seconds: dict[str, float] = collections.Counter()
        self.cpu: dict[str, float] = collections.Counter()
        self.model_cpu: dict[str, float] = collections.Counter()
        self.calls: dict[str, int] = collections.Counter()

    def wrap_model(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kw: Any) -> Any:
            cpu = time.thread_time()
            try:
                return fn(*args, **kw)
            finally:
                with self.lock:
                    self.model_cpu[name] += time.thread_time() - cpu

        return timed

    def wrap(self, name: str, fn: Callable[[Any, Any], dict]) -> Callable[[Any, Any], dict]:
        def timed(event: Any, context: Any) -> dict:
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(event, context)
            finally:
                with self.lock:
                    self.seconds[name] += time.perf_counter() - started
                    self.cpu[name] += time.thread_time() - cpu
                    self.calls[name] += 1

        return timed


class Killer:
    """Kills every n-th on_upload invocation after it handled half its batch."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.batches = 0
        self.kills = 0

    def wrap(self, fn: Callable[[Any, Any], dict]) -> Callable[[Any, Any], dict]:
        def maybe_killed(event: Any, context: Any) -> dict:
            self.batches += 1
            records = event["Records"]
            if self.every and self.batches % self.every == 0 and len(records) > 1:
                fn({"Records": records[: len(records) // 2]}, context)
                self.kills += 1
                raise SystemError("on_upload killed mid-batch (injected)")
            return fn(event, context)

        return maybe_killed


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of `values`; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(-(-q * len(ordered) // 100)) - 1))]


def settled(row: dict[str, Any]) -> bool:
    return row.get("status") in FINAL and not row.get("dispatch_state") and not row.get("sweep")


def true_reason(code: str, injected: list[str]) -> bool:
    """Some fault injected into the item explains the code (a garble's channel left aside)."""
    return any(":".join(f.split(":")[:2]) in REASON_FAULTS.get(code, ()) for f in injected)


def run(
    items: int,
    faults: Faults | None,
    kill_every: int,
    timeout_s: float,
    solo: int = 0,
    overrides: dict[str, str] = OVERRIDES,
    memory_ledger: bool = False,
) -> dict[str, Any]:
    timers = Timers()
    killer = Killer(kill_every)
    sweeps: collections.Counter = collections.Counter()

    def count_sweeps(fn: Callable[[Any, Any], dict]) -> Callable[[Any, Any], dict]:
        def counted(event: Any, context: Any) -> dict:
            out = fn(event, context)
            sweeps.update((out or {}).get("counts") or {})
            return out

        return counted

    def wrap(name: str, fn: Callable[[Any, Any], dict]) -> Callable[[Any, Any], dict]:
        fn = timers.wrap(name, fn)
        if name == "sweeper":
            return count_sweeps(fn)
        return killer.wrap(fn) if name == "on_upload" else fn

    with (
        RunPodStandIn(faults, workers=16) as standin,
        LocalStack(
            DEFAULT_MODEL_DIR,
            runpod_url=standin.base,
            overrides=overrides,
            wrap=wrap,
            sweep_every_s=1.0,
            memory_ledger=memory_ledger,
        ) as stack,
    ):
        s3 = stack.client("s3")
        bucket = stack.resources.physical["MediaBucket"]
        ledger = stack.pipelines["sweeper"].ledger
        for name, pipeline in stack.pipelines.items():  # model time (MiniLM) is not orchestration time
            pipeline.text_model.embed = timers.wrap_model(name, pipeline.text_model.embed)
        started = time.perf_counter()
        uploaded_at: dict[str, float] = {}
        for i in range(items):
            s3.put_object(Bucket=bucket, Key=f"uploads/load/item-{i:05d}/clip.mp4", Body=b"%08d" % i)
            uploaded_at[f"item-{i:05d}"] = time.time()  # the stack's clock: the ledger's timestamps
        uploaded = time.perf_counter() - started
        deadline = time.monotonic() + timeout_s
        while True:
            rows = [r for r in ledger.owner_rows("load") if r["sk"] == "ITEM"]
            done = [r for r in rows if settled(r)]
            if len(done) == items or time.monotonic() > deadline:
                break
            time.sleep(5.0)  # an owner-index query is a full pass over the table in moto
        wall = time.perf_counter() - started
        rows = list(ledger.owner_rows("load"))
        writes = sum(x.writes for x in {id(p.ledger): p.ledger for p in stack.pipelines.values()}.values())
        item_rows = [r for r in rows if r["sk"] == "ITEM"]
        chan_rows = [r for r in rows if r["sk"] != "ITEM"]
        by_status = collections.Counter(r.get("status") for r in item_rows)
        reasons = collections.Counter(
            r.get("quarantine_reason", "")[:90] for r in item_rows if r.get("status") == "QUARANTINED"
        )
        by_code: collections.Counter = collections.Counter()
        quarantined_faults: list[tuple[str, str, list[str]]] = []
        untrue: list[dict[str, Any]] = []
        failed_channels: collections.Counter = collections.Counter()
        for r in item_rows:
            injected = standin.faults_by_item.get(("load", r["item_id"]), [])
            if r.get("status") == "QUARANTINED":
                m = REASON_CODE.search(r.get("quarantine_reason", ""))
                code = m.group(1) if m else "?"
                by_code[code] += 1
                quarantined_faults.append((r["item_id"], code, injected))
                if not true_reason(code, injected):
                    untrue.append(
                        {"item": r["item_id"], "reason": r.get("quarantine_reason"), "faults": injected}
                    )
            elif r.get("status") == "PARTIAL":
                for c in chan_rows:
                    if c["item_id"] == r["item_id"] and c.get("status") == "FAILED":
                        code = str((c.get("error") or {}).get("code"))
                        failed_channels[code] += 1
                        if not true_reason(code, injected):
                            untrue.append(
                                {"item": r["item_id"], "channel": c["channel"], "error": c.get("error")}
                            )
        settle_by_item = {
            r["item_id"]: t - uploaded_at[r["item_id"]]
            for r in item_rows
            if r["item_id"] in uploaded_at
            and settled(r)
            and (t := iso_epoch(r.get("updated_at"))) is not None
        }
        settle_s = list(settle_by_item.values())
        # items the stand-in injected nothing into (their time is the burst's queueing) and the others
        hit = {i for i in settle_by_item if standin.faults_by_item.get(("load", i))}
        settle_split = {
            "no fault": [t for i, t in settle_by_item.items() if i not in hit],
            "faulted": [t for i, t in settle_by_item.items() if i in hit],
        }
        ended = time.time()
        stuck_rows = [r for r in item_rows if r["item_id"] in uploaded_at and not settled(r)]
        unrecorded = sorted(set(uploaded_at) - {r["item_id"] for r in item_rows})  # on_upload never got to it
        jobs = [standin.jobs_by_item[("load", f"item-{i:05d}")] for i in range(items)]
        handler_s = sum(timers.seconds.values())
        cpu_s = sum(timers.cpu.values()) - sum(timers.model_cpu.values())
        burst_cpu = {k: v - timers.model_cpu.get(k, 0) for k, v in timers.cpu.items()}
        model_ms = 1000 * sum(timers.model_cpu.values()) / items
        standin_calls, webhooks_lost = dict(standin.calls), standin.webhooks_lost
        injected = {
            "died": standin.died,
            "forgotten": standin.forgotten,
            "garbled": dict(standin.garbled),
            "refused while down": dict(standin.refused),
        }
        lost = items - sum(by_status.get(s, 0) for s in FINAL)
        solo_ms = one_at_a_time(s3, bucket, ledger, timers, solo) if solo and not lost else None
        return {
            "items": items,
            "completed": by_status.get("COMPLETE", 0),
            "partial": by_status.get("PARTIAL", 0),
            "quarantined": by_status.get("QUARANTINED", 0),
            "lost": lost,
            "stuck": len(stuck_rows) + len(unrecorded),
            "stuck_rows": stuck_rows,
            "unrecorded": unrecorded,
            "ended": ended,
            "settle_p50": percentile(settle_s, 50),
            "settle_p99": percentile(settle_s, 99),
            "settle_max": max(settle_s, default=None),
            "settle_split": {
                k: (len(v), percentile(v, 50), percentile(v, 99)) for k, v in settle_split.items()
            },
            "quarantined_faults": quarantined_faults,
            "settled_within": {b: sum(1 for t in settle_s if t <= b) for b in (10, 30, 60, 120, 300)},
            "jobs_lost": sum(n for k, n in sweeps.items() if k.startswith("lost:")),
            "sweeps": dict(sweeps),
            "reasons": dict(reasons),
            "reasons_by_code": dict(by_code),
            "failed_channels": dict(failed_channels),
            "untrue": untrue,
            "injected": injected,
            "jobs_per_item": statistics.mean(jobs),
            "max_jobs": max(jobs),
            "writes_per_item_channel": writes / max(1, len(chan_rows)),
            "orchestration_ms_per_item": 1000 * cpu_s / items,
            "handler_wall_ms_per_item": 1000 * handler_s / items,
            "by_function_ms": {k: round(1000 * v / items, 2) for k, v in burst_cpu.items()},
            "solo_ms": solo_ms,
            "model_ms_per_item": model_ms,
            "wall_s": wall,
            "upload_s": uploaded,
            "kills": killer.kills,
            "standin": standin_calls,
            "webhooks_lost": webhooks_lost,
        }


def one_at_a_time(s3: Any, bucket: str, ledger: Any, timers: Timers, n: int) -> dict[str, float]:
    """`n` more items after the burst, each uploaded once the one before is final and its handlers have
    returned: the per-item cost at SQS batch size 1 with nothing else in flight (the sweeper still runs
    on its schedule, and its cost is per tick, not per item: the burst reports it). Per-item functions
    only."""
    names = ("on_upload", "on_job_done")
    before = {k: timers.cpu.get(k, 0.0) - timers.model_cpu.get(k, 0.0) for k in names}
    calls = {k: timers.calls.get(k, 0) for k in names}
    for j in range(n):
        item = f"solo-{j:03d}"
        s3.put_object(Bucket=bucket, Key=f"uploads/load/{item}/clip.mp4", Body=b"solo%04d" % j)
        deadline = time.monotonic() + 120
        while (ledger.item("load", item) or {}).get("status") not in FINAL or any(
            timers.calls.get(k, 0) < calls[k] + j + 1 for k in names
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{item} did not finish in 120 s")
            time.sleep(0.02)
    out = {k: 1000 * (timers.cpu.get(k, 0.0) - timers.model_cpu.get(k, 0.0) - before[k]) / n for k in names}
    out["total"] = sum(out.values())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--only", choices=["clean", "faults"])
    ap.add_argument("--kill-every", type=int, default=25, help="kill every n-th on_upload batch (faulty run)")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument(
        "--solo", type=int, default=50, help="items run one at a time after the clean burst (CPU alone)"
    )
    ap.add_argument(
        "--ledger",
        choices=["dynamodb", "memory"],
        default="dynamodb",
        help="the ledger's table: the stack's DynamoDB table on moto, or the in-memory adapter of the same "
        "Ledger (moto's transactions deep-copy the whole table on every call: a 1,000-item burst is "
        "quadratic in the emulator; run it with memory, and 100 items with both for the table's cost)",
    )
    args = ap.parse_args()
    memory = args.ledger == "memory"
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    logging.basicConfig(level=logging.ERROR)
    runs = []
    if args.only in (None, "clean"):
        clean = run(args.items, None, 0, args.timeout, solo=args.solo, memory_ledger=memory)
        runs.append(("no faults", clean))
    if args.only in (None, "faults"):
        name = "10% 5xx, 5% lost, 5% fail, kills, 5% died, 5% 404, 5% garbled"
        runs.append(
            (
                name,
                run(
                    args.items,
                    FAULTS,
                    args.kill_every,
                    args.timeout,
                    overrides=FAULT_OVERRIDES,
                    memory_ledger=memory,
                ),
            )
        )
    print(
        f"\n{args.items} items in one burst through the local stack (moto + RunPod-API stand-in; ledger: "
        f"{'in memory' if memory else 'DynamoDB on moto'}), {os.cpu_count()} cores\n"
    )
    cols = (
        "run",
        "completed",
        "quarantined",
        "lost",
        "stuck",
        "settle s p50/p99",
        "jobs lost",
        "GPU jobs/item",
        "writes/item-channel",
        "orchestration CPU ms/item",
        "handler wall ms/item",
        "wall s",
    )
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for name, r in runs:
        print(
            f"| {name} | {r['completed']} | {r['quarantined']} | {r['lost']} | {r['stuck']} "
            f"| {_s(r['settle_p50'])} / {_s(r['settle_p99'])} | {r['jobs_lost']} | {r['jobs_per_item']:.3f} "
            f"(max {r['max_jobs']}) | {r['writes_per_item_channel']:.2f} "
            f"| {r['orchestration_ms_per_item']:.1f} | {r['handler_wall_ms_per_item']:.0f} "
            f"| {r['wall_s']:.1f} |"
        )
    for name, r in runs:
        print(
            f"\n{name}: kills {r['kills']}, stand-in calls {r['standin']}, "
            f"lost webhooks {r['webhooks_lost']}, orchestration CPU ms/item by function "
            f"{r['by_function_ms']}, MiniLM CPU ms/item (excluded) {r['model_ms_per_item']:.1f}, "
            f"partial {r['partial']}"
        )
        if r["solo_ms"]:
            solo = r["solo_ms"]
            print(
                f"  one at a time ({args.solo} more items, batch size 1): orchestration CPU ms/item "
                f"{solo['total']:.1f} (on_upload {solo['on_upload']:.1f}, "
                f"on_job_done {solo['on_job_done']:.1f})"
            )
        print(
            f"  settle s p50 {_s(r['settle_p50'])}, p99 {_s(r['settle_p99'])}, max {_s(r['settle_max'])}; "
            f"settled within {r['settled_within']} s; upload {r['upload_s']:.1f} s; stuck {r['stuck']}; "
            f"jobs lost {r['jobs_lost']}; sweeper actions {r['sweeps']}"
        )
        print(
            "  settle s by item: "
            + "; ".join(
                f"{k} {n} items p50 {_s(p50)} p99 {_s(p99)}" for k, (n, p50, p99) in r["settle_split"].items()
            )
        )
        if r["injected"]["died"] or r["injected"]["forgotten"] or r["injected"]["garbled"]:
            print(f"  injected: {r['injected']}")
        if r["reasons_by_code"] or r["failed_channels"]:
            print(
                f"  quarantined by code {r['reasons_by_code']}; failed channels (PARTIAL) by code "
                f"{r['failed_channels']}; untrue reasons {len(r['untrue'])}"
            )
        for reason, n in r["reasons"].items():
            print(f"  quarantined x{n}: {reason}")
        for item, code, faults in r["quarantined_faults"][:20]:
            print(f"  quarantined {item} ({code}); injected into it: {faults}")
        for bad in r["untrue"]:
            print(f"  UNTRUE: {bad}")
        for row in r["stuck_rows"][:20]:  # due_at past the run's end: cut off, not stuck
            due = row.get("due_at")
            when = "" if due is None else f" (due {float(due) - r['ended']:+.0f} s from the run's end)"
            print(f"  STUCK{when}: {row}")
        if len(r["stuck_rows"]) > 20:
            print(f"  ... and {len(r['stuck_rows']) - 20} more not settled")
        if r["unrecorded"]:
            print(
                f"  STUCK: {len(r['unrecorded'])} uploads never recorded (queued for on_upload when the "
                f"run ended): {', '.join(r['unrecorded'][:10])}{' ...' if len(r['unrecorded']) > 10 else ''}"
            )
    return 0 if all(r["lost"] == 0 and r["stuck"] == 0 and not r["untrue"] for _, r in runs) else 1


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    raise SystemExit(main())
