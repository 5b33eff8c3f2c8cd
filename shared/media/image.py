"""Image loading with Pillow: header-checked size cap, EXIF orientation, everything to 8-bit RGB."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.errors import MediaError

MIN_SIDE = 1  # 1x1 is accepted: CLIP preprocessing resizes anything
_BACKGROUND = (255, 255, 255)


def load_image(data: bytes | Path, *, max_pixels: int = 50_000_000) -> Image.Image:
    """Decode an image to an upright 8-bit RGB PIL image (first frame of animations).

    The pixel count is checked from the header before any pixel data is decoded, so a tiny file
    claiming 20000x20000 is refused without allocating. EXIF orientation is applied. Alpha is
    composited on white; CMYK, palette, grey and 16-bit images are converted to 8-bit RGB (16-bit
    grey is scaled by 1/257). Raises MediaError for empty, corrupt, truncated, unknown or oversized
    images. Pillow's own bomb check (global MAX_IMAGE_PIXELS, untouched) still refuses above
    2x its default, whatever `max_pixels` says.
    """
    raw = data.read_bytes() if isinstance(data, Path) else data
    if not raw:
        raise MediaError("the image is empty (zero bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))
            width, height = img.size
            if width < MIN_SIDE or height < MIN_SIDE:
                raise MediaError(f"image has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise MediaError(f"image is too large: {width}x{height} pixels, limit {max_pixels} pixels")
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
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
