"""The one RunPod serverless client: POST /run, /status/{id}, /cancel/{id} over urllib3.

The same client reaches production (`https://api.runpod.ai/v2/{endpoint_id}`) and the local worker
under the SDK's local API (its base URL); status is a POST, which both serve.

- /status and /cancel are retried with exponential backoff and full jitter on 429, 502, 503, 504 and
  connection errors; RUNPOD_RETRIES bounds them.
- /run is not idempotent (RunPod has no idempotency key). It is retried only where the request
  provably created no job: the connection was never made, or RunPod answered 429 (its rate limit and
  its full-queue refusal). Anything else that may have reached RunPod (a 5xx, 502/503/504 from its
  edge included, a read timeout, a broken or id-less 2xx) raises `AmbiguousSubmit`, and the caller
  leaves its claimed dispatch for the sweeper, which waits out the job's TTL before dispatching again.
- A token bucket per operation paces this process. RunPod's limits are per endpoint, so the deployed
  rates are each function's share: template.yaml bounds how many containers can dispatch and gives
  them RUNPOD_RUN_PER_S / RUNPOD_STATUS_PER_S (docs/runpod-limits.md holds the inequality).
- A 429 pauses the operation's bucket for the whole process (every thread of the container) for
  Retry-After seconds, or for the retry's backoff ceiling when RunPod sends none.
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
from shared.pipeline.policy import full_jitter

RETRY_STATUSES = {429, 502, 503, 504}
# /run: only what RunPod answers before it queues anything. A 502/503/504 may come from the edge in
# front of RunPod after the origin took the job, so it is ambiguous like a read timeout.
RUN_RETRY_STATUSES = {429}
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class RunPodError(EmbeddingError):
    code = "runpod_error"
    status = 502
    retryable = True


class AmbiguousSubmit(RunPodError):
    """/run may or may not have created a job: never POST it again for this dispatch."""

    code = "runpod_ambiguous_submit"


class RateLimiter:
    """A token bucket: `rate` requests per second, bursts up to `burst`; `pause` stops it for everyone."""

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
        self.resume_at = float("-inf")

    def acquire(self) -> None:
        while True:
            with self.lock:
                now = self.clock()
                if now < self.resume_at:
                    wait = self.resume_at - now
                else:
                    self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
                    self.last = now
                    if self.tokens >= 1 - 1e-9:  # float error must not leave a token just short of 1
                        self.tokens = max(0.0, self.tokens - 1)
                        return
                    wait = (1 - self.tokens) / self.rate
            self.waited += wait
            self.sleep(wait)

    def pause(self, seconds: float) -> None:
        """No request leaves for `seconds` (a later pause never shortens an earlier one); then the bucket
        starts empty, so the threads that waited go out one token at a time, not as a burst."""
        with self.lock:
            self.resume_at = max(self.resume_at, self.clock() + max(0.0, seconds))
            self.tokens = 0.0
            self.last = self.resume_at


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
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    calls: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.http = urllib3.PoolManager(num_pools=4, maxsize=16, retries=False)
        pace = {"clock": self.clock, "sleep": self.sleep}
        self.limits = {
            "run": RateLimiter(self.run_per_s, **pace),
            "status": RateLimiter(self.status_per_s, **pace),
            # RunPod allows /cancel a tenth of /run (100 vs 1,000 per 10 s)
            "cancel": RateLimiter(self.run_per_s / 10, burst=1, **pace),
        }

    def run(self, job_input: Mapping[str, Any], *, webhook: str, policy: Mapping[str, int]) -> str:
        """Submit one job; returns its id."""
        body = {"input": job_input, "webhook": webhook, "policy": dict(policy)}
        out = self._call("run", "/run", body, idempotent=False)
        job_id = out.get("id") if isinstance(out, dict) else None
        if not isinstance(job_id, str) or not job_id or len(job_id) > 200:
            # a 2xx: RunPod took the request, and a job may exist that this answer does not name
            raise AmbiguousSubmit("RunPod /run answered without a job id; the job may exist")
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
        retry_statuses = RETRY_STATUSES if idempotent else RUN_RETRY_STATUSES
        attempt = 0
        while True:
            self.limits[op].acquire()
            self.calls[op] = self.calls.get(op, 0) + 1
            retry_after: float | None = None
            throttled = False
            try:
                resp = self.http.request(
                    "POST",
                    self.base_url + path,
                    body=data,
                    headers=headers,
                    timeout=urllib3.Timeout(connect=min(5.0, self.timeout_s), read=self.timeout_s),
                    preload_content=False,
                )
                try:
                    raw = resp.read(MAX_RESPONSE_BYTES + 1, decode_content=True)
                finally:
                    resp.release_conn()
            except urllib3.exceptions.HTTPError as e:
                cause = e.reason if isinstance(e, urllib3.exceptions.MaxRetryError) else e
                # a connection that was never made carried no request (NewConnectionError, a refused
                # or unresolvable host, is a ConnectTimeoutError too): safe to send again, /run included
                if not isinstance(cause, urllib3.exceptions.ConnectTimeoutError):
                    if not idempotent:
                        raise AmbiguousSubmit(
                            f"the /run call broke off ({type(cause).__name__}); the job may exist"
                        ) from None
                    if isinstance(cause, urllib3.exceptions.ReadTimeoutError):
                        reason = "RunPod did not answer in time"
                    else:
                        reason = f"RunPod call failed ({type(cause).__name__})"
                else:
                    reason = f"cannot connect to RunPod ({type(cause).__name__})"
            else:
                status = resp.status
                if 200 <= status < 300:
                    # RunPod took the request: an answer the client cannot read leaves /run ambiguous
                    unreadable = AmbiguousSubmit if not idempotent else RunPodError
                    if len(raw) > MAX_RESPONSE_BYTES:
                        raise unreadable("RunPod's answer is larger than the client accepts")
                    try:
                        return json.loads(raw or b"{}")
                    except ValueError:
                        raise unreadable("RunPod answered with something that is not JSON") from None
                if status not in retry_statuses:
                    err_cls = AmbiguousSubmit if (status >= 500 and not idempotent) else RunPodError
                    more = "; the job may exist" if err_cls is AmbiguousSubmit else ""
                    err = err_cls(f"RunPod {op} answered HTTP {status}{more}")
                    err.retryable = status >= 500 or status in (408, 409)
                    raise err
                reason = f"RunPod {op} answered HTTP {status}"
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                throttled = status == 429
            attempt += 1
            ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
            if throttled:
                # RunPod's limit is the endpoint's, not this call's: every thread of the process waits in
                # acquire() until the pause ends, this one included (even when it gives up now). Without
                # Retry-After, equal jitter: containers refused together do not come back together.
                pause = retry_after if retry_after is not None else ceiling * self.rng.uniform(0.5, 1.0)
                self.limits[op].pause(pause)
            if attempt > self.retries:
                raise RunPodError(f"{reason}, after {self.retries} retries")
            if not throttled:
                delay = full_jitter(attempt, self.backoff_base_s, self.backoff_max_s, self.rng)
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
