"""Image loading with Pillow: header-checked size and shape caps, EXIF orientation, 8-bit RGB."""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.errors import MediaError

MIN_SIDE = 1  # 1x1 is accepted: CLIP preprocessing resizes anything
_BACKGROUND = (255, 255, 255)


def tile_count(width: int, height: int, max_ratio: float | None) -> int:
    """How many panorama tiles CLIP cuts an image of this size into: 1 up to `max_ratio`, else
    ceil(long / short). Known from the header alone, so work is bounded before decoding: an image
    whose ratio is at most N:1 gets at most N tiles (`open_image(max_aspect=N)`)."""
    long, short = max(width, height), min(width, height)
    if max_ratio is None or long <= max_ratio * short:
        return 1
    return math.ceil(long / short)


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
                f"(PANORAMA_MAX_TILES)"
            )
        return img


def decode_image(img: Image.Image) -> Image.Image:
    """Decode an image from `open_image` to an upright 8-bit RGB PIL image (first frame of animations).

    EXIF orientation is applied. Alpha is composited on white; CMYK, palette, grey and 16-bit images
    are converted to 8-bit RGB (16-bit grey is scaled by 1/257). Raises MediaError for corrupt or
    truncated data. Pillow's own bomb check (global MAX_IMAGE_PIXELS, untouched) still refuses above
    2x its default, whatever the caller's limit says.
    """
    with _pillow_errors():
        img.load()
        return _to_rgb(ImageOps.exif_transpose(img))


def load_image(
    data: bytes | Path, *, max_pixels: int = 50_000_000, max_aspect: float | None = None
) -> Image.Image:
    """`decode_image(open_image(...))`: header checked before any pixel is decoded."""
    return decode_image(open_image(data, max_pixels=max_pixels, max_aspect=max_aspect))


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
