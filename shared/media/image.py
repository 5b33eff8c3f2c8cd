"""Image loading with Pillow: header-checked size and shape caps, EXIF orientation, 8-bit RGB, and
decoding at the size the model needs (`min_side`), not the size the file has."""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from shared.errors import MediaError

MIN_SIDE = 1  # 1x1 is accepted: CLIP preprocessing resizes anything
_BACKGROUND = (255, 255, 255)


_REDUCE_FIRST = ("RGB", "RGBA", "L", "LA", "CMYK")  # modes Image.reduce averages correctly as they are


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
    if min_side is None or img.format != "JPEG" or getattr(img, "decoderconfig", None):
        return img.size
    factor = next(f for f in (8, 4, 2, 1) if f == 1 or min(img.size) // f >= min_side)
    if factor > 1:
        # Pillow picks the largest scale s <= min(w // req_w, h // req_h); with req = side // factor
        # that is exactly `factor`, since side // factor >= min_side > 8
        img.draft(img.mode, (img.width // factor, img.height // factor))
    return img.size


def open_image(
    data: bytes | Path, *, max_pixels: int = 50_000_000, max_aspect: float | None = None
) -> Image.Image:
    """Open an image and check its header only (no pixel data decoded yet): returns the lazy image.

    Refused with MediaError: empty or unrecognised data, a side of 0 px, more than `max_pixels`
    pixels, or (when `max_aspect` is given) a long/short side ratio above `max_aspect`. So a tiny
    file claiming 20000x20000, or a 20000x1 strip, costs nothing but its header.
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
        return img


def upright_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image once its EXIF orientation is applied, from the header only
    (a PNG's eXIf chunk after the image data is not seen: Pillow finds it only by decoding)."""
    if img.format == "PNG" and "exif" not in img.info:
        return img.size
    turned = img.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
    return (img.height, img.width) if turned else (img.width, img.height)


def decode_image(img: Image.Image, *, min_side: int | None = None) -> Image.Image:
    """Decode an image from `open_image` to an upright 8-bit RGB PIL image (first frame of animations).

    min_side: the decoded short side the caller needs; the image is decoded (JPEG) or reduced right
    after decoding (other formats) by an integer factor that keeps its short side >= min_side, so
    what follows (orientation, RGB conversion, the model's resize) runs on the small bitmap. The
    reduction is a box filter (DCT scaling for JPEG), so the model's own resize, from >= 2x its
    input size, sees what it would have seen from the full image, to resampling differences.
    None decodes at full size. EXIF orientation is applied. Alpha is composited on white; CMYK,
    palette, grey and 16-bit images are converted to 8-bit RGB (16-bit grey is scaled by 1/257).
    Raises MediaError for corrupt or truncated data. Pillow's own bomb check (global
    MAX_IMAGE_PIXELS, untouched) still refuses above 2x its default, whatever the caller's limit says.
    """
    with _pillow_errors():
        reduce_at_decode(img, min_side)
        img.load()
        if img.mode in _REDUCE_FIRST:
            return _to_rgb(_upright(_reduce(img, min_side)))
        return _reduce(_to_rgb(_upright(img)), min_side)


def load_image(
    data: bytes | Path,
    *,
    max_pixels: int = 50_000_000,
    max_aspect: float | None = None,
    min_side: int | None = None,
) -> Image.Image:
    """`decode_image(open_image(...))`: header checked before any pixel is decoded."""
    return decode_image(open_image(data, max_pixels=max_pixels, max_aspect=max_aspect), min_side=min_side)


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
