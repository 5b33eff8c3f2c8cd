"""Image loading: orientation, modes, size cap before decode, corrupt input."""

import io

import numpy as np
import pytest
from PIL import Image

from shared.dev.media import make_image_bytes, marker_corner, png_with_claimed_size
from shared.errors import MediaError
from shared.media import load_image

pytestmark = pytest.mark.integration

RED = (255, 0, 0)
GREY = (40, 40, 40)
WHITE = (255, 255, 255)


def pixel(img: Image.Image, x: int, y: int) -> np.ndarray:
    return np.asarray(img)[y, x].astype(int)


@pytest.mark.parametrize(
    ("orientation", "size", "corner"),
    [
        (1, (32, 24), "tl"),
        (2, (32, 24), "tr"),
        (3, (32, 24), "br"),
        (4, (32, 24), "bl"),
        (5, (24, 32), "tl"),
        (6, (24, 32), "tr"),  # the usual phone portrait shot: rotate 90 degrees clockwise
        (7, (24, 32), "br"),
        (8, (24, 32), "bl"),
    ],
)
def test_exif_orientation_is_applied(orientation: int, size: tuple[int, int], corner: str) -> None:
    img = load_image(make_image_bytes((32, 24), "RGB", "JPEG", exif_orientation=orientation))
    assert img.mode == "RGB"
    assert img.size == size
    assert marker_corner(np.asarray(img)) == corner


@pytest.mark.parametrize(
    ("mode", "fmt", "right_half"),
    [
        ("RGBA", "PNG", WHITE),  # transparent right half composited on white
        ("LA", "PNG", WHITE),
        ("PA", "PNG", WHITE),  # palette with transparency
        ("RGBA", "WEBP", WHITE),
        ("P", "PNG", GREY),
        ("P", "GIF", GREY),
        ("CMYK", "JPEG", GREY),
        ("CMYK", "TIFF", GREY),
        ("L", "PNG", GREY),
        ("I;16", "PNG", GREY),  # 16-bit grey scaled to 8 bits, not clipped to white
        ("RGB", "BMP", GREY),
    ],
)
def test_modes_become_8bit_rgb(mode: str, fmt: str, right_half: tuple[int, int, int]) -> None:
    data = make_image_bytes((32, 24), mode, fmt)
    assert Image.open(io.BytesIO(data)).mode != "RGB" or mode == "RGB"
    img = load_image(data)
    assert img.mode == "RGB" and img.size == (32, 24)
    np.testing.assert_allclose(pixel(img, 28, 20), right_half, atol=3)
    np.testing.assert_allclose(pixel(img, 8, 20), GREY, atol=3)
    if mode not in ("L", "LA", "I;16"):
        np.testing.assert_allclose(pixel(img, 1, 1), RED, atol=12)


def test_tiny_images_are_accepted() -> None:
    img = load_image(make_image_bytes((1, 1), "RGB", "PNG"))
    assert img.size == (1, 1) and img.mode == "RGB"
    assert load_image(make_image_bytes((3, 1), "L", "PNG")).size == (3, 1)


def test_path_input(tmp_path) -> None:
    p = tmp_path / "x.png"
    p.write_bytes(make_image_bytes((10, 8), "RGB", "PNG"))
    assert load_image(p).size == (10, 8)


def test_bomb_header_is_refused_before_decoding() -> None:
    bomb = png_with_claimed_size(20000, 20000)
    assert len(bomb) < 200
    with pytest.raises(MediaError, match="too large"):
        load_image(bomb)
    # under Pillow's own limit, our max_pixels decides, from the header
    with pytest.raises(MediaError, match="10000x6000 pixels, limit 50000000"):
        load_image(png_with_claimed_size(10000, 6000))
    with pytest.raises(MediaError, match="too large"):
        load_image(make_image_bytes((32, 24), "RGB", "PNG"), max_pixels=700)


def test_no_global_pillow_limit_is_changed() -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(MediaError):
        load_image(png_with_claimed_size(10000, 6000))
    load_image(make_image_bytes((4, 4), "RGB", "PNG"), max_pixels=100)
    assert before == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"definitely not an image", "not a recognised image format"),
        (make_image_bytes((64, 48), "RGB", "PNG")[:80], "could not be decoded"),
        (make_image_bytes((64, 48), "RGB", "JPEG")[:300], "could not be decoded"),
        (png_with_claimed_size(8, 8), "could not be decoded"),  # IDAT too short for 8x8
    ],
)
def test_corrupt_or_truncated(data: bytes, match: str) -> None:
    with pytest.raises(MediaError, match=match):
        load_image(data)


@pytest.mark.parametrize(
    ("fmt", "size", "min_side", "decoded", "expected"),
    [
        ("JPEG", (4000, 3000), 512, (1000, 750), (1000, 750)),  # DCT 1/4: 375 < 512 rules out 1/8
        ("JPEG", (8656, 5776), 512, (1082, 722), (1082, 722)),  # DCT 1/8
        ("JPEG", (1000, 600), 512, (1000, 600), (1000, 600)),  # 300 < 512: full size
        ("PNG", (4000, 3000), 512, (4000, 3000), (800, 600)),  # full decode, then reduce(5)
        ("WEBP", (2100, 1100), 512, (2100, 1100), (1050, 550)),
        ("PNG", (4000, 3000), None, (4000, 3000), (4000, 3000)),
    ],
)
def test_decoded_at_the_size_asked_for(fmt, size, min_side, decoded, expected) -> None:
    from shared.media import decode_image, open_image
    from shared.media.image import reduce_at_decode

    img = open_image(make_image_bytes(size, "RGB", fmt))
    assert reduce_at_decode(img, min_side) == decoded  # the bitmap the decoder allocates, header only
    assert reduce_at_decode(img, min_side) == decoded  # again: a no-op
    out = decode_image(img, min_side=min_side)
    assert out.size == expected and out.mode == "RGB"
    assert min_side is None or min(out.size) >= min_side
    assert marker_corner(np.asarray(out)) == "tl"


@pytest.mark.parametrize(("fmt", "mode"), [("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "I;16")])
def test_reduced_decode_keeps_orientation_and_modes(fmt: str, mode: str) -> None:
    from shared.media.image import open_image, upright_size

    data = make_image_bytes((3200, 2400), mode, fmt, exif_orientation=6)
    assert upright_size(open_image(data)) == (2400, 3200)
    full = load_image(data)
    small = load_image(data, min_side=512)
    assert full.size == (2400, 3200) and small.mode == "RGB" and min(small.size) >= 512
    assert small.size[0] < small.size[1]
    if mode != "I;16":  # grey: no red marker to find
        assert marker_corner(np.asarray(small)) == "tr"
    # what the model sees: the reduced image resized to 256 matches the full one resized to 256
    a = np.asarray(full.resize((256, 341), Image.BICUBIC), np.float32)
    b = np.asarray(small.resize((256, 341), Image.BICUBIC), np.float32)
    assert np.abs(a - b).mean() < 2.0
