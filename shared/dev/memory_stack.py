"""The orchestration's other two adapters in memory, for the state machine's unit tests (no sockets,
milliseconds): `MemoryStorage` (the S3 adapter's calls over a dict) and `ScriptedRunPod` (the RunPod
client's calls; a test decides what each job answers). With shared.dev.memory_ledger they run the real
Pipeline without moto. Never what makes a feature work: the integration tests run the same flows
through moto, the real handlers and the RunPod stand-in, and the e2e tests through the real worker."""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from shared.aws.storage import ObjectInfo
from shared.dev.runpod_standin import canned_artifact
from shared.errors import PayloadTooLarge
from shared.pipeline.runpod_client import RunPodError
from shared.timestamps import now_iso

PRESIGNED = "memory://"


class MemoryStorage:
    """S3 as shared.aws.storage.Storage uses it: head, get (bounded), put, copy, delete, presigned URLs
    (`memory://{key}`, which ScriptedRunPod's jobs read and write)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.objects: dict[str, tuple[bytes, str, float]] = {}
        self.clock = clock
        self.lock = threading.Lock()

    def head(self, key: str) -> ObjectInfo | None:
        with self.lock:
            got = self.objects.get(key)
        if got is None:
            return None
        data, ctype, at = got
        return ObjectInfo(key, hashlib.md5(data).hexdigest(), len(data), now_iso(at), ctype)

    def get(self, key: str, max_bytes: int) -> bytes | None:
        with self.lock:
            got = self.objects.get(key)
        if got is None:
            return None
        if len(got[0]) > max_bytes:
            raise PayloadTooLarge(f"the object is larger than {max_bytes} bytes")
        return got[0]

    def put(self, key: str, data: bytes, content_type: str = "") -> None:
        with self.lock:
            self.objects[key] = (bytes(data), content_type, self.clock())

    def copy(self, source_key: str, key: str) -> bool:
        with self.lock:
            got = self.objects.get(source_key)
            if got is None:
                return False
            self.objects[key] = (got[0], got[1], self.clock())
        return True

    def delete(self, key: str) -> None:
        with self.lock:
            self.objects.pop(key, None)

    def presign_get(self, key: str, expires_s: int) -> str:
        return PRESIGNED + key

    def presign_put(self, key: str, expires_s: int) -> str:
        return PRESIGNED + key


class ScriptedRunPod:
    """The RunPod client's run / status / cancel. `run_error` / `status_error`: raised by every call
    while set. `finish(job_id)` runs a job the way the worker would (canned artifacts PUT to its
    presigned URLs) and returns RunPod's answer for it; `answers[job_id]` is what /status says."""

    def __init__(self, storage: MemoryStorage) -> None:
        self.storage = storage
        self.jobs: dict[str, dict[str, Any]] = {}
        self.answers: dict[str, dict[str, Any]] = {}
        self.cancelled: list[str] = []
        self.run_error: RunPodError | None = None
        self.status_error: RunPodError | None = None
        self._ids = itertools.count(1)

    def run(self, job_input: Mapping[str, Any], *, webhook: str, policy: Mapping[str, int]) -> str:
        if self.run_error is not None:
            raise self.run_error
        job_id = f"job-{next(self._ids)}"
        self.jobs[job_id] = {"input": dict(job_input), "webhook": webhook, "policy": dict(policy)}
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        if self.status_error is not None:
            raise self.status_error
        if job_id not in self.jobs:
            raise RunPodError("RunPod status answered HTTP 404")
        return self.answers.get(job_id, {"id": job_id, "status": "IN_PROGRESS"})

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)

    def finish(self, job_id: str, *, seconds: float = 0.5) -> dict[str, Any]:
        inp = self.jobs[job_id]["input"]
        channels = {}
        for i, ch in enumerate(inp["channels"]):
            data, meta = canned_artifact(ch, i)
            for put_url, _ in zip(inp.get("thumbnails") or (), meta.get("scenes", ()), strict=False):
                self.storage.put(put_url.removeprefix(PRESIGNED), b"\xff\xd8canned-jpeg")
            self.storage.put(inp["outputs"][ch].removeprefix(PRESIGNED), data)
            channels[ch] = {
                "status": "succeeded",
                **meta,
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "model": "scripted",
                "seconds": seconds,
            }
        body = {
            "id": job_id,
            "status": "COMPLETED",
            "executionTime": int(seconds * 1000),
            "output": {"item": inp["item"], "channels": channels, "seconds": seconds},
        }
        self.answers[job_id] = body
        return body


__all__ = ["MemoryStorage", "ScriptedRunPod"]
