"""A fast RunPod-API stand-in for tests and the load bench (never the thing that makes a feature work:
the real worker runs under the SDK's local API in the demo and the e2e test).

Same HTTP contract as RunPod's queue endpoints: `POST /run {"input", "webhook", "policy"}` ->
`{"id", "status": "IN_QUEUE"}`; `POST /status/{id}` -> `{"id", "status", "output"|"error",
"executionTime"}`; `POST /cancel/{id}`. A job of task embed_item writes canned artifacts (unit vectors of
each channel's dims, a small transcript) to its presigned PUT URLs, exactly as the worker reports them
(sha256, bytes, shape), and then POSTs the webhook with RunPod's body.

Faults, each a probability drawn from a seeded RNG: `run_5xx` (503 before anything is created),
`run_500` (500 before anything is created: the client cannot know that, so the submit is ambiguous),
`run_429`, `lost_webhook` (the job completes, the webhook is never sent), `fail_retryable` (the job
FAILS with a retryable worker error), `run_timeout_s` (the /run answer is delayed). `jobs_by_item`
counts created jobs per (owner, item): the GPU jobs per item.

Faults of a job that never reports, or reports what cannot be read (issue 20):

- `worker_down`: the worker dies as it takes the job. That job and every job then in flight never
  report (no webhook); their /status fails (the connection dropped with no answer, or 502/503/504)
  for `worker_down_s` after the death (set it past the jobs' deadline, their TTL), then answers 404
  (RunPod no longer knows them). For `outage_s` after the death the whole endpoint is down: /run,
  /status and /cancel fail the same way (a /run so refused may have reached RunPod: ambiguous).
- `forgotten`: the job completes, its webhook is lost, and `forget_after_s` after completion RunPod
  has dropped its result (it keeps one 30 minutes): /status and /cancel answer 404.
- `garbled`: the job completes with one channel's report garbled, one of GARBLES drawn per job:
  `seconds` a string, an object, a list or NaN, sha256 missing, or the channel failed (permanently)
  with a lone surrogate in its error message.

`faults_by_item` lists, per (owner, item), each fault the stand-in injected into that item's calls
and jobs, in order (what a quarantine reason must be explained by; a garble as
`garbled:{how}:{channel}`); `died`, `forgotten`, `garbled` and `refused`
(/run, /status, /cancel calls refused while down) count them. `clock` (monotonic seconds) times the
windows.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import urllib3

from shared import spec
from shared.dev.localstack import free_port


@dataclass
class Faults:
    run_5xx: float = 0.0
    run_500: float = 0.0
    run_429: float = 0.0
    lost_webhook: float = 0.0
    fail_retryable: float = 0.0
    run_timeout_s: float = 0.0  # delay before answering /run (a client with a shorter timeout gives up)
    worker_down: float = 0.0
    worker_down_s: float = 3600.0 + 60.0  # a dead job's /status fails this long, then 404
    outage_s: float = 0.0  # the whole endpoint refuses calls this long after a worker dies
    forgotten: float = 0.0
    forget_after_s: float = 0.0
    garbled: float = 0.0
    seed: int = 7


GARBLES = ("seconds_str", "seconds_obj", "seconds_list", "seconds_nan", "no_sha256", "surrogate_error")
DROP = 0  # route()'s status for "close the connection without an answer"


@dataclass
class Job:
    id: str
    input: dict[str, Any]
    webhook: str | None
    status: str = "IN_QUEUE"
    output: Any = None
    error: str | None = None
    execution_ms: int = 0
    dead_until: float | None = None  # died with its worker: /status fails until then, 404 after
    forget_at: float | None = None  # RunPod dropped its result then: 404 from then on


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr.astype(np.float32), allow_pickle=False)
    return buf.getvalue()


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def canned_artifact(channel: str, seed: int) -> tuple[bytes, dict[str, Any]]:
    """The bytes a channel's artifact would have, and the worker's metadata for it."""
    rng = np.random.default_rng(seed)
    ch = spec.CHANNELS[channel]
    if ch.artifact == "json":
        doc = {
            "text": "canned transcript for load tests",
            "segments": [{"start": 0.0, "end": 1.0, "text": "canned transcript for load tests"}],
            "language": "en",
            "duration": 1.0,
        }
        return json.dumps(doc).encode(), {"language": "en", "segments": 1}
    arr = _unit(rng, 1 + 4, ch.dims) if ch.per_row else _unit(rng, ch.dims)
    meta: dict[str, Any] = {"shape": list(arr.shape), "dims": int(arr.shape[-1]), "dtype": "float32"}
    if ch.per_row:  # video_clip's 4 frame rows, or scenes' 4 scene rows (their keyframes' seconds)
        arr[0] = arr[1:].mean(axis=0) / np.linalg.norm(arr[1:].mean(axis=0))
        meta["timestamps"] = [0.125, 0.375, 0.625, 0.875]  # the worker's pts of its 4 frame rows
        if ch.thumbnails:
            meta["scenes"] = [
                {"start": i / 4, "end": (i + 1) / 4, "keyframe": t, "thumbnail": i}
                for i, t in enumerate(meta["timestamps"])
            ]
    return _npy(arr), meta


def garble(report: dict[str, Any], how: str) -> dict[str, Any]:
    """A succeeded channel report garbled one way of GARBLES."""
    out = dict(report)
    if how == "seconds_str":
        out["seconds"] = str(out.get("seconds", 0.01))
    elif how == "seconds_obj":
        out["seconds"] = {"value": out.get("seconds", 0.01)}
    elif how == "seconds_list":
        out["seconds"] = [out.get("seconds", 0.01)]
    elif how == "seconds_nan":
        out["seconds"] = float("nan")
    elif how == "no_sha256":
        out.pop("sha256", None)
    elif how == "surrogate_error":
        msg = "cannot decode frame \udcff\ud800 of the source"
        out = {"status": "failed", "error": {"code": "decode_error", "message": msg, "retryable": False}}
    else:
        raise ValueError(how)
    return out


class RunPodStandIn:
    def __init__(
        self,
        faults: Faults | None = None,
        *,
        job_seconds: float = 0.0,
        workers: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.faults = faults or Faults()
        self.rng = random.Random(self.faults.seed)
        self.clock = clock
        self.faults_by_item: defaultdict[tuple[Any, Any], list[str]] = defaultdict(list)
        self.running: set[str] = set()
        self.down_until = float("-inf")
        self.died = 0
        self.forgotten = 0
        self.garbled: Counter = Counter()
        self.refused: Counter = Counter()
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.jobs_by_item: Counter = Counter()
        self.calls: Counter = Counter()
        self.webhooks_sent = 0
        self.webhooks_lost = 0
        self.job_seconds = job_seconds
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="standin-job")
        self.http = urllib3.PoolManager(maxsize=16, retries=False)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, out = standin.route(self.path, body, self.headers.get("Authorization", ""))
                if status == DROP:  # the worker is down: the connection closes with no answer
                    self.close_connection = True
                    return
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def _draw(self, p: float) -> bool:
        with self.lock:
            return p > 0 and self.rng.random() < p

    def _note(self, item: Any, fault: str) -> None:
        item = item if isinstance(item, dict) else {}
        with self.lock:
            self.faults_by_item[(item.get("owner_id"), item.get("item_id"))].append(fault)

    def _down(self, op: str) -> tuple[int, dict[str, Any]]:
        """How a call that reaches a dead worker's endpoint fails: no answer, or a gateway's 5xx."""
        with self.lock:
            self.refused[op] += 1
            status = self.rng.choice((DROP, 502, 503, 504))
        return status, {"error": "worker unavailable"}

    def route(self, path: str, body: bytes, auth: str) -> tuple[int, dict[str, Any]]:
        if not auth.startswith("Bearer "):
            return 401, {"error": "unauthorized"}
        parts = path.strip("/").split("/")
        op = parts[0]
        self.calls[op] += 1
        if op == "run":
            if self.faults.run_timeout_s:
                time.sleep(self.faults.run_timeout_s)
            req = json.loads(body or b"{}")
            item = (req.get("input") or {}).get("item") or {}
            if self.clock() < self.down_until:
                self._note(item, "outage_run")
                return self._down(op)
            if self._draw(self.faults.run_5xx):
                self._note(item, "run_5xx")
                return 503, {"error": "service unavailable"}
            if self._draw(self.faults.run_500):
                self._note(item, "run_500")
                return 500, {"error": "internal server error"}
            if self._draw(self.faults.run_429):
                self._note(item, "run_429")
                return 429, {"error": "too many requests"}
            job = Job(id=f"sj-{uuid.uuid4().hex}", input=req.get("input") or {}, webhook=req.get("webhook"))
            item = job.input.get("item") or {}
            with self.lock:
                self.jobs[job.id] = job
                self.jobs_by_item[(item.get("owner_id"), item.get("item_id"))] += 1
                self.running.add(job.id)
            self.pool.submit(self._run, job)
            return 200, {"id": job.id, "status": "IN_QUEUE"}
        if op in ("status", "cancel") and len(parts) == 2:
            now = self.clock()
            if now < self.down_until:
                return self._down(op)
            job = self.jobs.get(parts[1])
            if job is not None and job.dead_until is not None and now < job.dead_until:
                return self._down(op)
            if job is not None and (
                (job.dead_until is not None) or (job.forget_at is not None and now >= job.forget_at)
            ):
                job = None  # RunPod no longer knows it
            if job is None:
                return 404, {"error": "job not found"}
            if op == "cancel":
                job.status = "CANCELLED"
            return 200, self._body(job)
        return 404, {"error": "no such route"}

    @staticmethod
    def _body(job: Job) -> dict[str, Any]:
        out: dict[str, Any] = {"id": job.id, "status": job.status, "executionTime": job.execution_ms}
        if job.output is not None:
            out["output"] = job.output
        if job.error is not None:
            out["error"] = job.error
        return out

    def _worker_died(self, job: Job) -> None:
        """The worker dies taking `job`: it and every job in flight never report."""
        with self.lock:
            now = self.clock()
            # the job it took, and every job another worker of the endpoint had taken (queued ones wait)
            dead = [self.jobs[j] for j in self.running if self.jobs[j].status == "IN_PROGRESS"]
            self.running.difference_update(j.id for j in dead)
            self.down_until = max(self.down_until, now + self.faults.outage_s)
            for j in dead:
                j.dead_until = now + self.faults.worker_down_s
                item = j.input.get("item") if isinstance(j.input.get("item"), dict) else {}
                self.faults_by_item[(item.get("owner_id"), item.get("item_id"))].append("worker_down")
            self.died += len(dead)

    def _run(self, job: Job) -> None:
        job.status = "IN_PROGRESS"
        if self._draw(self.faults.worker_down):
            self._worker_died(job)
            return
        started = time.perf_counter()
        if self.job_seconds:
            time.sleep(self.job_seconds)
        inp = job.input
        error: str | None = None
        output: dict[str, Any] | None = None
        if self._draw(self.faults.fail_retryable):
            self._note(inp.get("item"), "fail_retryable")
            error = json.dumps({"code": "internal_error", "message": "injected fault", "retryable": True})
        else:
            channels = {}
            seed = int(
                hashlib.sha256(json.dumps(inp.get("item"), sort_keys=True).encode()).hexdigest()[:8], 16
            )
            for i, ch in enumerate(inp.get("channels", [])):
                data, meta = canned_artifact(ch, seed + i)
                for put_url, _ in zip(inp.get("thumbnails") or (), meta.get("scenes", ()), strict=False):
                    self.http.request("PUT", put_url, body=b"\xff\xd8canned-jpeg", timeout=30)
                resp = self.http.request("PUT", inp["outputs"][ch], body=data, timeout=30)
                if resp.status >= 300:
                    channels[ch] = {
                        "status": "failed",
                        "error": {"code": "fetch_error", "message": "PUT failed", "retryable": True},
                    }
                    continue
                channels[ch] = {
                    "status": "succeeded",
                    **meta,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "bytes": len(data),
                    "model": "stand-in",
                    "model_name": "stand-in",
                    "random": True,
                    "fingerprint": spec.CHANNELS[ch].fingerprint,
                    "seconds": 0.01,
                }
            if channels and self._draw(self.faults.garbled):
                with self.lock:
                    name = self.rng.choice(sorted(channels))
                    how = self.rng.choice(GARBLES)
                    self.garbled[how] += 1
                self._note(inp.get("item"), f"garbled:{how}:{name}")
                channels[name] = garble(channels[name], how)
            output = {
                "item": inp.get("item"),
                "spec_version": spec.SPEC_VERSION,
                "channels": channels,
                "seconds": round(time.perf_counter() - started, 4),
            }
        with self.lock:  # a job the worker died with meanwhile never reports
            if job.dead_until is not None:
                return
            self.running.discard(job.id)
            job.error, job.output = error, output
            job.status = "FAILED" if error is not None else "COMPLETED"
            job.execution_ms = int((time.perf_counter() - started) * 1000)
        if self._draw(self.faults.forgotten):
            self._note(inp.get("item"), "forgotten")
            with self.lock:
                self.forgotten += 1
                self.webhooks_lost += 1
                job.forget_at = self.clock() + self.faults.forget_after_s
            return
        if job.webhook:
            if self._draw(self.faults.lost_webhook):
                self.webhooks_lost += 1
                return
            try:
                self.http.request(
                    "POST",
                    job.webhook,
                    body=json.dumps(self._body(job)).encode(),
                    headers={"Content-Type": "application/json"},
                    timeout=30,
                )
                self.webhooks_sent += 1
            except urllib3.exceptions.HTTPError:
                self.webhooks_lost += 1

    def start(self) -> RunPodStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> RunPodStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["GARBLES", "Faults", "RunPodStandIn", "canned_artifact", "garble"]
