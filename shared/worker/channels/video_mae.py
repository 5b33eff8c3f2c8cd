"""video_mae: VideoMAE CLS token of the 16 sampled frames (padded by repeating the last).

Artifact: `.npy` float32 [dims], unit length. Metadata: `frames`, `padded`.
"""

from __future__ import annotations

import numpy as np

from shared.worker.channels.base import Artifact, ChannelRunner, Decoded, WorkerContext, vector_artifact


class VideoMAE(ChannelRunner):
    name = "video_mae"
    needs = "frames"
    role = "videomae"

    async def compute(self, ctx: WorkerContext, decoded: Decoded) -> Artifact:
        model = ctx.models.videomae
        vec = await ctx.run_model("videomae", model.embed, decoded.frames.frames)
        meta = {"frames": len(decoded.frames.frames), "padded": int(decoded.frames.padded)}
        return vector_artifact(model, np.asarray(vec, dtype=np.float32).reshape(-1), self.name, meta)


RUNNER = VideoMAE()
