"""image_clip: CLIP embedding of an uploaded image (5-crop TTA and panorama tiling per the spec).

The image goes through the same CLIP image batcher as clip_image queries. Artifact: `.npy` float32
[dims], unit length. Metadata: `tta`, `panorama_max_ratio`, `tiles`.
"""

from __future__ import annotations

import asyncio

from shared.errors import ConfigError
from shared.worker.channels.base import (
    Artifact,
    ChannelRunner,
    Decoded,
    WorkerContext,
    check_clip_model,
    vector_artifact,
)


class ImageClip(ChannelRunner):
    name = "image_clip"
    needs = "image"
    role = "clip"

    def model_name(self, settings) -> str:
        return settings.clip_model  # CLIP_MODEL; check_settings holds it to the spec

    def spec_tta(self) -> bool:
        return self.spec.preprocessing.get("tta") not in (None, False, "none")

    def check_settings(self, settings) -> None:
        pp = self.spec.preprocessing
        check_clip_model(self, settings)
        if self.spec_tta() != settings.tta:
            raise ConfigError(
                f"ENABLE_TTA={int(settings.tta)} but channel {self.name} is specified with "
                f"tta={pp.get('tta')!r}; example: ENABLE_TTA={int(self.spec_tta())}"
            )
        if float(pp["panorama_max_ratio"]) != settings.panorama_max_ratio:
            raise ConfigError(
                f"PANORAMA_MAX_RATIO={settings.panorama_max_ratio} but channel {self.name} is specified "
                f"with {pp['panorama_max_ratio']}; example: PANORAMA_MAX_RATIO={pp['panorama_max_ratio']}"
            )

    async def compute(self, ctx: WorkerContext, decoded: Decoded) -> Artifact:
        clip, settings = ctx.models.clip, ctx.settings
        prepared = await asyncio.to_thread(
            clip.prepare, decoded.image, tta=settings.tta, panorama_max_ratio=settings.panorama_max_ratio
        )
        rows, _ = await ctx.image_batcher(settings.tta).submit([prepared])
        meta = {
            "tta": settings.tta,
            "panorama_max_ratio": settings.panorama_max_ratio,
            "tiles": prepared.tiles,
        }
        return vector_artifact(clip, rows[0], self.name, meta)


RUNNER = ImageClip()
