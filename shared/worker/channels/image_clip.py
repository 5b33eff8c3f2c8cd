"""image_clip: CLIP embedding of an uploaded image (5-crop TTA and panorama tiling per the spec).

The image goes through the same CLIP image batcher as clip_image queries. Artifact: `.npy` float32
[dims], unit length. Metadata: `tta`, `panorama_max_ratio`, `tiles`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from shared.errors import ConfigError
from shared.media.image import reduce_at_decode
from shared.worker.channels.base import (
    Artifact,
    ChannelRunner,
    Decoded,
    WorkerContext,
    check_clip_model,
    vector_artifact,
)


def decode_size(clip: Any, settings: Any, header: Any) -> tuple[int | None, int]:
    """(min_side for decode_image, pixels of the bitmap its decoder allocates) for an opened image:
    the short side the CLIP views need (ClipBackend.decode_side), from the header only; full size
    when no CLIP model is loaded (nothing will read the image)."""
    if clip is None:
        return None, header.width * header.height
    min_side = clip.decode_side(
        header.width,
        header.height,
        panorama_max_ratio=settings.panorama_max_ratio,
        panorama_max_tiles=settings.panorama_max_tiles,
    )
    width, height = reduce_at_decode(header, min_side)
    return min_side, width * height


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
        if int(pp["panorama_max_tiles"]) != settings.panorama_max_tiles:
            raise ConfigError(
                f"PANORAMA_MAX_TILES={settings.panorama_max_tiles} but channel {self.name} is specified "
                f"with {pp['panorama_max_tiles']}; example: PANORAMA_MAX_TILES={pp['panorama_max_tiles']}"
            )

    async def compute(self, ctx: WorkerContext, decoded: Decoded) -> Artifact:
        clip, settings = ctx.models.clip, ctx.settings
        prepared = await asyncio.to_thread(
            clip.prepare,
            decoded.image,
            tta=settings.tta,
            panorama_max_ratio=settings.panorama_max_ratio,
            panorama_max_tiles=settings.panorama_max_tiles,
        )
        rows, _ = await ctx.image_batcher(settings.tta).submit([prepared])
        meta = {
            "tta": settings.tta,
            "panorama_max_ratio": settings.panorama_max_ratio,
            "tiles": prepared.tiles,
        }
        return vector_artifact(clip, rows[0], self.name, meta)


RUNNER = ImageClip()
