"""clip_image: CLIP image vectors, with work bounded before anything is decoded.

1. Each image is fetched (URL) or taken from base64, and its header checked
   (`WorkerSettings.image_header_limits`): MAX_IMAGE_PIXELS, an aspect ratio of at most
   MAX_IMAGE_ASPECT:1, FULL_DECODE_MAX_PIXELS and INFLATE_MAX_PIXELS by format (media_error naming
   `input.images[i]`).
2. The job's pixels, summed from the headers, must fit JOB_MAX_PIXELS (payload_too_large).
3. One image at a time, under the worker-wide pixel budget: decode at the size the model needs
   (`decode_plan`: JPEG/PNG/WebP/TIFF streamed through libvips straight to that size, a capped
   panorama squeezed too; other formats at full size, refused from the header above
   FULL_DECODE_MAX_PIXELS; the budget holds the bitmap the decode allocates), then prepare the
   model's views (`prepare_views`: 5 with TTA, or one per panorama tile, at most
   PANORAMA_MAX_TILES) and drop the decoded image. Only the views wait for the batcher.

Output: clip_text's shape plus `"tta"`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from shared.errors import EmbeddingError, PayloadTooLarge
from shared.worker.batching import image_batch
from shared.worker.channels.image_clip import decode_plan, prepare_views
from shared.worker.faults import rescrubbed
from shared.worker.jobs.clip_text import vectors_output
from shared.worker.requests import ClipImageRequest


def _tta(request: ClipImageRequest, settings: Any) -> bool:
    """The job's own `tta`, else the worker's setting."""
    return settings.tta if request.tta is None else request.tta


def batch_role(request: ClipImageRequest, settings: Any) -> str | None:
    return image_batch(_tta(request, settings))


async def run(worker: Any, req: ClipImageRequest) -> dict[str, Any]:
    from shared.media import decode_image, open_image, temp_workdir

    settings, clip = worker.settings, worker.models.clip
    tta = _tta(req, settings)
    prepared = []
    with temp_workdir("clip-image-") as workdir:
        headers = []
        for i, ref in enumerate(req.images):
            try:
                if ref.url is not None:
                    src: bytes | Path = await asyncio.to_thread(
                        worker.download, ref.url, workdir, settings.max_image_bytes
                    )
                else:
                    src = ref.data()
                headers.append(await asyncio.to_thread(open_image, src, **settings.image_header_limits()))
            except EmbeddingError as e:
                raise rescrubbed(e, str(workdir), field=f"input.images[{i}]") from None
        total = sum(h.width * h.height for h in headers)
        if total > settings.job_max_pixels:
            raise PayloadTooLarge(
                f"the images hold {total} pixels together, limit {settings.job_max_pixels} per job "
                f"(JOB_MAX_PIXELS); send fewer or smaller images",
                field="input.images",
            )
        for i, header in enumerate(headers):
            try:
                plan = decode_plan(clip, settings, header)  # header only: may refuse (media_error)
            except EmbeddingError as e:
                raise rescrubbed(e, str(workdir), field=f"input.images[{i}]") from None
            async with worker.budget.hold(plan.pixels):
                try:
                    image = await asyncio.to_thread(decode_image, header, plan)
                except EmbeddingError as e:
                    raise rescrubbed(e, str(workdir), field=f"input.images[{i}]") from None
                prepared.append(
                    await asyncio.to_thread(prepare_views, clip, image, tta=tta, settings=settings)
                )
                del image
            headers[i] = None  # drop the opened file's buffer too
    rows, info = await worker.image_batcher(tta).submit(prepared)
    out = vectors_output(clip, rows, info, "clip_image")
    out["tta"] = tta
    return out
