"""image_clip: CLIP embedding of an uploaded image (5-crop TTA and panorama tiling per the spec).

The image goes through the same CLIP image batcher as clip_image queries. Artifact: `.npy` float32
[dims], unit length. Metadata: `tta`, `panorama_max_ratio`, `tiles`.

Views per image (both this channel and clip_image): an image of at most PANORAMA_MAX_RATIO:1 is one
tile, 5 views with TTA (1 without); a wider one is cut into its tiles (at most PANORAMA_MAX_TILES),
one view each, TTA or not: the tiles are its views. So no image costs more than
max(5, PANORAMA_MAX_TILES) model passes, and a panorama costs fewer than a photo.
"""

from __future__ import annotations

import asyncio
from typing import Any

from shared.errors import ConfigError
from shared.media.image import DecodePlan, plan_decode, split_tiles, tile_count
from shared.worker.channels.base import (
    Artifact,
    ClipChannel,
    Decoded,
    WorkerContext,
    vector_artifact,
)


def decode_plan(clip: Any, settings: Any, header: Any) -> DecodePlan:
    """How to decode an opened image for CLIP, from its header only: at the short side the views
    need (ClipBackend.decode_side), a capped panorama squeezed at decode (`plan_decode(tiles=)`);
    full size when no CLIP model is loaded (nothing will read the image). `plan.pixels` is what
    the worker's pixel budget holds while it is decoded."""
    if clip is None:
        return plan_decode(header)
    width, height = header.header_size
    ratio, max_tiles = settings.panorama_max_ratio, settings.panorama_max_tiles
    tiles = tile_count(width, height, ratio, max_tiles)
    min_side = clip.decode_side(width, height, panorama_max_ratio=ratio, panorama_max_tiles=max_tiles)
    return plan_decode(header, min_side=min_side, tiles=tiles)


def prepare_views(clip: Any, image: Any, *, tta: bool, settings: Any) -> Any:
    """ClipBackend.prepare for a decoded image: one tile with TTA as asked, or a panorama's tiles
    (image.info["tiles"] from `decode_image`) one plain view each."""
    import torch

    from shared.models.clip import PreparedImage

    if "tiles" not in image.info:  # not from decode_image: the backend tiles it as it is
        return clip.prepare(
            image,
            tta=tta,
            panorama_max_ratio=settings.panorama_max_ratio,
            panorama_max_tiles=settings.panorama_max_tiles,
        )
    tiles = image.info["tiles"]
    if tiles <= 1:
        return clip.prepare(image, tta=tta, panorama_max_ratio=None)
    parts = split_tiles(image, tiles)
    views = [clip.prepare(t, tta=False, panorama_max_ratio=None).views for t in parts]
    return PreparedImage(torch.cat(views), len(parts))


class ImageClip(ClipChannel):
    name = "image_clip"
    needs = "image"

    def spec_tta(self) -> bool:
        return self.spec.preprocessing.get("tta") not in (None, False, "none")

    def check_settings(self, settings) -> None:
        pp = self.spec.preprocessing
        super().check_settings(settings)
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
            prepare_views, clip, decoded.image, tta=settings.tta, settings=settings
        )
        rows, _ = await ctx.image_batcher(settings.tta).submit([prepared])
        meta = {
            "tta": settings.tta,
            "panorama_max_ratio": settings.panorama_max_ratio,
            "tiles": prepared.tiles,
        }
        return vector_artifact(clip, rows[0], self.name, meta)


RUNNER = ImageClip()
