"""audio_wav2vec2: wav2vec2 mean-pooled over the first `max_seconds` (spec) of 16 kHz mono audio.

Artifact: `.npy` float32 [dims], unit length. Metadata: `audio_seconds`.
"""

from __future__ import annotations

import numpy as np

from shared.worker.channels.base import (
    SAMPLE_RATE,
    Artifact,
    ChannelRunner,
    Decoded,
    WorkerContext,
    vector_artifact,
)


class AudioWav2Vec2(ChannelRunner):
    name = "audio_wav2vec2"
    needs = "audio"
    role = "wav2vec2"

    def audio_seconds(self, settings) -> float:
        return float(self.spec.preprocessing["max_seconds"])

    async def compute(self, ctx: WorkerContext, decoded: Decoded) -> Artifact:
        model = ctx.models.wav2vec2
        clip = decoded.audio[: int(self.audio_seconds(ctx.settings) * SAMPLE_RATE)]
        vec = await ctx.run_model("wav2vec2", model.embed, clip)
        meta = {"audio_seconds": round(len(clip) / SAMPLE_RATE, 3)}
        return vector_artifact(model, np.asarray(vec, dtype=np.float32).reshape(-1), self.name, meta)


RUNNER = AudioWav2Vec2()
