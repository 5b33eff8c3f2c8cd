"""A Worker over fake models whose downloads come from local files and whose uploads are captured."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

from shared.errors import FetchError, PayloadTooLarge
from shared.worker.models import Models
from shared.worker.settings import WorkerSettings
from shared.worker.worker import Worker
from tests.unit.worker.fakes import FakeClip, FakeVideoMAE, FakeWav2Vec2, FakeWhisper

SECRET = "X-Amz-Signature=0123SECRET"


def url(name: str) -> str:
    return f"https://bucket.example.com/{name}?{SECRET}"


class Harness:
    """A Worker whose downloads come from local files and whose uploads are captured."""

    def __init__(self, files: dict[str, Path], env: dict[str, str] | None = None) -> None:
        settings = WorkerSettings.from_env(env or {}, cuda_available=lambda: False)
        self.models = Models(
            clip=FakeClip(), whisper=FakeWhisper(), videomae=FakeVideoMAE(), wav2vec2=FakeWav2Vec2()
        )
        self.worker = Worker(settings, self.models)
        self.files = files
        self.uploads: dict[str, tuple[bytes, str]] = {}
        self.fail_upload: set[str] = set()
        self.downloads: list[str] = []
        self.gate: threading.Event | None = None  # when set: downloads wait for it to open
        self.worker.download = self._download
        self.worker.upload = self._upload

    def _download(self, source_url: str, dest: Path, max_bytes: int) -> Path:
        self.downloads.append(source_url)
        if self.gate is not None and not self.gate.wait(30):
            raise FetchError("the test's download gate never opened")
        name = source_url.split("?")[0].rsplit("/", 1)[-1]
        src = self.files[name]
        if src.stat().st_size > max_bytes:
            raise PayloadTooLarge(f"object is over the limit of {max_bytes} bytes")
        out = dest / f"download-{name}"
        shutil.copy(src, out)
        return out

    def _upload(self, put_url: str, data: bytes, content_type: str) -> None:
        name = put_url.split("?")[0].rsplit("/", 1)[-1]
        if name in self.fail_upload:
            raise FetchError(f"PUT bucket.example.com: HTTP 503 for {put_url}")
        self.uploads[name] = (data, content_type)

    def run(self, job_input: dict) -> dict:
        return asyncio.run(self.worker.handle({"id": "job-1", "input": job_input}))


def embed_job(source: str, modality: str, channels: list[str], **extra) -> dict:
    return {
        "task": "embed_item",
        "item": {"owner_id": "own", "item_id": "it", "modality": modality},
        "source_url": url(source),
        "channels": channels,
        "outputs": {c: url(f"{c}.out") for c in channels},
        **extra,
    }
