"""The RunPod client against a scripted local HTTP server: retries, backoff, the ambiguous /run rule,
rate limiting, and no key in any error."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.pipeline.runpod_client import AmbiguousSubmit, RateLimiter, RunPodClient, RunPodError

pytestmark = pytest.mark.unit  # a loopback server only

KEY = "rp-secret-key-123"


class Script:
    def __init__(self) -> None:
        self.answers: list[tuple[int, dict]] = []
        self.seen: list[tuple[str, dict, str]] = []


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            script.seen.append((self.path, body, self.headers.get("Authorization", "")))
            status, out = (
                script.answers.pop(0) if script.answers else (200, {"id": "job-1", "status": "IN_QUEUE"})
            )
            data = json.dumps(out).encode()
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", script
    srv.shutdown()
    srv.server_close()


def client(base: str, **kw) -> tuple[RunPodClient, list[float]]:
    slept: list[float] = []
    return RunPodClient(base, KEY, sleep=slept.append, **kw), slept


def test_run_sends_input_webhook_policy_and_bearer_key(server) -> None:
    base, script = server
    c, _ = client(base)
    assert (
        c.run({"task": "x"}, webhook="https://cb/?token=t", policy={"executionTimeout": 1000, "ttl": 2000})
        == "job-1"
    )
    path, body, auth = script.seen[0]
    assert path == "/run" and auth == f"Bearer {KEY}"
    assert body == {
        "input": {"task": "x"},
        "webhook": "https://cb/?token=t",
        "policy": {"executionTimeout": 1000, "ttl": 2000},
    }


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_statuses_are_retried_with_backoff(server, status: int) -> None:
    base, script = server
    script.answers = [(status, {}), (status, {}), (200, {"id": "job-2"})]
    c, slept = client(base, retries=3, backoff_base_s=1.0)
    assert c.run({}, webhook="https://cb", policy={}) == "job-2"
    assert len(script.seen) == 3 and len(slept) == 2
    assert 0 <= slept[0] <= 1.0 and 0 <= slept[1] <= 2.0  # full jitter under the doubling cap


def test_retries_are_bounded(server) -> None:
    base, script = server
    script.answers = [(503, {})] * 10
    c, _ = client(base, retries=2)
    with pytest.raises(RunPodError) as e:
        c.status("job-1")
    assert len(script.seen) == 3 and e.value.retryable
    assert KEY not in str(e.value)


def test_a_500_on_run_is_ambiguous_and_never_resent(server) -> None:
    base, script = server
    script.answers = [(500, {})]
    c, _ = client(base, retries=5)
    with pytest.raises(AmbiguousSubmit):
        c.run({}, webhook="https://cb", policy={})
    assert len(script.seen) == 1


def test_4xx_is_not_retried(server) -> None:
    base, script = server
    script.answers = [(401, {"error": "bad key"})]
    c, _ = client(base, retries=5)
    with pytest.raises(RunPodError) as e:
        c.run({}, webhook="https://cb", policy={})
    assert len(script.seen) == 1 and not e.value.retryable and "401" in e.value.message


def test_connection_refused_is_retried_then_fails() -> None:
    c, slept = client("http://127.0.0.1:9", retries=2)
    with pytest.raises(RunPodError):
        c.status("job-1")
    assert len(slept) == 2


def test_job_ids_are_checked_before_they_reach_a_path(server) -> None:
    base, script = server
    c, _ = client(base)
    for bad in ("../run", "a/b", "", "x" * 300, "a?b"):
        with pytest.raises(RunPodError):
            c.status(bad)
    assert script.seen == []


def test_rate_limiter_spaces_calls() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    rl = RateLimiter(10.0, burst=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(12):
        rl.acquire()
    assert now[0] == pytest.approx(1.0, abs=0.01)  # 2 in the burst, then 10 per second
