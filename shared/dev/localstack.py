"""The embedded local stack (DESIGN.md, "Local embedded stack"): moto's server on 127.0.0.1 for the
AWS APIs, reached with real boto3, and the RunPod worker under the runpod SDK's own local API
(`--rp_serve_api`). Used by `se demo` and by the tests; nothing here runs in AWS or on RunPod.

    with MotoServer() as moto, LocalRunpodWorker(model_dir) as worker:
        s3 = moto.client("s3")
        body = worker.runsync({"task": "clip_text", "texts": ["a dog"]})

The worker starts from a clean environment (PATH, HOME, locale, TMPDIR and the worker's own
settings given to it), so it holds no AWS credentials (as on RunPod, it only ever sees presigned
URLs) and no RunPod variables that would make the SDK poll a real endpoint. It gets
ALLOW_PRIVATE_URLS=1 because moto's presigned URLs point at 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.settings import REPO_ROOT

REGION = "us-east-1"
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
# moto accepts any key pair; these are placeholders, not credentials
_MOTO_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def worker_env(model_dir: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a worker subprocess: PATH, HOME, locale and TMPDIR from this one,
    MODEL_DIR, hubs offline, then `extra`. Nothing else is inherited (no AWS or RunPod variables)."""
    env = {k: v for k, v in os.environ.items() if k in _INHERITED}
    env.update(
        MODEL_DIR=str(model_dir),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class MotoServer:
    """moto's server (S3, SQS, DynamoDB, ...) on a loopback port, for the life of a `with`.

    By default a separate process (`python -m shared.dev.moto_server`: moto's server as released, one
    DynamoDB request at a time, see that module), as AWS is: its request handling does not compete with
    the functions for this process's GIL, and each server has its own state. `in_process=True` serves
    the same app from a thread here instead (faster to start; moto keeps one backend per process, so
    every in-process server of a process shares its state)."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *, in_process: bool = False) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.endpoint = f"http://{host}:{self.port}"
        # one boto3 session for every client of this server: a session loads each service's JSON model
        # once (~0.3 s a client otherwise); sessions are not thread-safe, clients are
        self._session: Any = None
        self._session_lock = threading.Lock()
        self.in_process = in_process
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None

    def start(self, startup_s: float = 60.0) -> MotoServer:
        if self.in_process:
            from shared.dev.moto_server import make_server

            self._server = make_server(self.host, self.port)
            self._thread = threading.Thread(target=self._server.serve, name="moto", daemon=True)
            self._thread.start()
            return self
        import requests

        argv = [sys.executable, "-m", "shared.dev.moto_server", "-H", self.host, "-p", str(self.port)]
        path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + startup_s
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto's server exited with {self._proc.returncode} at start")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{self.endpoint}/moto-api/data.json", timeout=2).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto's server not ready after {startup_s:g} s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config

        with self._session_lock:
            if self._session is None:
                self._session = boto3.session.Session()
            return self._session.client(
                service,
                endpoint_url=self.endpoint,
                region_name=REGION,
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
                **_MOTO_KEYS,
            )

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WorkerFailed(RuntimeError):
    """The local worker exited or did not come up; the message ends with its log's tail."""


class LocalRunpodWorker:
    """`python -m handlers.runpod_worker --rp_serve_api` as a subprocess on a loopback port."""

    def __init__(
        self,
        model_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: Path | None = None,
        startup_s: float = 240.0,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.base = f"http://{host}:{self.port}"
        self.startup_s = startup_s
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="runpod-worker-", suffix=".log")[1])
        self.env = worker_env(model_dir, **{"ALLOW_PRIVATE_URLS": "1", **(env or {})})
        self.proc: subprocess.Popen | None = None

    def start(self) -> LocalRunpodWorker:
        import requests

        argv = [sys.executable, "-m", "handlers.runpod_worker", "--rp_serve_api"]
        argv += ["--rp_api_host", self.host, "--rp_api_port", str(self.port)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self.startup_s
        while True:
            if self.proc.poll() is not None:
                raise WorkerFailed(f"worker exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{self.base}/docs", timeout=2).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise WorkerFailed(f"worker not ready after {self.startup_s:g} s:\n{self.log_tail()}")
            time.sleep(0.3)

    def runsync(self, job_input: Any, timeout: float = 300) -> dict[str, Any]:
        """POST /runsync; the SDK's body: {"id", "status": COMPLETED|FAILED, "output"|"error"}."""
        import requests

        resp = requests.post(f"{self.base}/runsync", json={"input": job_input}, timeout=timeout)
        resp.raise_for_status()
        return resp.json()

    @staticmethod
    def error_of(body: Mapping[str, Any]) -> dict[str, Any] | None:
        """The worker's `{"code", "message", ...}` from a failed job's body (None when it completed)."""
        err = body.get("error")
        if err is None and isinstance(body.get("output"), dict):
            err = body["output"].get("error")
        if err is None:
            return None
        if isinstance(err, str):
            with contextlib.suppress(ValueError):
                err = json.loads(err)
        return err if isinstance(err, dict) else {"code": "unknown", "message": str(err)}

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> LocalRunpodWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
