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
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import threading
import time
import uuid
from collections import Counter
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
    seed: int = 7


@dataclass
class Job:
    id: str
    input: dict[str, Any]
    webhook: str | None
    status: str = "IN_QUEUE"
    output: Any = None
    error: str | None = None
    execution_ms: int = 0


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
    arr = _unit(rng, 1 + 4, ch.dims) if channel == "video_clip" else _unit(rng, ch.dims)
    if channel == "video_clip":
        arr[0] = arr[1:].mean(axis=0) / np.linalg.norm(arr[1:].mean(axis=0))
    return _npy(arr), {"shape": list(arr.shape), "dims": int(arr.shape[-1]), "dtype": "float32"}


class RunPodStandIn:
    def __init__(self, faults: Faults | None = None, *, job_seconds: float = 0.0, workers: int = 8) -> None:
        self.faults = faults or Faults()
        self.rng = random.Random(self.faults.seed)
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

    def route(self, path: str, body: bytes, auth: str) -> tuple[int, dict[str, Any]]:
        if not auth.startswith("Bearer "):
            return 401, {"error": "unauthorized"}
        parts = path.strip("/").split("/")
        op = parts[0]
        self.calls[op] += 1
        if op == "run":
            if self.faults.run_timeout_s:
                time.sleep(self.faults.run_timeout_s)
            if self._draw(self.faults.run_5xx):
                return 503, {"error": "service unavailable"}
            if self._draw(self.faults.run_500):
                return 500, {"error": "internal server error"}
            if self._draw(self.faults.run_429):
                return 429, {"error": "too many requests"}
            req = json.loads(body or b"{}")
            job = Job(id=f"sj-{uuid.uuid4().hex}", input=req.get("input") or {}, webhook=req.get("webhook"))
            item = job.input.get("item") or {}
            with self.lock:
                self.jobs[job.id] = job
                self.jobs_by_item[(item.get("owner_id"), item.get("item_id"))] += 1
            self.pool.submit(self._run, job)
            return 200, {"id": job.id, "status": "IN_QUEUE"}
        if op in ("status", "cancel") and len(parts) == 2:
            job = self.jobs.get(parts[1])
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

    def _run(self, job: Job) -> None:
        job.status = "IN_PROGRESS"
        started = time.perf_counter()
        if self.job_seconds:
            time.sleep(self.job_seconds)
        inp = job.input
        if self._draw(self.faults.fail_retryable):
            job.error = json.dumps({"code": "internal_error", "message": "injected fault", "retryable": True})
            job.status = "FAILED"
        else:
            channels = {}
            seed = int(
                hashlib.sha256(json.dumps(inp.get("item"), sort_keys=True).encode()).hexdigest()[:8], 16
            )
            for i, ch in enumerate(inp.get("channels", [])):
                data, meta = canned_artifact(ch, seed + i)
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
            job.output = {
                "item": inp.get("item"),
                "spec_version": spec.SPEC_VERSION,
                "channels": channels,
                "seconds": round(time.perf_counter() - started, 4),
            }
            job.status = "COMPLETED"
        job.execution_ms = int((time.perf_counter() - started) * 1000)
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


__all__ = ["Faults", "RunPodStandIn", "canned_artifact"]
