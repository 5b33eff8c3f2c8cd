"""video_clip: CLIP image embeddings of the sampled frames + their mean-pooled video vector.

Artifact: `.npy` float32 [1 + n, dims], every row unit length: row 0 is the video vector (mean of the
frame rows, renormalised), rows 1..n the n distinct sampled frames in time order (frames repeated
only to pad a short clip are left out). Result metadata: `timestamps` (pts seconds of those frames),
`frames`, `pooled_row` (0), `sampling`.
"""

from __future__ import annotations

import numpy as np

from shared.models.backend import check_unit_rows, l2_normalize
from shared.worker.channels.base import (
    Artifact,
    ClipChannel,
    Decoded,
    WorkerContext,
    vector_artifact,
)


class VideoClip(ClipChannel):
    name = "video_clip"
    needs = "frames"

    async def compute(self, ctx: WorkerContext, decoded: Decoded) -> Artifact:
        frames = decoded.frames
        real = max(1, len(frames.frames) - int(frames.padded))
        clip = ctx.models.clip
        rows = await ctx.run_model("clip_image", clip.embed_frames, frames.frames[:real])
        rows = check_unit_rows(rows, self.name)
        pooled = l2_normalize(rows.mean(axis=0))
        meta = {
            "timestamps": [round(float(t), 4) for t in frames.timestamps[:real]],
            "frames": real,
            "pooled_row": 0,
            "sampling": frames.mode,
        }
        return vector_artifact(clip, np.vstack([pooled[None, :], rows]), self.name, meta)


RUNNER = VideoClip()
