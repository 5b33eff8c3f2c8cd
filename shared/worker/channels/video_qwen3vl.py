"""video_qwen3vl: one Qwen3-VL-Embedding vector of the video's frames (and, in embed_video, its caption).

Frames: the model card's sampling, 1 frame per second, 4..64 frames, an even count (shared.models.qwen3vl
VideoPlan), taken by the PyAV sampler at the size the card's resize rule gives for that count, so the
decode never holds more than the model reads. Off by default (spec `default_on=False`): a deployment
opts in through PIPELINE_CHANNELS and WORKER_CHANNELS.

Artifact (embed_item): `.npy` float32 [2048] (the model's full Matryoshka width; a reader that wants
fewer dims keeps the first d and renormalises), unit length, frames only. Metadata: `frames`,
`padded`, `timestamps`, `sampling`, `frame_size`. embed_video (shared.worker.jobs.embed_video) adds
the caption to the same input and truncates to the requested dims.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from shared.errors import ConfigError, InvalidInput
from shared.models import registry
from shared.models.backend import check_unit_rows
from shared.models.qwen3vl import VideoInput, VideoPlan
from shared.worker.channels.base import Artifact, ChannelRunner, Decoded, WorkerContext, vector_artifact


@lru_cache(maxsize=1)
def video_plan() -> VideoPlan:
    from shared import spec

    return VideoPlan(registry.get(spec.CHANNELS["video_qwen3vl"].model).preprocessing)


def fit_text(backend: Any, settings: Any, text: str, field: str) -> tuple[str, bool]:
    """A caption or query within QWEN3VL_MAX_TEXT_TOKENS: cut at a token boundary (truncate) or
    refused (refuse), per QWEN3VL_TEXT_OVERFLOW. Returns (text, whether it was cut)."""
    limit = settings.qwen3vl_max_text_tokens
    if settings.qwen3vl_text_overflow == "truncate":
        return backend.fit_text(text, limit)
    tokens = backend.count_tokens(text)
    if tokens > limit:
        raise InvalidInput(
            f"the text is {tokens} tokens, longer than {limit} (QWEN3VL_MAX_TEXT_TOKENS)", field=field
        )
    return text, False


class VideoQwen3VL(ChannelRunner):
    name = "video_qwen3vl"
    needs = "frames"
    role = "qwen3vl"

    def check_settings(self, settings) -> None:
        if settings.embedding_backend != "qwen3_vl":
            raise ConfigError(
                f"EMBEDDING_BACKEND={settings.embedding_backend} cannot produce the spec's video_qwen3vl "
                "artifacts; leave video_qwen3vl out of WORKER_CHANNELS, or set EMBEDDING_BACKEND=qwen3_vl"
            )

    def frame_plan(self, settings, info) -> tuple[int, int]:
        plan = video_plan()
        frames = plan.frame_count(info.duration)
        height, width = plan.frame_size(info.height or 1, info.width or 1, frames)
        return frames, max(height, width)

    async def embed(self, ctx: WorkerContext, decoded: Decoded, caption: str | None = None) -> np.ndarray:
        """The full-width unit vector of the channel's frames (+ caption, in the same input)."""
        frames = decoded.frame_sets[self.name]
        item = VideoInput(frames.frames, frames.timestamps, caption)
        rows = await ctx.run_model("qwen3vl", ctx.models.qwen3vl.embed_videos, [item])
        return check_unit_rows(np.asarray(rows, dtype=np.float32), self.name)[0]

    def facts(self, decoded: Decoded) -> dict[str, Any]:
        frames = decoded.frame_sets[self.name]
        real = max(1, len(frames.frames) - int(frames.padded))
        height, width = video_plan().frame_size(
            frames.frames.shape[1], frames.frames.shape[2], len(frames.frames)
        )
        return {
            "frames": len(frames.frames),
            "padded": int(frames.padded),
            "timestamps": [round(float(t), 4) for t in frames.timestamps[:real]],
            "sampling": frames.mode,
            "frame_size": [height, width],
        }

    async def compute(self, ctx: WorkerContext, decoded: Decoded) -> Artifact:
        vec = await self.embed(ctx, decoded)
        return vector_artifact(ctx.models.qwen3vl, vec, self.name, self.facts(decoded))


RUNNER = VideoQwen3VL()
