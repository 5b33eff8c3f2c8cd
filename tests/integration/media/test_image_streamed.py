"""The streamed decode (libvips) against the Pillow path it replaced, on ordinary images: the same
bitmap to resampling differences, and the same image_clip vector within tolerance; a panorama's
tiles squeezed at decode match the tiles cut from the full decode; full-decode formats are refused
from the header above FULL_DECODE_MAX_PIXELS."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.errors import MediaError
from shared.media.image import (
    FULL_DECODE_MAX_PIXELS,
    INFLATE_MAX_PIXELS,
    DecodePlan,
    decode_image,
    open_image,
    plan_decode,
    reduce_at_decode,
    split_tiles,
    tile_count,
)

pytestmark = pytest.mark.integration

MIN_SIDE = 512  # what ClipBackend.decode_side asks for an untiled image (2x the 256 TTA resize)


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Something like a photo: smooth gradients, blobs of colour and fine noise (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([x / width * 200, y / height * 180, (x + y) / (width + height) * 220], -1)
    coarse = rng.normal(0, 40, size=(height // 64 + 2, width // 64 + 2, 3)).astype(np.float32)
    img += (
        np.asarray(
            Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
                (width, height), Image.BICUBIC
            ),
            np.float32,
        )
        - 128
    )
    img += rng.normal(0, 6, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(arr: np.ndarray, fmt: str, mode: str = "RGB", orientation: int | None = None) -> bytes:
    img = Image.fromarray(arr, "RGB")
    if mode == "RGBA":
        img.putalpha(Image.fromarray(np.full(arr.shape[:2], 255, np.uint8), "L"))
    elif mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257)
    elif mode != "RGB":
        img = img.convert(mode)
    kwargs = {"quality": 92} if fmt in ("JPEG", "WEBP") else {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def pillow_plan(img: Image.Image, min_side: int | None, tiles: int = 1) -> DecodePlan:
    """The Pillow path as it decoded every image before the streamed decode (no squeeze)."""
    size = reduce_at_decode(img, min_side)
    return DecodePlan(False, size, size[0] * size[1], tiles, min_side)


def both(data: bytes, min_side: int | None = MIN_SIDE, tiles: int = 1) -> tuple[Image.Image, Image.Image]:
    streamed_plan = plan_decode(open_image(data), min_side=min_side, tiles=tiles)
    assert streamed_plan.streamed
    streamed = decode_image(open_image(data), streamed_plan)
    header = open_image(data)
    reference = decode_image(header, pillow_plan(header, min_side, tiles))
    return streamed, reference


def close(a: Image.Image, b: Image.Image, mean: float, p99: float) -> None:
    assert a.mode == b.mode == "RGB"
    w, h = min(a.width, b.width), min(a.height, b.height)
    assert abs(a.width - b.width) <= 1 and abs(a.height - b.height) <= 1  # rounding of the last block
    diff = np.abs(np.asarray(a, np.float32)[: h - 1, : w - 1] - np.asarray(b, np.float32)[: h - 1, : w - 1])
    assert diff.mean() < mean and np.percentile(diff, 99) <= p99, (diff.mean(), np.percentile(diff, 99))


ORDINARY = [
    ("JPEG", "RGB", None, (3200, 2400)),
    ("JPEG", "RGB", 6, (3200, 2400)),  # a phone portrait: rotated from the header's EXIF
    ("JPEG", "L", None, (2000, 1500)),
    ("PNG", "RGB", None, (2400, 1800)),
    ("PNG", "RGBA", None, (2400, 1800)),
    ("PNG", "L", None, (1300, 1100)),
    ("PNG", "I;16", None, (1300, 1100)),
    ("WEBP", "RGB", None, (2000, 1500)),
    ("TIFF", "RGB", None, (1600, 1200)),
]


@pytest.mark.parametrize(("fmt", "mode", "orientation", "size"), ORDINARY)
def test_the_streamed_bitmap_is_the_pillow_one(fmt, mode, orientation, size) -> None:
    data = encode(photo(*size), fmt, mode, orientation)
    streamed, reference = both(data)
    assert min(streamed.size) >= MIN_SIDE
    if orientation == 6:
        assert streamed.height > streamed.width
    close(streamed, reference, mean=1.0, p99=4.0)


@pytest.fixture(scope="module")
def clip(dev_model_dir: Path):
    from shared.models.clip import ClipBackend

    return ClipBackend.from_model_dir(dev_model_dir, "clip-vit-b-32")


def settings():
    from shared.worker.settings import WorkerSettings

    return WorkerSettings.from_env({}, cuda_available=lambda: False)


@pytest.mark.parametrize(("fmt", "mode", "orientation", "size"), ORDINARY[::2])
def test_image_clip_vectors_match_the_pillow_path(clip, fmt, mode, orientation, size) -> None:
    from shared.worker.channels.image_clip import decode_plan, prepare_views

    data = encode(photo(*size, seed=1), fmt, mode, orientation)
    plan = decode_plan(clip, settings(), open_image(data))
    assert plan.streamed and plan.min_side == MIN_SIDE
    new = clip.embed_prepared(
        [prepare_views(clip, decode_image(open_image(data), plan), tta=True, settings=settings())]
    )
    header = open_image(data)
    old_image = decode_image(header, pillow_plan(header, MIN_SIDE))
    old = clip.embed_prepared(
        [clip.prepare(old_image, tta=True, panorama_max_ratio=2.6, panorama_max_tiles=2)]
    )
    assert float(new[0] @ old[0]) > 0.999


@pytest.mark.parametrize(
    ("size", "fmt"), [((8000, 1000), "JPEG"), ((1000, 7000), "PNG"), ((3000, 1000), "JPEG")]
)
def test_a_panorama_squeezed_at_decode_gives_the_tiles_of_the_full_decode(clip, size, fmt) -> None:
    from shared.models.clip import _panorama_tiles
    from shared.worker.channels.image_clip import decode_plan, prepare_views

    data = encode(photo(*size, seed=2), fmt)
    tiles = tile_count(*size, 2.6, 2)
    assert tiles == 2
    plan = decode_plan(clip, settings(), open_image(data))
    long, short = max(size), min(size)
    squeeze = long // tiles // short
    assert plan.streamed and plan.tiles == 2
    assert max(plan.size) == math.ceil(long / squeeze) or abs(max(plan.size) - long / squeeze) <= 1
    assert plan.pixels <= size[0] * size[1] / squeeze + short
    image = decode_image(open_image(data), plan)
    parts = split_tiles(image, plan.tiles)
    assert [p.size for p in parts] == [(short, short)] * 2
    header = open_image(data)
    full = decode_image(header, pillow_plan(header, None))
    for new, old in zip(parts, _panorama_tiles(full, 2.6, 2), strict=True):
        close(new, old, mean=3.0, p99=12.0)  # box windows align to the image, not each tile
    prepared = prepare_views(clip, image, tta=True, settings=settings())
    assert prepared.tiles == 2 and len(prepared.views) == 2  # one view per tile, TTA or not
    old_views = [
        clip.prepare(t, tta=False, panorama_max_ratio=None).views for t in _panorama_tiles(full, 2.6, 2)
    ]
    new_vec = clip.embed_prepared([prepared])[0]
    import torch

    from shared.models.clip import PreparedImage

    old_vec = clip.embed_prepared([PreparedImage(torch.cat(old_views), 2)])[0]
    assert float(new_vec @ old_vec) > 0.999


@pytest.mark.parametrize("fmt", ["BMP", "GIF"])
def test_full_decode_formats_are_refused_from_the_header_above_the_limit(fmt) -> None:
    side = math.isqrt(FULL_DECODE_MAX_PIXELS)
    small = encode(photo(side, side), fmt)
    assert decode_image(open_image(small), min_side=MIN_SIDE).size[0] >= MIN_SIDE  # at the limit: decoded
    big = encode(photo(side + 8, side + 8), fmt)
    with pytest.raises(MediaError, match="FULL_DECODE_MAX_PIXELS"):
        open_image(big)
    assert open_image(big, max_full_decode_pixels=None).size == (side + 8, side + 8)


def test_a_cmyk_jpeg_is_not_streamed_but_still_dct_scaled() -> None:
    data = encode(photo(4000, 3000), "JPEG", "CMYK")
    header = open_image(data)  # JPEG: never a full-size decode, so not limited
    plan = plan_decode(header, min_side=MIN_SIDE)
    assert not plan.streamed and plan.pixels == 1000 * 750
    assert decode_image(header, plan).size == (1000, 750)


def test_a_truncated_streamed_file_is_a_media_error_that_names_no_path(tmp_path) -> None:
    data = encode(photo(2400, 1800), "PNG")
    path = tmp_path / "upload.img"
    path.write_bytes(data[: len(data) // 2])
    for source in (path, data[: len(data) // 2]):
        with pytest.raises(MediaError, match="could not be decoded") as err:
            decode_image(open_image(source), min_side=MIN_SIDE)
        assert str(tmp_path) not in str(err.value)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_formats_decompressed_in_full_are_refused_from_the_header_above_the_inflate_limit(fmt) -> None:
    data = encode(photo(120, 90), fmt)
    assert open_image(data, max_inflate_pixels=120 * 90).size == (120, 90)  # at the limit
    with pytest.raises(MediaError, match="INFLATE_MAX_PIXELS"):
        open_image(data, max_inflate_pixels=120 * 90 - 1)
    assert open_image(encode(photo(120, 90), "JPEG"), max_inflate_pixels=100).size == (120, 90)  # DCT-scaled


def test_a_png_claiming_more_than_the_inflate_limit_costs_only_its_header() -> None:
    from shared.dev.media import png_with_claimed_size

    side = math.isqrt(INFLATE_MAX_PIXELS) + 1
    with pytest.raises(MediaError, match="INFLATE_MAX_PIXELS"):
        open_image(png_with_claimed_size(side, side))


def test_a_multi_picture_jpeg_is_a_jpeg() -> None:
    """MPO (multi-picture, Ultra HDR gain-map photos): its first picture, DCT-scaled like any JPEG."""
    first = Image.fromarray(photo(2000, 1500), "RGB")
    buf = io.BytesIO()
    first.save(buf, format="MPO", save_all=True, append_images=[Image.fromarray(photo(500, 375, 1), "RGB")])
    header = open_image(buf.getvalue())
    assert header.format == "MPO"  # not refused as a full-size decode
    plan = plan_decode(header, min_side=MIN_SIDE)
    assert plan.pixels < 2000 * 1500
    out = decode_image(header, plan)
    assert out.size == plan.size
    ref = decode_image(open_image(encode(photo(2000, 1500), "JPEG")), min_side=MIN_SIDE)
    assert out.size == ref.size
