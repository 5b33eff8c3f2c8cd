"""Image loading: header-checked size and shape caps (Pillow reads the header), EXIF orientation,
8-bit RGB, and decoding at the size the model needs (`min_side`), not the size the file has.

Two decoders, chosen from the header by `plan_decode`:
- streamed (libvips, pyvips): JPEG, PNG, WebP and TIFF in the common modes. The file is read top to
  bottom in strips (sequential access) through the reduction, so the full-size bitmap never exists:
  a 50 MP PNG costs a few MB of line buffers, not 150 MB. JPEG is also DCT-scaled at load.
- Pillow: everything else (GIF, BMP, CMYK, odd TIFF modes...). A CMYK JPEG is still DCT-scaled
  (`draft`); any other format is decoded at full size, so it is refused from its header above
  FULL_DECODE_MAX_PIXELS (media_error) rather than let a small file cost a large bitmap.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from shared.errors import MediaError

MIN_SIDE = 1  # 1x1 is accepted: CLIP preprocessing resizes anything
_BACKGROUND = (255, 255, 255)


_REDUCE_FIRST = ("RGB", "RGBA", "L", "LA", "CMYK")  # modes Image.reduce averages correctly as they are

# A format Pillow decodes only at full size (no DCT scaling, no strips: GIF, BMP, CMYK TIFF...):
# refused above this many pixels from its header. Measured (bench/bench_adversarial.py), a full
# decode costs ~20 MB of peak RSS per MP on top of the worker; 1.5 MP keeps it within 2x of an
# ordinary 12 MP JPEG photo's decode (DCT-scaled to 0.75 MP). The streamed formats (below) and JPEG
# are not limited by it.
FULL_DECODE_MAX_PIXELS = 1_500_000
# A streamed format without scaled decode (PNG, WebP, TIFF: every pixel goes through the decompressor,
# serially, even though no full-size bitmap is kept) is refused above this many pixels from its header:
# the inflate costs ~linear time in pixels (~11 ms per MP on this 2-core CPU: a 40 MP PNG's job was
# 1.35-2.11x the ordinary photo's, over the 2x target), so the limit is an 8K UHD frame (7680x4320,
# 33.2 MP: the largest common PNG, a screenshot), ~1.7x (bench/bench_adversarial.py). JPEG is
# DCT-scaled at load, so only MAX_IMAGE_PIXELS bounds it.
INFLATE_MAX_PIXELS = 7680 * 4320
# Formats libvips decodes here, streamed, in these Pillow header modes (others: Pillow).
# MPO (a JPEG followed by more pictures: multi-picture and Ultra HDR gain-map photos) is its first
# picture, a JPEG, to both Pillow and libvips.
_JPEG = ("JPEG", "MPO")
_STREAMED = {"JPEG": "jpegload", "MPO": "jpegload", "PNG": "pngload", "WEBP": "webpload", "TIFF": "tiffload"}
_STREAMED_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "I;16", "I;16B", "I;16L", "I;16N"}
_ORIENTATION = {  # EXIF orientation -> the transpose that makes the image upright (as ImageOps does)
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class DecodePlan:
    """How an opened image will be decoded, known from its header alone (`plan_decode`).

    size: (width, height) of the bitmap handed back, stored orientation (before EXIF rotation);
    pixels: the largest bitmap the decode allocates (what a pixel budget must hold); tiles: >1 for a
    capped panorama, decoded already squeezed along its long side so that it splits into `tiles`
    tiles each about square (see `split_tiles`); 1 otherwise."""

    streamed: bool
    size: tuple[int, int]
    pixels: int
    tiles: int = 1
    min_side: int | None = None
    squeeze: int = 1  # box factor along the long side, after the reduction on both sides


def tile_count(width: int, height: int, max_ratio: float | None, max_tiles: int | None = None) -> int:
    """How many panorama tiles CLIP cuts an image of this size into: 1 up to `max_ratio`, else
    ceil(long / short), at most `max_tiles` (an image wider than that is squeezed to fit, see
    ClipBackend.prepare). Known from the header alone, so work is bounded before decoding."""
    long, short = max(width, height), min(width, height)
    if max_ratio is None or long <= max_ratio * short:
        return 1
    n = math.ceil(long / short)
    return n if max_tiles is None else min(n, max_tiles)


def reduce_at_decode(img: Image.Image, min_side: int | None) -> tuple[int, int]:
    """Ask the decoder for a smaller bitmap whose short side is still >= `min_side`; header only.

    JPEG: DCT scaling (1/2, 1/4 or 1/8, Pillow's `draft`), so a 50 MP photo is decoded straight to
    about 0.8 MP and the full bitmap never exists. Other formats (PNG, WebP, GIF, TIFF...) have no
    reduced decode in Pillow: they decode at full size and `decode_image` reduces right after.
    Returns the size of the bitmap the decoder will allocate (what a pixel budget must hold).
    Calling it again is a no-op.
    """
    if min_side is None or img.format not in _JPEG or getattr(img, "decoderconfig", None):
        return img.size
    factor = next(f for f in (8, 4, 2, 1) if f == 1 or min(img.size) // f >= min_side)
    if factor > 1:
        # Pillow picks the largest scale s <= min(w // req_w, h // req_h); with req = side // factor
        # that is exactly `factor`, since side // factor >= min_side > 8
        img.draft(img.mode, (img.width // factor, img.height // factor))
    return img.size


def open_image(
    data: bytes | Path,
    *,
    max_pixels: int = 50_000_000,
    max_aspect: float | None = None,
    max_full_decode_pixels: int | None = FULL_DECODE_MAX_PIXELS,
    max_inflate_pixels: int | None = INFLATE_MAX_PIXELS,
) -> Image.Image:
    """Open an image and check its header only (no pixel data decoded yet): returns the lazy image.

    Refused with MediaError: empty or unrecognised data, a side of 0 px, more than `max_pixels`
    pixels, (when `max_aspect` is given) a long/short side ratio above `max_aspect`, or a format
    that can only be decoded at full size (not streamed, not JPEG) with more than
    `max_full_decode_pixels` pixels, or a streamed format without scaled decode (PNG, WebP, TIFF)
    with more than `max_inflate_pixels`. So a tiny file claiming 20000x20000, or a 20000x1 strip,
    costs nothing but its header.
    """
    if (data.stat().st_size if isinstance(data, Path) else len(data)) == 0:
        raise MediaError("the image is empty (zero bytes)")
    with _pillow_errors():
        img = Image.open(data if isinstance(data, Path) else io.BytesIO(data))
        width, height = img.size
        if width < MIN_SIDE or height < MIN_SIDE:
            raise MediaError(f"image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise MediaError(f"image is too large: {width}x{height} pixels, limit {max_pixels} pixels")
        if max_aspect is not None and max(width, height) > max_aspect * min(width, height):
            raise MediaError(
                f"image is {width}x{height}: an aspect ratio beyond {max_aspect:g}:1 is not served "
                f"(MAX_IMAGE_ASPECT)"
            )
        full = not _streamable(img) and img.format not in _JPEG
        if full and max_full_decode_pixels is not None and width * height > max_full_decode_pixels:
            raise MediaError(
                f"{img.format} image of {width}x{height} pixels: this format is decoded at full size, "
                f"limit {max_full_decode_pixels} pixels (FULL_DECODE_MAX_PIXELS); send it as JPEG, "
                f"PNG, WebP or TIFF"
            )
        inflated = not full and img.format not in _JPEG
        if inflated and max_inflate_pixels is not None and width * height > max_inflate_pixels:
            raise MediaError(
                f"{img.format} image of {width}x{height} pixels: this format is decompressed in full "
                f"(no scaled decode), limit {max_inflate_pixels} pixels (INFLATE_MAX_PIXELS); send it "
                f"smaller, or as JPEG"
            )
        img.encoded_source = data  # what libvips reads, if it decodes this image
        img.header_size = (width, height)  # img.size changes if Pillow's draft() reduces the decode
        return img


def upright_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image once its EXIF orientation is applied, from the header only
    (a PNG's eXIf chunk after the image data is not seen: Pillow finds it only by decoding)."""
    if img.format == "PNG" and "exif" not in img.info:
        return img.size
    turned = img.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
    return (img.height, img.width) if turned else (img.width, img.height)


def plan_decode(img: Image.Image, *, min_side: int | None = None, tiles: int = 1) -> DecodePlan:
    """Decide, from the header only, how `decode_image` will decode an image from `open_image`.

    min_side: the short side the caller needs; the image is reduced by an integer box factor (JPEG:
    DCT scaling first) that keeps its short side >= min_side. None: full size. tiles > 1: a capped
    panorama of that many tiles; it is also box-reduced along its long side by the integer factor
    that keeps each tile at least square (`split_tiles` squeezes the rest), so its bitmap is about
    `tiles` squares, not the whole strip. Streamed decodes hold only that output (plus line
    buffers); Pillow's hold what its decoder allocates (a reduced JPEG, or the full size).
    """
    with _pillow_errors():
        if _streamable(img):
            v = _vips_pipeline(img, min_side, tiles)
            if v is not None:
                return DecodePlan(True, (v.width, v.height), v.width * v.height, tiles, min_side)
        allocated = reduce_at_decode(img, min_side)
    size = _reduced_size(allocated, min_side)
    squeeze = _squeeze_factor(size, tiles)
    if squeeze > 1:
        size = _squeezed(size, squeeze)
    return DecodePlan(False, size, allocated[0] * allocated[1], tiles, min_side, squeeze)


def decode_image(
    img: Image.Image, plan: DecodePlan | None = None, *, min_side: int | None = None
) -> Image.Image:
    """Decode an image from `open_image` to an upright 8-bit RGB PIL image (first frame of animations).

    plan: from `plan_decode` (min_side is then ignored); without one, `plan_decode(img, min_side=)`.
    The reduction is a box filter (DCT scaling for JPEG), so the model's own resize, from >= 2x its
    input size, sees what it would have seen from the full image, to resampling differences. EXIF
    orientation is applied (from the header; a PNG's eXIf chunk after its image data is not seen,
    as in `upright_size`). Alpha is composited on white; CMYK, palette, grey and 16-bit images are
    converted to 8-bit RGB (16-bit is scaled by 1/257). The result's info["tiles"] is plan.tiles.
    Raises MediaError for corrupt or truncated data. Pillow's own bomb check (global
    MAX_IMAGE_PIXELS, untouched) still refuses above 2x its default, whatever the caller's limit says.
    """
    plan = plan or plan_decode(img, min_side=min_side)
    with _pillow_errors():
        out = _decode_streamed(img, plan) if plan.streamed else _decode_pillow(img, plan)
    out.info["tiles"] = plan.tiles
    return out


def split_tiles(image: Image.Image, tiles: int) -> list[Image.Image]:
    """Cut an upright decoded image into `tiles` tiles along its long side (edges where ClipBackend's
    panorama tiling puts them). A tile longer than square (a capped panorama's, decoded squeezed by
    `plan_decode(tiles=)`) is resized to a square of the short side: bicubic, from less than 2x
    (the integer part of the squeeze was a box reduce at decode); shorter tiles are plain crops."""
    if tiles <= 1:
        return [image]
    w, h = image.size
    long, short = max(w, h), min(w, h)
    edges = [round(k * long / tiles) for k in range(tiles + 1)]
    boxes = [(a, 0, b, h) if w >= h else (0, a, w, b) for a, b in itertools.pairwise(edges)]
    square = (short, short)
    out = []
    for box in boxes:
        tile = image.crop(box)
        out.append(tile.resize(square, Image.Resampling.BICUBIC) if max(tile.size) > short else tile)
    return out


def load_image(
    data: bytes | Path,
    *,
    max_pixels: int = 50_000_000,
    max_aspect: float | None = None,
    min_side: int | None = None,
) -> Image.Image:
    """`decode_image(open_image(...))`: header checked before any pixel is decoded."""
    return decode_image(open_image(data, max_pixels=max_pixels, max_aspect=max_aspect), min_side=min_side)


def _streamable(img: Image.Image) -> bool:
    return img.format in _STREAMED and img.mode in _STREAMED_MODES and _have_vips()


def _have_vips() -> bool:
    """pyvips importable (the GPU image installs it): without it, every format but JPEG is a
    full-size decode, limited by FULL_DECODE_MAX_PIXELS, never silently expensive."""
    try:
        _pyvips()
    except (ImportError, OSError):
        return False
    return True


def _reduced_size(size: tuple[int, int], min_side: int | None) -> tuple[int, int]:
    factor = 1 if min_side is None else min(size) // min_side
    return size if factor < 2 else (math.ceil(size[0] / factor), math.ceil(size[1] / factor))


def _squeeze_factor(size: tuple[int, int], tiles: int) -> int:
    """Integer box factor along the long side that keeps each of `tiles` tiles at least square."""
    if tiles <= 1:
        return 1
    return max(1, max(size) // tiles // min(size))


def _squeezed(size: tuple[int, int], f: int) -> tuple[int, int]:
    w, h = size
    return (math.ceil(w / f), h) if w >= h else (w, math.ceil(h / f))


def _decode_pillow(img: Image.Image, plan: DecodePlan) -> Image.Image:
    reduce_at_decode(img, plan.min_side)
    img.load()
    if img.mode in _REDUCE_FIRST:
        out = _to_rgb(_squeeze(_reduce(img, plan.min_side), plan.squeeze))
        return _upright_from(img, out)
    return _squeeze(_reduce(_to_rgb(_upright(img)), plan.min_side), plan.squeeze)


def _squeeze(img: Image.Image, f: int) -> Image.Image:
    if f < 2:
        return img
    return img.reduce((f, 1) if img.width >= img.height else (1, f))


def _upright_from(source: Image.Image, img: Image.Image) -> Image.Image:
    """img (decoded from `source`, maybe reduced) turned by `source`'s EXIF orientation."""
    if source.format == "PNG" and "exif" not in source.info:
        return img  # Pillow's PNG getexif() would decode the whole image to look for a late eXIf
    method = _ORIENTATION.get(source.getexif().get(ExifTags.Base.Orientation, 1))
    return img if method is None else img.transpose(method)


# ------------------------------------------------------------------------------ libvips (streamed)
_vips_lock = threading.Lock()
_vips: Any = None


def _pyvips() -> Any:
    """pyvips, configured once: no operation cache (it would keep decoded images alive), one
    thread per decode (the worker runs MEDIA_CONCURRENCY decodes at once), untrusted loaders off."""
    global _vips
    with _vips_lock:
        if _vips is None:
            import pyvips

            pyvips.cache_set_max(0)
            pyvips.concurrency_set(1)
            pyvips.block_untrusted_set(True)
            _vips = pyvips
    return _vips


def _vips_pipeline(img: Image.Image, min_side: int | None, tiles: int) -> Any:
    """The lazy libvips pipeline (load, reduce, squeeze) for an opened image; reads its header only.
    None if libvips reads it as something this module does not convert (then Pillow decodes it)."""
    pyvips = _pyvips()
    source, (width, height) = img.encoded_source, img.header_size
    loader = _STREAMED[img.format]
    options: dict[str, Any] = {"access": "sequential", "fail_on": "truncated"}
    dct = 1
    if img.format in _JPEG and min_side is not None:
        dct = next(f for f in (8, 4, 2, 1) if f == 1 or min(width, height) // f >= min_side)
        options["shrink"] = dct
    try:
        if isinstance(source, Path):
            v = getattr(pyvips.Image, loader)(str(source), **options)
        else:
            v = getattr(pyvips.Image, loader + "_buffer")(source, **options)
    except pyvips.Error as e:
        raise MediaError(
            f"the image could not be decoded ({img.format} header: {_vips_reason(e, source)})"
        ) from None
    if abs(v.width - width / dct) > 1 or abs(v.height - height / dct) > 1:
        raise MediaError(f"the image could not be decoded (its {img.format} header is ambiguous)")
    if v.format not in ("uchar", "ushort") or not 1 <= v.bands <= 4 or v.interpretation in ("cmyk", "lab"):
        return None
    size = (v.width, v.height)
    k = 1 if min_side is None else min(size) // min_side
    if k >= 2:
        v = v.shrink(k, k)
    f = _squeeze_factor((v.width, v.height), tiles)
    if f >= 2:
        v = v.shrink(f, 1) if v.width >= v.height else v.shrink(1, f)
    return v


def _decode_streamed(img: Image.Image, plan: DecodePlan) -> Image.Image:
    pyvips = _pyvips()
    v = _vips_pipeline(img, plan.min_side, plan.tiles)
    try:
        pixels = v.write_to_memory()  # the only full pass over the file: strip by strip
    except pyvips.Error as e:
        reason = _vips_reason(e, img.encoded_source)
        raise MediaError(f"the image could not be decoded ({img.format}: {reason})") from None
    dtype = np.uint16 if v.format == "ushort" else np.uint8
    arr = np.frombuffer(pixels, dtype=dtype).reshape(v.height, v.width, v.bands)
    if dtype is np.uint16:
        arr = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[v.bands]
    out = Image.fromarray(arr[..., 0] if v.bands == 1 else arr, mode)
    return _upright_from(img, _to_rgb(out))


def _vips_reason(e: Exception, source: object) -> str:
    """The first line of a libvips error, without the file name it may carry (a temp path)."""
    text = str(getattr(e, "detail", "") or e)
    if isinstance(source, Path):
        text = text.replace(str(source), "the file")
    line = next((t.strip() for t in text.splitlines() if t.strip()), "error")
    return line[:120]


def _upright(img: Image.Image) -> Image.Image:
    # in place: exif_transpose otherwise returns a full copy even of an image it does not rotate
    ImageOps.exif_transpose(img, in_place=True)
    return img


def _reduce(img: Image.Image, min_side: int | None) -> Image.Image:
    factor = 1 if min_side is None else min(img.size) // min_side
    return img.reduce(factor) if factor >= 2 else img


@contextlib.contextmanager
def _pillow_errors() -> Iterator[None]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except Image.DecompressionBombError as e:
        raise MediaError(f"image is too large ({e})") from e
    except UnidentifiedImageError as e:
        raise MediaError("not a recognised image format") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # Pillow reports truncated/corrupt data as OSError ("image file is truncated"), SyntaxError
        # (bad chunk) or ValueError/EOFError depending on the plugin.
        raise MediaError(f"the image could not be decoded ({type(e).__name__}: {e})") from e


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        grey = np.asarray(img, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        grey = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if mode == "L" and "transparency" in img.info:
        has_alpha = True
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
