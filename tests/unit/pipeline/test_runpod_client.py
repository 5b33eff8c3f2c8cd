"""The RunPod client against a scripted local HTTP server: retries, backoff, the ambiguous /run rule,
rate limiting, the process-wide pause on 429, no key in any error; and the cluster-wide budget that
template.yaml and the settings give RunPod's per-endpoint limits (docs/runpod-limits.md)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.pipeline.runpod_client import AmbiguousSubmit, RateLimiter, RunPodClient, RunPodError
from shared.settings import REPO_ROOT

pytestmark = pytest.mark.unit  # a loopback server only

KEY = "rp-secret-key-123"


class Clock:
    """A fake monotonic clock that sleeping moves on; `slept` lists every wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


class Script:
    """What the server answers, in order: (status, body) or (status, body, headers), or a raw
    (status, bytes) body; `seen` records each request and `at` the fake clock's time it arrived."""

    def __init__(self) -> None:
        self.answers: list[tuple] = []
        self.seen: list[tuple[str, dict, str]] = []
        self.at: list[float] = []
        self.clock: Clock | None = None
        self.delay_s = 0.0


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            script.seen.append((self.path, body, self.headers.get("Authorization", "")))
            if script.clock is not None:
                script.at.append(script.clock.now)
            answer = script.answers.pop(0) if script.answers else (200, {"id": "job-1", "status": "IN_QUEUE"})
            status, out, headers = (*answer, {})[:3]
            data = out if isinstance(out, bytes) else json.dumps(out).encode()
            time.sleep(script.delay_s)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client timed out
                self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", script
    srv.shutdown()
    srv.server_close()


def client(base: str, script: Script | None = None, **kw) -> tuple[RunPodClient, list[float]]:
    clock = Clock()
    if script is not None:
        script.clock = clock
    return RunPodClient(base, KEY, sleep=clock.sleep, clock=clock, **kw), clock.slept


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


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_statuses_are_retried_with_backoff_on_status(server, status: int) -> None:
    base, script = server
    script.answers = [(status, {}), (status, {}), (200, {"id": "job-2", "status": "IN_QUEUE"})]
    c, slept = client(base, retries=3, backoff_base_s=1.0)
    assert c.status("job-2")["id"] == "job-2"
    assert len(script.seen) == 3 and len(slept) == 2
    assert 0 <= slept[0] <= 1.0 and 0 <= slept[1] <= 2.0  # full jitter under the doubling cap


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_on_run_is_ambiguous_and_never_resent(server, status: int) -> None:
    """502/504 may come from RunPod's edge after the origin queued the job, and nothing shows that a
    503 is answered before it: any 5xx on /run may have made a job, so it is never POSTed again."""
    base, script = server
    script.answers = [(status, {})]
    c, slept = client(base, retries=5)
    with pytest.raises(AmbiguousSubmit) as e:
        c.run({}, webhook="https://cb", policy={})
    assert len(script.seen) == 1 and slept == [] and e.value.retryable
    assert str(status) in e.value.message and KEY not in str(e.value)


def test_a_429_on_run_is_retried_after_retry_after(server) -> None:
    """RunPod answers 429 before it queues anything (its rate limit, its full queue): safe to resend."""
    base, script = server
    script.answers = [(429, {}, {"Retry-After": "3"}), (200, {"id": "job-2"})]
    c, _ = client(base, script, retries=3)
    assert c.run({}, webhook="https://cb", policy={}) == "job-2"
    assert len(script.seen) == 2 and script.at[1] - script.at[0] >= 3.0


def test_a_429_pauses_the_whole_process_not_only_its_caller(server) -> None:
    """After a 429, the next call of the operation (any thread of the container) waits out
    Retry-After before it sends, even when the refused call itself gave up."""
    base, script = server
    script.answers = [(429, {}, {"Retry-After": "5"})]
    c, _ = client(base, script, retries=0)
    with pytest.raises(RunPodError) as e:
        c.run({}, webhook="https://cb", policy={})
    assert not isinstance(e.value, AmbiguousSubmit) and "429" in e.value.message
    assert c.run({}, webhook="https://cb", policy={}) == "job-1"
    assert script.at[1] - script.at[0] >= 5.0
    c.status("job-1")  # /status has its own limit at RunPod, and its own bucket here: no wait
    assert script.at[2] == script.at[1]


def test_a_429_pause_holds_every_thread() -> None:
    """Threads that are already waiting in the bucket stay behind the pause, then leave one by one."""
    rl = RateLimiter(10.0, burst=10)
    rl.pause(0.3)
    t0 = time.monotonic()
    done: list[float] = []
    threads = [
        threading.Thread(target=lambda: (rl.acquire(), done.append(time.monotonic()))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(done) == 3 and min(done) - t0 >= 0.29
    assert max(done) - t0 >= 0.29 + 0.2 - 0.05  # the bucket restarts empty: 10/s after the pause


@pytest.mark.parametrize("attempt_ceiling", [(1, 0.5), (3, 2.0)])
def test_a_429_without_retry_after_pauses_for_the_backoff_ceiling(server, attempt_ceiling) -> None:
    attempt, ceiling = attempt_ceiling
    base, script = server
    script.answers = [(429, {})] * attempt
    c, _ = client(base, script, retries=attempt - 1, backoff_base_s=0.5)
    with pytest.raises(RunPodError):
        c.status("job-1")
    c.status("job-1")
    # equal jitter under the ceiling, then one token of the emptied bucket (1/100 s)
    assert ceiling / 2 <= script.at[-1] - script.at[-2] <= ceiling + 0.01 + 1e-9


def test_the_pause_never_shortens_and_the_bucket_restarts_empty() -> None:
    clock = Clock()
    rl = RateLimiter(2.0, burst=2, clock=clock, sleep=clock.sleep)
    rl.pause(10)
    rl.pause(1)  # a shorter Retry-After from another thread does not end the longer pause
    t0 = clock.now
    for _ in range(3):
        rl.acquire()
    assert clock.now - t0 == pytest.approx(10 + 1.5)  # 10 s paused, then 2/s from an empty bucket


def test_retries_are_bounded(server) -> None:
    base, script = server
    script.answers = [(503, {})] * 10
    c, _ = client(base, retries=2)
    with pytest.raises(RunPodError) as e:
        c.status("job-1")
    assert len(script.seen) == 3 and e.value.retryable
    assert KEY not in str(e.value)


@pytest.mark.parametrize("answer", [b"<html>502 Bad Gateway</html>", b'{"status": "IN_QUEUE"}', b"[]"])
def test_a_2xx_on_run_without_a_readable_id_is_ambiguous(server, answer: bytes) -> None:
    """RunPod took the request; a job may exist that the answer does not name."""
    base, script = server
    script.answers = [(200, answer)]
    c, _ = client(base, retries=5)
    with pytest.raises(AmbiguousSubmit):
        c.run({}, webhook="https://cb", policy={})
    assert len(script.seen) == 1


def test_a_read_timeout_on_run_is_ambiguous_and_on_status_is_retried(server) -> None:
    base, script = server
    script.delay_s = 0.3
    c, _ = client(base, retries=1, timeout_s=0.1)
    with pytest.raises(AmbiguousSubmit):
        c.run({}, webhook="https://cb", policy={})
    assert len(script.seen) == 1
    with pytest.raises(RunPodError) as e:
        c.status("job-1")
    assert not isinstance(e.value, AmbiguousSubmit) and len(script.seen) == 3


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


def test_connection_refused_on_run_is_retried_not_ambiguous() -> None:
    """No connection, no request: /run is sent again, and giving up is a plain failure."""
    c, slept = client("http://127.0.0.1:9", retries=2)
    with pytest.raises(RunPodError) as e:
        c.run({}, webhook="https://cb", policy={})
    assert not isinstance(e.value, AmbiguousSubmit) and len(slept) == 2


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


# ---------------------------------------------------------------- the cluster-wide budget

# RunPod's documented limits per endpoint: requests per 10 s, and requests in flight
# (docs.runpod.io/serverless/endpoints/send-requests, "Rate limits and quotas")
RUNPOD_PER_10S = {"run": 1000, "status": 2000, "cancel": 100}
RUNPOD_CONCURRENT = {"run": 200, "status": 400}
# the share the deployed functions may use at most: half, leaving room for containers that start with
# a full bucket, for RunPod's window alignment and for people using the same endpoint. /cancel is
# best effort (only jobs past their deadline; a refusal is swallowed), so it may use the whole limit.
SHARE = {"run": 0.5, "status": 0.5, "cancel": 1.0}


def _template() -> dict:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict:
        if isinstance(node, yaml.ScalarNode):
            value: object = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}

    Loader.add_multi_constructor("!", tag)
    return yaml.load((REPO_ROOT / "template.yaml").read_text(), Loader=Loader)  # a SafeLoader


def _runpod_callers(tpl: dict) -> dict[str, tuple[int, RunPodClient]]:
    """Every function that holds a RunPod client (it is given RUNPOD_ENDPOINT_URL): the most containers
    it can run at once (its reserved concurrency; a parameter at its MaxValue, the most a deploy
    accepts) and the client its settings build (the template's RUNPOD_* or the settings' defaults)."""
    from shared.pipeline.settings import PipelineSettings

    out = {}
    for name, res in tpl["Resources"].items():
        props = res.get("Properties", {})
        env = props.get("Environment", {}).get("Variables", {})
        if res["Type"] != "AWS::Serverless::Function" or "RUNPOD_ENDPOINT_URL" not in env:
            continue
        assert "ReservedConcurrentExecutions" in props, f"{name}: nothing bounds its containers"
        limit = props["ReservedConcurrentExecutions"]
        if isinstance(limit, dict):
            param = tpl["Parameters"][limit["Ref"]]
            assert "MaxValue" in param, f"{limit['Ref']}: a deploy could raise it without bound"
            limit = param["MaxValue"]
        run_per_s = float(env.get("RUNPOD_RUN_PER_S", PipelineSettings.run_per_s))
        status_per_s = float(env.get("RUNPOD_STATUS_PER_S", PipelineSettings.status_per_s))
        out[name] = (
            int(limit),
            RunPodClient("https://api.runpod.ai/v2/x", KEY, run_per_s=run_per_s, status_per_s=status_per_s),
        )
    return out


def test_the_deployed_functions_stay_under_runpods_per_endpoint_limits() -> None:
    """Sum over the functions: containers x (burst + 10 s x rate) <= RunPod's limit x SHARE, for each
    operation. A bucket of rate r and burst b lets at most b + 10 r requests out in any 10 s."""
    callers = _runpod_callers(_template())
    assert set(callers) == {"OnUploadFunction", "ReprocessFunction", "SweeperFunction"}
    for op, limit in RUNPOD_PER_10S.items():
        worst = sum(n * (c.limits[op].burst + 10 * c.limits[op].rate) for n, c in callers.values())
        assert worst <= limit * SHARE[op], (op, worst)
    # the numbers docs/runpod-limits.md states
    run = {name: n * (c.limits["run"].burst + 10 * c.limits["run"].rate) for name, (n, c) in callers.items()}
    assert run == {"OnUploadFunction": 220, "ReprocessFunction": 220, "SweeperFunction": 22}


def test_requests_in_flight_stay_under_runpods_concurrency_limits() -> None:
    """One request in flight per thread: on_upload and reprocess handle their messages one by one
    (Powertools' BatchProcessor), the sweeper polls with Pipeline.sweep's workers."""
    import inspect

    from shared.pipeline.service import Pipeline

    threads = {"SweeperFunction": inspect.signature(Pipeline.sweep).parameters["workers"].default}
    callers = _runpod_callers(_template())
    in_flight = sum(n * threads.get(name, 1) for name, (n, _) in callers.items())
    assert in_flight == 44
    for op, limit in RUNPOD_CONCURRENT.items():
        assert in_flight <= limit * SHARE[op], op
