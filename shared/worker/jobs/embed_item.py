"""embed_item: download the source once, decode once, run each requested channel on its own.

Decoding serves every channel from one pass per input kind (shared.worker.channels.base.INPUTS):
frames (probe + each channel's frame plan sampled by timestamp, once per distinct plan: the spec's
16 frames at most FRAME_MAX_SIDE px for CLIP and VideoMAE, Qwen3-VL's 1 fps up to 64 frames at its
own size; coded size checked against MAX_VIDEO_PIXELS from the stream header first), audio (16 kHz
mono, as many seconds as the longest-reading channel needs) and image (header checked like
clip_image's, then decoded under the worker's pixel budget, held until the channels are done). A
source that is not media at all, or an image refused from its header, fails the whole job; a missing
or undecodable stream fails only the channels that need it.

Channels run concurrently, and a fault stays in its channel: any exception fails that channel only
(`{"status": "failed", "error": {...}}`, internal_error with a correlation id when unexpected), no
artifact is PUT for it, the others finish. The result is documented in handlers/runpod_worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from pathlib import Path
from typing import Any

from shared import spec
from shared.errors import EmbeddingError, InvalidInput, MediaError
from shared.worker import model_time
from shared.worker.batching import image_batch
from shared.worker.channels import RUNNERS
from shared.worker.channels.base import FRAME_MAX_SIDE, SAMPLE_RATE, ChannelRunner, Decoded
from shared.worker.channels.image_clip import decode_plan
from shared.worker.faults import failure, redact, rescrubbed
from shared.worker.requests import EmbedItemRequest

log = logging.getLogger(__name__)

__all__ = ["FRAME_MAX_SIDE", "batch_role", "decode", "run"]


class SpecMismatch(InvalidInput):
    """The dispatcher expects a channel fingerprint this worker's spec does not have (stale image)."""

    status = 409
    code = "spec_mismatch"


class ChannelDisabled(InvalidInput):
    status = 409
    code = "channel_disabled"


def batch_role(request: EmbedItemRequest, settings: Any) -> str | None:
    images = any(RUNNERS[name].needs == "image" for name in request.channels)
    return image_batch(settings.tta) if images else None  # image_clip batches at the worker's setting


async def run(worker: Any, req: EmbedItemRequest) -> dict[str, Any]:
    from shared.media import temp_workdir

    started = model_time.clock()
    runners = [RUNNERS[name] for name in req.channels]
    async with contextlib.AsyncExitStack() as held:
        with temp_workdir("embed-item-") as workdir:
            async with worker.media_slot():
                try:
                    path = await asyncio.to_thread(
                        worker.download, req.source_url, workdir, worker.settings.max_download_bytes
                    )
                    decoded = await decode(worker, req.item.modality, path, runners, held)
                except EmbeddingError as e:
                    raise rescrubbed(e, str(workdir), field="input.source_url") from None
        # Each model has its own executor, so e.g. Whisper and CLIP overlap.
        outcomes = await asyncio.gather(*(_channel(worker, r, req, decoded, str(workdir)) for r in runners))
    channels = {r.name: result for r, (result, _) in zip(runners, outcomes, strict=True)}
    log.info(
        "embed_item %s/%s %s: %s",
        req.item.owner_id,
        req.item.item_id,
        req.item.modality,
        ", ".join(f"{n}={r['status']}" for n, r in channels.items()),
    )
    out = {
        "item": req.item.model_dump(),
        "spec_version": spec.SPEC_VERSION,
        "source": decoded.facts,
        "channels": channels,
        "seconds": round(model_time.clock() - started, 4),
    }
    if any(refresh for _, refresh in outcomes):
        out["refresh_worker"] = True
    return out


async def decode(
    worker: Any,
    modality: str,
    path: Path,
    runners: list[ChannelRunner],
    held: contextlib.AsyncExitStack,
) -> Decoded:
    """One decode of the downloaded source for every runner's input (embed_video uses it too)."""
    from shared.media import decode_audio, decode_image, open_image, probe, sample_frames
    from shared.media.image import upright_size

    settings = worker.settings
    size, digest = await asyncio.to_thread(_file_facts, path)
    out = Decoded(facts={"bytes": size, "sha256": digest, "duration": None})
    needs = {r.needs for r in runners}
    if modality == "image":
        header = await asyncio.to_thread(open_image, path, **settings.image_header_limits())
        width, height = upright_size(header)  # the source's, not the reduced decode's
        plan = decode_plan(worker.models.clip, settings, header)
        await held.enter_async_context(worker.budget.hold(plan.pixels))
        out.image = await asyncio.to_thread(decode_image, header, plan)
        out.facts.update(width=width, height=height)
        return out
    info = await asyncio.to_thread(probe, path, max_pixels=settings.max_video_pixels)  # not media: job fails
    out.duration = info.duration
    out.facts.update(duration=info.duration, has_video=info.has_video, has_audio=info.has_audio)
    if "frames" in needs:
        if not info.has_video:
            out.errors["frames"] = MediaError("the source has no video stream")
        else:
            sampled: dict[tuple[int, int], Any] = {}
            default: list[tuple[int, int]] = []
            try:
                framed = [r for r in runners if r.needs == "frames"]
                plans = {r.name: r.frame_plan(settings, info) for r in framed}
                # the spec-count channels (the base plan) share one pass at the largest count
                shared_plan = {r.name for r in framed if type(r).frame_plan is ChannelRunner.frame_plan}
                default = [plans[n] for n in shared_plan]
                if default:
                    plans = {n: (max(default) if n in shared_plan else p) for n, p in plans.items()}
                for plan in dict.fromkeys(plans.values()):
                    sampled[plan] = await asyncio.to_thread(
                        sample_frames, path, plan[0], max_side=plan[1], max_pixels=settings.max_video_pixels
                    )
            except MediaError as e:
                out.errors["frames"] = e
            else:
                out.frame_sets = {name: sampled[plan] for name, plan in plans.items()}
                if default:
                    out.frames = sampled[max(default)]
    if "audio" in needs:
        seconds = max(r.audio_seconds(settings) for r in runners if r.needs == "audio")
        if not info.has_audio:
            out.errors["audio"] = MediaError("the source has no audio stream")
        else:
            try:
                out.audio = await asyncio.to_thread(
                    decode_audio, path, sample_rate=SAMPLE_RATE, max_seconds=seconds
                )
            except MediaError as e:
                out.errors["audio"] = e
    return out


async def _channel(
    worker: Any, runner: ChannelRunner, req: EmbedItemRequest, decoded: Decoded, workdir: str
) -> tuple[dict[str, Any], bool]:
    """One channel's result and whether its failure means the worker must be refreshed."""
    name, settings = runner.name, worker.settings
    try:
        if name not in settings.embed_channels:
            served = ",".join(settings.channels)
            raise ChannelDisabled(f"this worker does not serve channel {name} (WORKER_CHANNELS={served})")
        expected = (req.fingerprints or {}).get(name)
        if expected is not None and expected != runner.spec.fingerprint:
            raise SpecMismatch(
                f"the job expects another {name} fingerprint, this worker has {runner.spec.fingerprint} "
                f"(spec {spec.SPEC_VERSION}); deploy the matching worker image"
            )
        if runner.needs in decoded.errors:
            raise decoded.errors[runner.needs]
        started = model_time.clock()
        with model_time.measure() as model_seconds:
            artifact = await runner.compute(worker, decoded)
        computed = model_time.clock() - started
        if len(artifact.thumbnails) > len(req.thumbnails or ()):
            raise InvalidInput(
                f"{len(artifact.thumbnails)} thumbnails but fewer URLs", field="input.thumbnails"
            )
        # thumbnails first: an artifact in S3 means its thumbnails are there too
        await asyncio.gather(
            *(
                asyncio.to_thread(worker.upload, put_url, jpeg, "image/jpeg")
                for put_url, jpeg in zip(req.thumbnails or (), artifact.thumbnails, strict=False)
            )
        )
        await asyncio.to_thread(worker.upload, req.outputs[name], artifact.data, artifact.content_type)
    except Exception as e:  # the channel's fault boundary: the other channels still finish
        payload, refresh = failure(e, f"channel {name}", scrub=(workdir,))
        log.info("channel %s failed: %s", name, redact(payload["message"]))
        return {"status": "failed", "error": payload}, refresh
    return {
        "status": "succeeded",
        **artifact.meta,
        "sha256": hashlib.sha256(artifact.data).hexdigest(),
        "bytes": len(artifact.data),
        "content_type": artifact.content_type,
        "fingerprint": runner.spec.fingerprint,
        "seconds": round(model_seconds(), 4),  # its model's run time for this item (shared.worker.model_time)
        "wall_seconds": round(computed, 4),  # compute() end to end: preparation and waits for the model
        "upload_seconds": round(model_time.clock() - started - computed, 4),
    }, False


def _file_facts(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
