"""The local stack's commands (`se stack up`, `se upload`, `se status`, `se invoke`, `se demo`).

`se stack up` writes its endpoints to .cache/stack/endpoints.json; the other commands read them
there (or use AWS_ENDPOINT_URL / MEDIA_BUCKET / LEDGER_TABLE from the environment, so they work
against a deployed stack too).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from shared import spec
from shared.dev.stack import ENDPOINTS_FILE, FUNCTIONS, LocalStack, Resources, function_env, load_template
from shared.settings import REPO_ROOT

SAMPLES = REPO_ROOT / "infra" / "samples"
DEMO_OWNER = "demo"
# (item, files): the committed sample media, plus a file that is not media at all
DEMO_ITEMS = (
    ("garden-clip", ("clip.mp4", "meta.json")),
    ("voice-memo", ("memo.m4a",)),
    ("test-photo", ("photo.png",)),
)
FINAL = ("COMPLETE", "PARTIAL", "QUARANTINED")


class StackError(RuntimeError):
    pass


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The in-process functions print EMF metrics to stdout (Powertools reads this switch from the
    process environment): off while a command runs, restored after it."""
    saved = os.environ.get("POWERTOOLS_METRICS_DISABLED")
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("POWERTOOLS_METRICS_DISABLED", None)
        else:
            os.environ["POWERTOOLS_METRICS_DISABLED"] = saved


def read_endpoints(path: Path = ENDPOINTS_FILE) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    env = os.environ
    if env.get("MEDIA_BUCKET") and env.get("LEDGER_TABLE"):
        return {k: env[k] for k in ("MEDIA_BUCKET", "LEDGER_TABLE", "AWS_ENDPOINT_URL") if k in env}
    raise StackError(f"no running stack: start one with `se stack up` (it writes {path})")


def _client(endpoints: Mapping[str, Any], service: str) -> Any:
    from shared.aws.clients import client

    env = {k: v for k, v in endpoints.items() if k.startswith("AWS_") and isinstance(v, str)}
    return client(service, env or None)


def _ledger(endpoints: Mapping[str, Any]) -> Any:
    from shared.aws.ledger import Ledger

    return Ledger(_client(endpoints, "dynamodb"), endpoints["LEDGER_TABLE"])


# ---------------------------------------------------------------------- se stack up


def stack_up(model_dir: Path, runpod_url: str | None = None) -> int:
    with _quiet():
        return _stack_up(model_dir, runpod_url)


def _stack_up(model_dir: Path, runpod_url: str | None) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    print("starting the local stack (moto + the RunPod worker under the SDK's local API) ...", flush=True)
    with LocalStack(model_dir, runpod_url=runpod_url, log_dir=ENDPOINTS_FILE.parent) as stack:
        path = stack.write_endpoints()
        ep = stack.endpoints()
        print(f"\nAWS_ENDPOINT_URL={ep['AWS_ENDPOINT_URL']}  (moto: S3, SQS, DynamoDB, Secrets Manager)")
        print(f"MEDIA_BUCKET={ep['MEDIA_BUCKET']}\nLEDGER_TABLE={ep['LEDGER_TABLE']}")
        print(f"UPLOAD_QUEUE_URL={ep['UPLOAD_QUEUE_URL']}\nRUNPOD_ENDPOINT_URL={ep['RUNPOD_ENDPOINT_URL']}")
        for name, url in ep["function_urls"].items():
            print(f"function URL {name}: {url}")
        print(f"\nendpoints written to {path}")
        print("try:  se upload infra/samples/clip.mp4 --owner me --item clip1   then   se status --owner me")
        print("Ctrl-C stops the stack.", flush=True)
        while not stop.wait(0.5):
            pass
    ENDPOINTS_FILE.unlink(missing_ok=True)
    print("stack stopped")
    return 0


# ---------------------------------------------------------------------- se upload


def upload(file: Path, owner: str, item: str, name: str | None = None) -> str:
    from shared.pipeline.keys import check_id

    check_id(owner, "owner_id")
    check_id(item, "item_id")
    ep = read_endpoints()
    key = f"uploads/{owner}/{item}/{name or file.name}"
    _client(ep, "s3").put_object(Bucket=ep["MEDIA_BUCKET"], Key=key, Body=file.read_bytes())
    return key


# ---------------------------------------------------------------------- se status


def status_rows(ledger: Any, owner: str | None = None, item: str | None = None) -> list[dict[str, Any]]:
    owners = [owner] if owner else ledger.owners()
    rows = []
    for o in owners:
        for r in ledger.owner_rows(o):
            if item is None or r["item_id"] == item:
                rows.append(r)
    return rows


def render_status(rows: Iterable[Mapping[str, Any]]) -> str:
    """items x channels: status, attempts, dims, seconds (and the error or quarantine reason)."""
    by_item: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        entry = by_item.setdefault((r["owner_id"], r["item_id"]), {"item": None, "channels": {}})
        if r["sk"] == "ITEM":
            entry["item"] = r
        else:
            entry["channels"][r["channel"]] = r
    lines = [
        f"{'owner/item':30s} {'channel':16s} {'status':12s} {'att':>3s} {'dims':>5s} {'seconds':>8s}  note"
    ]
    for (o, i), entry in sorted(by_item.items()):
        it = entry["item"] or {}
        note = it.get("quarantine_reason") or (it.get("media_key") or it.get("meta_key") or "")
        lines.append(
            f"{o + '/' + i:30s} {'(item)':16s} {it.get('status', '?'):12s} {it.get('attempts', 0):>3} "
            f"{'':>5s} {it.get('gpu_seconds', 0) or 0:8.2f}  {note}"
        )
        for name in spec.CHANNELS:
            ch = entry["channels"].get(name)
            if ch is None:
                continue
            secs = ch.get("gpu_seconds") or ch.get("seconds") or 0
            err = (ch.get("error") or {}).get("message", "") if isinstance(ch.get("error"), dict) else ""
            lines.append(
                f"{'':30s} {name:16s} {ch.get('status', '?'):12s} {ch.get('attempts', 0):>3} "
                f"{ch.get('dims') or '-':>5} {secs:8.2f}  {err[:70]}"
            )
    return "\n".join(lines)


def version_lines(ledger: Any, owners: Iterable[str]) -> list[str]:
    """Per owner: the spec version readers use now, and the next one's progress."""
    lines = []
    for o in owners:
        st = ledger.owner_state(o) or {}
        cur = st.get("current_version") or "(none yet)"
        line = f"owner {o}: reads spec version {cur}"
        if st.get("current_version") != spec.SPEC_VERSION:
            line += f"; next {spec.SPEC_VERSION}: {st.get('settled', 0)}/{st.get('items', 0)} items settled"
        lines.append(line)
    return lines


def status(owner: str | None, item: str | None, as_json: bool) -> int:
    ep = read_endpoints()
    ledger = _ledger(ep)
    rows = status_rows(ledger, owner, item)
    owners = sorted({r["owner_id"] for r in rows})
    if as_json:
        states = {o: ledger.owner_state(o) for o in owners}
        print(json.dumps({"rows": rows, "owners": states}, indent=2, default=str))
    else:
        print(render_status(rows) if rows else "no items")
        for line in version_lines(ledger, owners):
            print(line)
    return 0


# ---------------------------------------------------------------------- se invoke


def invoke(function: str, event_file: Path, endpoints: Path = ENDPOINTS_FILE) -> dict[str, Any]:
    """Run one template.yaml function in-process against the running stack, with the environment the
    template gives it (as `sam local invoke` does in a container). The sample events name the bucket
    `media-bucket`; that placeholder is replaced by the stack's bucket."""
    with _quiet():
        return _invoke(function, event_file, endpoints)


def _invoke(function: str, event_file: Path, endpoints: Path) -> dict[str, Any]:
    from shared.pipeline import lambdas

    if function not in FUNCTIONS:
        raise StackError(f"unknown function {function}; one of {', '.join(FUNCTIONS)}")
    ep = read_endpoints(endpoints)
    if "resources" not in ep:
        raise StackError("`se invoke` needs a local stack started with `se stack up`")
    res = Resources(None, load_template(), dict(ep["resources"]["physical"]))
    res.parameters = dict(ep["resources"]["parameters"])
    res.urls = dict(ep["resources"]["urls"])
    extra = {k: v for k, v in ep.items() if k.startswith("AWS_")}
    extra.update(MODEL_DIR=ep["MODEL_DIR"], **ep.get("overrides", {}))
    env = function_env(res, FUNCTIONS[function], extra)
    raw = event_file.read_text().replace("media-bucket", ep["MEDIA_BUCKET"])
    event = json.loads(raw)
    if function == "embed_text":
        from shared.lambda_text.app import handler_from_env

        handler = handler_from_env(env)
    else:  # the function's own log lines go to stderr; its response is what `se invoke` prints
        handler = lambdas.build(function, env, log_stream=sys.stderr)
    from shared.dev.stack import _Context

    return handler(event, _Context(function))


# ---------------------------------------------------------------------- se demo


def _wait(ledger: Any, owner: str, items: list[str], timeout_s: float) -> dict[str, str]:
    """Follow the items' statuses live until every one is final (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    shown: dict[str, str] = {}
    while True:
        rows = list(ledger.owner_rows(owner))
        state = {r["item_id"]: r.get("status", "?") for r in rows if r["sk"] == "ITEM"}
        done = {r["item_id"]: 0 for r in rows if r["sk"] == "ITEM"}
        total = dict(done)
        for r in rows:
            if r["sk"] != "ITEM" and r["item_id"] in total:
                total[r["item_id"]] += 1
                done[r["item_id"]] += r.get("status") in ("SUCCEEDED", "FAILED", "QUARANTINED")
        for i in items:
            line = f"{state.get(i, 'waiting')} {done.get(i, 0)}/{total.get(i, 0)} channels"
            if shown.get(i) != line:
                shown[i] = line
                print(f"  [{time.strftime('%H:%M:%S')}] {owner}/{i:14s} {line}", flush=True)
        if all(state.get(i) in FINAL for i in items):
            return state
        if time.monotonic() > deadline:
            raise StackError(f"items not final after {timeout_s:.0f} s: {state}")
        time.sleep(0.4)


def demo(model_dir: Path, timeout_s: float = 240.0) -> int:
    with _quiet():
        return _demo(model_dir, timeout_s)


def _demo(model_dir: Path, timeout_s: float) -> int:
    from shared.pipeline.keys import manifest_key, transcript_key

    started = time.perf_counter()
    print("\n== The product on the local stack: S3 upload -> SQS -> on_upload -> RunPod -> on_job_done")
    with LocalStack(model_dir) as stack:
        ep = stack.endpoints()
        print(
            f"stack up in {time.perf_counter() - started:.1f} s: moto {ep['AWS_ENDPOINT_URL']}, "
            f"worker {ep['RUNPOD_ENDPOINT_URL']}, functions {stack.urls.base if stack.urls else ''}"
        )
        s3 = stack.client("s3")
        bucket = ep["MEDIA_BUCKET"]
        items = [i for i, _ in DEMO_ITEMS] + ["not-media"]
        for item, files in DEMO_ITEMS:
            for f in files:
                s3.put_object(
                    Bucket=bucket, Key=f"uploads/{DEMO_OWNER}/{item}/{f}", Body=(SAMPLES / f).read_bytes()
                )
                print(f"uploaded s3://{bucket}/uploads/{DEMO_OWNER}/{item}/{f}")
        s3.put_object(
            Bucket=bucket, Key=f"uploads/{DEMO_OWNER}/not-media/broken.mp4", Body=b"this is not a video"
        )
        s3.put_object(Bucket=bucket, Key="uploads/demo/../escape/x.mp4", Body=b"x")  # refused: traversal
        print("uploaded a file that is not media (not-media/broken.mp4) and a key with '..' (refused)")
        print("\nprogress:")
        ledger = _ledger(ep)
        state = _wait(ledger, DEMO_OWNER, items, timeout_s)
        rows = status_rows(ledger, DEMO_OWNER)
        print("\n" + render_status(rows))
        doc = json.loads(
            s3.get_object(Bucket=bucket, Key=transcript_key(spec.SPEC_VERSION, DEMO_OWNER, "garden-clip"))[
                "Body"
            ].read()
        )
        print(
            f"\ntranscript of garden-clip: {doc['text'].strip()!r} ({len(doc['segments'])} segments, "
            f"{doc['duration']:.1f} s)"
        )
        mrows = _wait_manifest(
            s3,
            bucket,
            manifest_key(spec.SPEC_VERSION, DEMO_OWNER),
            sum(1 for r in rows if r["sk"] != "ITEM"),
            timeout_s,
        )
        print(f"\nmanifest s3://{bucket}/{manifest_key(spec.SPEC_VERSION, DEMO_OWNER)} ({len(mrows)} rows):")
        print(f"  {'item':12s} {'channel':16s} {'status':10s} {'dim':>4s}  {'model':28s} embedding_key")
        for m in mrows:
            print(
                f"  {m['item_id']:12s} {m['channel']:16s} {m['status']:10s} {m['embedding_dim'] or '-':>4}  "
                f"{(m['model_name'] or '')[:28]:28s} {m['embedding_key']}"
            )
        _check_vectors(s3, bucket, mrows)
        expected = {
            "garden-clip": "COMPLETE",
            "voice-memo": "COMPLETE",
            "test-photo": "COMPLETE",
            "not-media": "PARTIAL",
        }
        if state != expected:
            raise StackError(f"unexpected final statuses {state}, expected {expected}")
    print(
        f"\ndemo done in {time.perf_counter() - started:.1f} s (CLIP, VideoMAE, wav2vec2: tiny random "
        "dev models: their vectors mean nothing; MiniLM and Whisper tiny.en are the real weights)"
    )
    return 0


def _wait_manifest(s3: Any, bucket: str, key: str, want_rows: int, timeout_s: float) -> list[dict[str, Any]]:
    """The sweeper rebuilds an owner's manifest shortly after its items complete: wait for all rows."""
    from shared.pipeline import manifests

    deadline = time.monotonic() + timeout_s
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            rows = manifests.read_parquet(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            rows = []
        if len(rows) == want_rows:
            return rows
        time.sleep(0.3)
    raise StackError(f"the manifest has {len(rows)} rows, expected {want_rows}")


def _check_vectors(s3: Any, bucket: str, mrows: list[dict[str, Any]]) -> None:
    from shared.vectors import check_vector, load_npy

    checked = 0
    for m in mrows:
        if m["status"] != "SUCCEEDED" or not m["embedding_key"].endswith(".npy"):
            continue
        arr = load_npy(s3.get_object(Bucket=bucket, Key=m["embedding_key"])["Body"].read(), m["channel"])
        check_vector(arr, m["embedding_dim"], m["channel"], rows=arr.ndim == 2)
        checked += 1
    meta = [m for m in mrows if m["channel"] == "text_meta"]
    print(
        f"\nevery vector in the manifest read back from S3 and checked (float32, dims, finite, unit norm): "
        f"{checked}; text_meta from meta.json: {len(meta)}"
    )
    if checked == 0:
        raise StackError("no vectors were written")


def main_error(e: Exception) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 1
