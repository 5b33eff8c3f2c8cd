"""The one RunPod serverless client: POST /run, /status/{id}, /cancel/{id} over urllib3.

The same client reaches production (`https://api.runpod.ai/v2/{endpoint_id}`) and the local worker
under the SDK's local API (its base URL); status is a POST, which both serve.

- Retries with exponential backoff and full jitter on 429, 502, 503, 504 and connection errors
  (a Retry-After header is honoured); RUNPOD_RETRIES bounds them.
- /run is not idempotent (RunPod has no idempotency key), so a /run whose request may have reached
  RunPod (a read timeout, a 500) is NOT retried: it raises `AmbiguousSubmit` and the caller leaves
  its claimed dispatch for the sweeper, which waits out the job's TTL before dispatching again.
- A client-side token bucket per operation keeps under RunPod's documented limits.
- The API key travels only in the Authorization header and never appears in an error or a log.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3

from shared.errors import EmbeddingError

RETRY_STATUSES = {429, 502, 503, 504}
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class RunPodError(EmbeddingError):
    code = "runpod_error"
    status = 502
    retryable = True


class AmbiguousSubmit(RunPodError):
    """/run may or may not have created a job: never POST it again for this dispatch."""

    code = "runpod_ambiguous_submit"


class RateLimiter:
    """A token bucket: `rate` requests per second, bursts up to `burst`."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst or max(1.0, rate)
        self.tokens = self.burst
        self.clock = clock
        self.sleep = sleep
        self.last = clock()
        self.lock = threading.Lock()
        self.waited = 0.0

    def acquire(self) -> None:
        while True:
            with self.lock:
                now = self.clock()
                self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= 1 - 1e-9:  # float error must not leave a token just short of 1
                    self.tokens = max(0.0, self.tokens - 1)
                    return
                wait = (1 - self.tokens) / self.rate
            self.waited += wait
            self.sleep(wait)


@dataclass
class RunPodClient:
    base_url: str
    api_key: str
    timeout_s: float = 10.0
    retries: int = 4
    run_per_s: float = 50.0
    status_per_s: float = 100.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    calls: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.http = urllib3.PoolManager(num_pools=4, maxsize=16, retries=False)
        self.limits = {
            "run": RateLimiter(self.run_per_s, sleep=self.sleep),
            "status": RateLimiter(self.status_per_s, sleep=self.sleep),
            "cancel": RateLimiter(min(5.0, self.run_per_s), sleep=self.sleep),
        }

    def run(self, job_input: Mapping[str, Any], *, webhook: str, policy: Mapping[str, int]) -> str:
        """Submit one job; returns its id."""
        body = {"input": job_input, "webhook": webhook, "policy": dict(policy)}
        out = self._call("run", "/run", body, idempotent=False)
        job_id = out.get("id") if isinstance(out, dict) else None
        if not isinstance(job_id, str) or not job_id or len(job_id) > 200:
            raise RunPodError("RunPod /run answered without a job id")
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        out = self._call("status", f"/status/{_path_id(job_id)}", None, idempotent=True)
        if not isinstance(out, dict):
            raise RunPodError("RunPod /status answered with something that is not an object")
        return out

    def cancel(self, job_id: str) -> None:
        self._call("cancel", f"/cancel/{_path_id(job_id)}", None, idempotent=True)

    def _call(self, op: str, path: str, body: Any, *, idempotent: bool) -> Any:
        data = json.dumps(body).encode() if body is not None else b"{}"
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        attempt = 0
        while True:
            self.limits[op].acquire()
            self.calls[op] = self.calls.get(op, 0) + 1
            retry_after: float | None = None
            try:
                resp = self.http.request(
                    "POST",
                    self.base_url + path,
                    body=data,
                    headers=headers,
                    timeout=urllib3.Timeout(connect=min(5.0, self.timeout_s), read=self.timeout_s),
                    preload_content=False,
                )
            except (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.NewConnectionError) as e:
                reason = f"cannot connect to RunPod ({type(e).__name__})"
            except urllib3.exceptions.MaxRetryError as e:
                if isinstance(e.reason, urllib3.exceptions.ReadTimeoutError) and not idempotent:
                    raise AmbiguousSubmit("RunPod did not answer /run in time; the job may exist") from None
                reason = f"cannot reach RunPod ({type(e.reason).__name__})"
            except urllib3.exceptions.ReadTimeoutError:
                if not idempotent:
                    raise AmbiguousSubmit("RunPod did not answer /run in time; the job may exist") from None
                reason = "RunPod did not answer in time"
            except urllib3.exceptions.HTTPError as e:
                if not idempotent:
                    raise AmbiguousSubmit(f"the /run call broke off ({type(e).__name__})") from None
                reason = f"RunPod call failed ({type(e).__name__})"
            else:
                try:
                    raw = resp.read(MAX_RESPONSE_BYTES + 1, decode_content=True)
                finally:
                    resp.release_conn()
                status = resp.status
                if 200 <= status < 300:
                    if len(raw) > MAX_RESPONSE_BYTES:
                        raise RunPodError("RunPod's answer is larger than the client accepts")
                    try:
                        return json.loads(raw or b"{}")
                    except ValueError:
                        raise RunPodError("RunPod answered with something that is not JSON") from None
                if status not in RETRY_STATUSES:
                    err_cls = AmbiguousSubmit if (status >= 500 and not idempotent) else RunPodError
                    err = err_cls(f"RunPod {op} answered HTTP {status}")
                    err.retryable = status >= 500 or status in (408, 409)
                    raise err
                reason = f"RunPod {op} answered HTTP {status}"
                retry_after = _retry_after(resp.headers.get("Retry-After"))
            attempt += 1
            if attempt > self.retries:
                raise RunPodError(f"{reason}, after {self.retries} retries")
            delay = self.rng.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)))
            self.sleep(max(delay, retry_after or 0.0))


def _path_id(job_id: str) -> str:
    if (
        not isinstance(job_id, str)
        or not job_id
        or len(job_id) > 200
        or not all(c.isalnum() or c in "-_" for c in job_id)
    ):
        raise RunPodError("not a RunPod job id")
    return job_id


def _retry_after(raw: str | None) -> float | None:
    try:
        return min(60.0, max(0.0, float(raw))) if raw else None
    except ValueError:
        return None
