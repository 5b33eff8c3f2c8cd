"""The RunPod worker: one `Worker` per process, models loaded once at start, jobs routed by task.

`await worker.handle(job)` takes a RunPod job (`{"id", "input"}`, input shapes in
shared.worker.requests) and returns its output; it never raises for a job's sake. Expected failures
(EmbeddingError: bad input, undecodable media, refused URL, oversized body, HTTP errors) come back as
`{"error": {"code", "message", "retryable", "field"?}}`; any other exception as `internal_error`
with a correlation id (shared.worker.faults), plus `"refresh_worker": true` when the process is
unhealthy. Each task's logic is one module in shared.worker.jobs; each embed_item channel one module
in shared.worker.channels.

Thread/loop model: each model runs in its own single-thread executor (one model is never entered
twice at once, and the event loop stays free), except that CLIP's image tower has a thread of its
own ("clip_image": image batches and video frames) beside the text tower's ("clip"): the towers are
separate modules used for inference only, so a query never waits behind a long image pass (on a GPU
their kernels interleave). Download/decode/upload run in the default pool.
Bounded work: embed_item/transcribe downloads and decodes run MEDIA_CONCURRENCY at a time; decoded
image pixels, in every job together, stay under WORKER_MAX_PIXELS (shared.worker.budget).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from shared.errors import InvalidInput
from shared.worker import model_time
from shared.worker.batching import TEXT_BATCH, Arrivals, MicroBatcher, image_batch
from shared.worker.budget import PixelBudget
from shared.worker.faults import failure
from shared.worker.jobs import JOBS
from shared.worker.models import Models, load_models
from shared.worker.requests import JobRequest, parse_job
from shared.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, settings: WorkerSettings, models: Models) -> None:
        self.settings = settings
        self.models = models
        roles = [*models.loaded(), *(["clip_image"] if models.clip is not None else [])]
        self._executors = {role: ThreadPoolExecutor(1, thread_name_prefix=f"model-{role}") for role in roles}
        self.budget = PixelBudget(settings.worker_max_pixels)
        # per batcher, the jobs that may still join one of its batches; with BATCH_EARLY_CLOSE a batch
        # runs once none remain (an image job in its download never holds a text query's batch open,
        # nor a TTA image job a plain one's: each can join one batcher only)
        self.arrivals = {name: Arrivals() for name in (TEXT_BATCH, image_batch(True), image_batch(False))}
        self._image_batchers: dict[bool, MicroBatcher] = {}
        self.text_batcher: MicroBatcher | None = None
        if models.clip is not None:
            self.text_batcher = self._batcher(models.clip.embed_texts, TEXT_BATCH, "clip")
        self._media_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self.jobs = 0

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> Worker:
        """Load every enabled model (raises ModelNotFound naming the folder and the bake command)."""
        return cls(settings, load_models(settings))

    def _batcher(self, fn: Callable[[list[Any]], Any], name: str, role: str) -> MicroBatcher:
        return MicroBatcher(
            fn,
            window_ms=self.settings.batch_window_ms,
            max_batch=self.settings.max_batch,
            executor=self._executors[role],
            name=name,
            arrivals=self.arrivals[name] if self.settings.batch_early_close else None,
        )

    def image_batcher(self, tta: bool) -> MicroBatcher:
        """The CLIP batcher of prepared images for one TTA setting (TTA and plain never share a pass)."""
        batcher = self._image_batchers.get(tta)
        if batcher is None:
            batcher = self._image_batchers[tta] = self._batcher(
                self.models.clip.embed_prepared, image_batch(tta), "clip_image"
            )
        return batcher

    def close(self) -> None:
        for ex in self._executors.values():
            ex.shutdown(wait=False, cancel_futures=True)

    async def handle(self, job: Any) -> dict[str, Any]:
        """Run one RunPod job; its output, or `{"error": {...}}` (+ `refresh_worker`) on failure."""
        job_id = str(job.get("id", "-"))[:80] if isinstance(job, dict) else "-"
        started = time.perf_counter()
        self.jobs += 1
        task = "job"
        try:
            request = parse_job(job.get("input") if isinstance(job, dict) else None, self.settings)
            task = request.task
            self._check_task(request)
            handler = JOBS[task]
            batch = handler.batch_role(request, self.settings)
            # counted from here (nothing awaited since the job arrived) by the batcher it may join only
            with self.arrivals[batch].job() if batch else contextlib.nullcontext():
                out = await handler.run(self, request)
        except Exception as e:  # the job's fault boundary: nothing escapes as a traceback
            payload, refresh = failure(e, task)
            seconds = time.perf_counter() - started
            log.info("job %s failed in %.2fs: %s", job_id, seconds, payload["message"])
            return {"error": payload, "refresh_worker": True} if refresh else {"error": payload}
        log.info("job %s %s done in %.2fs", job_id, task, time.perf_counter() - started)
        return out

    def _check_task(self, request: JobRequest) -> None:
        if request.task not in self.settings.tasks:
            raise InvalidInput(
                f"this worker does not serve {request.task} (WORKER_TASKS={','.join(self.settings.tasks)})",
                field="input.task",
            )

    @contextlib.asynccontextmanager
    async def media_slot(self) -> AsyncIterator[None]:
        """One of MEDIA_CONCURRENCY download-and-decode slots."""
        loop = asyncio.get_running_loop()
        sem = self._media_slots.get(loop)
        if sem is None:
            sem = self._media_slots[loop] = asyncio.Semaphore(self.settings.media_concurrency)
        async with sem:
            yield

    async def run_model(self, role: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run `fn` on the model's own thread; the seconds it ran there are charged to the caller's
        account (shared.worker.model_time), its wait for the thread is not."""
        loop = asyncio.get_running_loop()
        timed = partial(model_time.timed, fn, *args, **kw)
        out, seconds = await loop.run_in_executor(self._executors[role], timed)
        model_time.charge(seconds)
        return out

    def download(self, url: str, dest: Path, max_bytes: int) -> Path:
        from shared.media import download

        return download(
            url,
            dest,
            max_bytes=max_bytes,
            timeout_s=self.settings.download_timeout_s,
            allow_private=self.settings.allow_private_urls,
        )

    def upload(self, url: str, data: bytes, content_type: str) -> None:
        from shared.media import upload

        upload(
            url,
            data,
            content_type=content_type,
            timeout_s=self.settings.download_timeout_s,
            allow_private=self.settings.allow_private_urls,
        )
