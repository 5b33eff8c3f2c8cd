"""Helpers and fixtures for the worker's subprocess tests: a local object server (GET sources, capture
PUTs), the synthetic media it serves, and ONE RunPod worker started per session under the SDK's local API."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shared.dev import localstack
from shared.dev.localstack import LocalRunpodWorker, WorkerFailed
from shared.dev.media import (
    make_audio,
    make_image_bytes,
    make_video,
    mux_speech_into_mp4,
    png_with_claimed_size,
    read_wav_16k,
    speech_wav,
    truncated,
)
from shared.settings import REPO_ROOT

# Sentences espeak-ng + Whisper tiny.en get right (tiny.en hears "the quick brown fox" as "round-fark").
SPEECH = "please remember to water the plants every morning"
AUDIO_SPEECH = "hello world this is a test of the speech recognition system"
# Presigned URLs carry credentials in their query; none of this may ever show up in logs or outputs.
SECRET = "X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=5ec7e75ec7e7"
MAX_DOWNLOAD_BYTES = 3_000_000
STARTUP_S = 240


class ObjectStore:
    """What the local server holds: sources to GET, and every PUT it received."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.uploads: dict[str, tuple[bytes, str]] = {}
        self.lock = threading.Lock()


def _handler(store: ObjectStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep pytest output quiet
            pass

        def _path(self) -> str:
            return self.path.split("?", 1)[0]

        def do_GET(self) -> None:
            with store.lock:
                obj = store.objects.get(self._path())
            if obj is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body, ctype = obj
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with store.lock:
                store.uploads[self._path()] = (body, self.headers.get("Content-Type", ""))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@dataclass
class MediaServer:
    base: str
    store: ObjectStore

    def url(self, path: str) -> str:
        """A presigned-looking URL for `path` (the query mimics S3's signature parameters)."""
        return f"{self.base}{path}?{SECRET}"

    def put(self, path: str, data: bytes, ctype: str = "application/octet-stream") -> str:
        with self.store.lock:
            self.store.objects[path] = (data, ctype)
        return self.url(path)

    def upload(self, path: str) -> tuple[bytes, str]:
        with self.store.lock:
            return self.store.uploads[path]

    def uploaded(self, path: str) -> bool:
        with self.store.lock:
            return path in self.store.uploads


@pytest.fixture(scope="session")
def media_server() -> Iterator[MediaServer]:
    store = ObjectStore()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(store))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield MediaServer(f"http://127.0.0.1:{server.server_address[1]}", store)
    server.shutdown()
    server.server_close()


@dataclass
class Media:
    """Paths on the media server, and what was spoken in the speech files."""

    speech_mp4: str = "/src/speech.mp4"
    speech_wav: str = "/src/speech.wav"
    tone_m4a: str = "/src/tone.m4a"
    photo_png: str = "/src/photo.png"
    panorama_jpg: str = "/src/panorama.jpg"
    tiny_png: str = "/src/tiny.png"
    huge_claim_png: str = "/src/huge-claim.png"
    truncated_mp4: str = "/src/truncated.mp4"
    empty_mp4: str = "/src/empty.mp4"
    oversized_bin: str = "/src/oversized.mp4"
    missing: str = "/src/does-not-exist.mp4"
    speech_seconds: float = 0.0
    audio_speech_seconds: float = 0.0
    bytes: dict[str, bytes] = field(default_factory=dict)


@pytest.fixture(scope="session")
def media(media_server: MediaServer, tmp_path_factory: pytest.TempPathFactory) -> Media:
    d = tmp_path_factory.mktemp("worker-media")
    m = Media()
    speech = mux_speech_into_mp4(d / "speech.mp4", SPEECH, size=(64, 48), fps=8)
    m.speech_seconds = speech.frame_times[-1]
    wav = speech_wav(d / "speech.wav", AUDIO_SPEECH)
    m.audio_speech_seconds = len(read_wav_16k(wav)) / 16000
    make_audio(d / "tone.m4a", 2.0, 330.0)
    full = make_video(d / "full.mp4", seconds=3, fps=10, size=(96, 64), with_audio=True)
    truncated(full.path, 0.3, dest=d / "truncated.mp4")
    files = {
        m.speech_mp4: ((d / "speech.mp4").read_bytes(), "video/mp4"),
        m.speech_wav: (wav.read_bytes(), "audio/wav"),
        m.tone_m4a: ((d / "tone.m4a").read_bytes(), "audio/mp4"),
        m.photo_png: (make_image_bytes((48, 32)), "image/png"),
        m.panorama_jpg: (make_image_bytes((300, 60), fmt="JPEG"), "image/jpeg"),
        m.tiny_png: (make_image_bytes((1, 1)), "image/png"),
        m.huge_claim_png: (png_with_claimed_size(20000, 20000), "image/png"),
        m.truncated_mp4: ((d / "truncated.mp4").read_bytes(), "video/mp4"),
        m.empty_mp4: (b"", "video/mp4"),
        m.oversized_bin: (b"\0" * (MAX_DOWNLOAD_BYTES + 1), "video/mp4"),
    }
    for path, (data, ctype) in files.items():
        media_server.put(path, data, ctype)
        m.bytes[path] = data
    return m


def worker_env(model_dir: Path, **extra: str) -> dict[str, str]:
    """shared.dev.localstack's clean worker environment, pinned to one CPU thread for test stability."""
    return localstack.worker_env(
        model_dir, DEVICE="cpu", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **extra
    )


class ApiWorker(LocalRunpodWorker):
    """The product's local-stack worker (shared.dev.localstack) with assertions for tests."""

    def output(self, job_input: Any, timeout: float = 180) -> dict[str, Any]:
        """The output of a job that must complete."""
        body = self.runsync(job_input, timeout)
        assert body["status"] == "COMPLETED", body
        return body["output"]

    def error(self, job_input: Any) -> dict[str, Any]:
        """The decoded `{"code", "message", ...}` of a job that must fail."""
        body = self.runsync(job_input)
        assert body["status"] == "FAILED", body
        assert isinstance(body["error"], str), body  # the SDK carries the worker's error JSON-encoded
        return self.error_of(body)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def api_worker(dev_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiWorker]:
    """`python -m handlers.runpod_worker --rp_serve_api` with every task and channel (the opt-in
    Qwen3-VL ones too), started once."""
    from shared import spec
    from shared.worker.requests import TASKS

    env = worker_env(
        dev_model_dir,
        WORKER_TASKS=",".join(TASKS),
        WORKER_CHANNELS=",".join(spec.RUNPOD_CHANNELS),
        QWEN3VL_MAX_TEXT_TOKENS="24",  # small, so a test caption can run over it
        ALLOW_PRIVATE_URLS="1",
        MAX_DOWNLOAD_BYTES=str(MAX_DOWNLOAD_BYTES),
        BATCH_WINDOW_MS="25",
    )
    log_path = tmp_path_factory.mktemp("worker-log") / "worker.log"
    worker = ApiWorker(dev_model_dir, env=env, log_path=log_path, startup_s=STARTUP_S)
    try:
        worker.start()
    except WorkerFailed as e:
        pytest.fail(str(e))
    try:
        yield worker
    finally:
        worker.stop()


@dataclass
class LocalRun:
    returncode: int
    output: str

    def result_line(self) -> str:
        match = re.search(r"Job result: (.*)", self.output)
        assert match, self.output[-3000:]
        return match.group(1)


def run_test_input(
    model_dir: Path, job_input: Any | None, *, cwd: Path = REPO_ROOT, timeout: float = 300, **env: str
) -> LocalRun:
    """`python -m handlers.runpod_worker --test_input '<json>'` (or ./test_input.json when None)."""
    args = [sys.executable, "-m", "handlers.runpod_worker"]
    if job_input is not None:
        args += ["--test_input", json.dumps({"input": job_input})]
    proc = subprocess.run(
        args,
        cwd=cwd,
        env=worker_env(model_dir, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        check=False,
    )
    return LocalRun(proc.returncode, proc.stdout.decode(errors="replace"))


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate on lower-cased words without punctuation."""
    ref = re.findall(r"[a-z']+", reference.lower())
    hyp = re.findall(r"[a-z']+", hypothesis.lower())
    dist = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, dist[0] = dist[0], i
        for j, h in enumerate(hyp, 1):
            prev, dist[j] = dist[j], min(dist[j] + 1, dist[j - 1] + 1, prev + (r != h))
    return dist[len(hyp)] / max(1, len(ref))
