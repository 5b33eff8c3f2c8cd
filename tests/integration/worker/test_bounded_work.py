"""Work is bounded by policy, not by input: extreme image shapes through the real (dev) CLIP in one
in-process Worker, with model views and decoded pixels COUNTED (never timed), while a clip_text
query on the same worker still answers. Policy (shared.worker.settings, shared.media.image):
an aspect ratio beyond MAX_IMAGE_ASPECT:1 is refused from the header (media_error), as is more
than MAX_IMAGE_PIXELS; a job's summed header pixels over JOB_MAX_PIXELS is payload_too_large;
decodes in flight stay under WORKER_MAX_PIXELS; anything else costs at most PANORAMA_MAX_TILES x 5
views, and is decoded at the size those views need (streamed through libvips: a JPEG at 1/2-1/8
straight from the DCT, a PNG reduced strip by strip, a capped panorama squeezed at decode)."""

from __future__ import annotations

import asyncio
import base64
import shutil
from pathlib import Path

import numpy as np
import pytest

from shared.dev.media import make_image_bytes, png_with_claimed_size
from shared.worker.models import Models
from shared.worker.settings import WorkerSettings
from shared.worker.worker import Worker

pytestmark = pytest.mark.integration

MAX_TILES = 2
TTA_VIEWS = 5
MIN_SIDE = 2 * 256  # decoded short side: 2x the dev CLIP's TTA resize (224 * 8/7)
WORKER_BUDGET = 60_000_000  # room for the 50 MP image, not for two of them


@pytest.fixture(scope="module")
def clip(dev_model_dir: Path):
    from shared.models.clip import ClipBackend

    return ClipBackend.from_model_dir(dev_model_dir, "clip-vit-b-32")


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    return {
        "1x20000": make_image_bytes((1, 20000)),
        "20000x1": make_image_bytes((20000, 1)),
        "2x2": make_image_bytes((2, 2)),
        "1x1": make_image_bytes((1, 1)),
        "8to1": make_image_bytes((1600, 200), fmt="JPEG"),
        "9to1": make_image_bytes((1800, 200), fmt="JPEG"),
        "50mp": make_image_bytes((8660, 5773), fmt="JPEG"),
        "8k-png": make_image_bytes((7680, 4320), fmt="PNG"),  # at INFLATE_MAX_PIXELS
        "2mp": make_image_bytes((1600, 1250), fmt="PNG"),
        "1mp-bmp": make_image_bytes((1200, 1000), fmt="BMP"),
        "2mp-jpeg": make_image_bytes((1600, 1250), fmt="JPEG"),
        "claims-50mp": png_with_claimed_size(7000, 7000),
        "claims-30mp": png_with_claimed_size(6000, 5000),  # under INFLATE_MAX_PIXELS, 32 over JOB_MAX_PIXELS
    }


def make_worker(clip, tmp_path: Path, **env: str) -> Worker:
    settings = WorkerSettings.from_env(
        {"WORKER_MAX_PIXELS": str(WORKER_BUDGET), "BATCH_WINDOW_MS": "5", **env}, cuda_available=lambda: False
    )
    worker = Worker(settings, Models(clip=clip))

    def download(url: str, dest: Path, max_bytes: int) -> Path:
        out = dest / "download.img"
        shutil.copy(tmp_path / url.rsplit("/", 1)[-1], out)
        return out

    worker.download = download
    worker.upload = lambda url, data, ctype: None
    return worker


def clip_image(data: bytes | list[bytes], tta: bool = True) -> dict:
    items = data if isinstance(data, list) else [data]
    return {
        "task": "clip_image",
        "images": [{"base64": base64.b64encode(d).decode()} for d in items],
        "tta": tta,
    }


REFUSED = {
    "1x20000": "media_error",
    "20000x1": "media_error",
    "9to1": "media_error",
}


def test_extreme_shapes_cost_bounded_views_or_a_clean_refusal(clip, images, tmp_path):
    worker = make_worker(clip, tmp_path)
    names = ["1x20000", "20000x1", "2x2", "1x1", "8to1", "9to1", "50mp"]
    query = ["a photo of a dog", "a diagram"]

    async def main():
        jobs = [worker.handle({"id": n, "input": clip_image(images[n])}) for n in names]
        jobs.append(worker.handle({"id": "q", "input": {"task": "clip_text", "texts": query}}))
        return await asyncio.gather(*jobs)

    views_before = clip.views_encoded
    *outs, text = asyncio.run(main())
    np.testing.assert_allclose(np.array(text["vectors"], np.float32), clip.embed_texts(query), atol=1e-5)
    served_pixels = 0
    for name, out in zip(names, outs, strict=True):
        if name in REFUSED:
            assert out["error"]["code"] == REFUSED[name], (name, out)
            assert out["error"]["field"] == "input.images[0]"
            assert "MAX_IMAGE_ASPECT" in out["error"]["message"]
        else:
            assert len(out["vectors"]) == 1 and out["tta"] is True, name
            # the 50 MP JPEG decodes at 1/8 (5773 // 8 >= MIN_SIDE); the 8:1 strip's 200 px short side
            # cannot shrink, but its 2 tiles of 800x200 are squeezed 4x along the long side at
            # decode (400x200); tiny images are what they are
            served_pixels += {"2x2": 4, "1x1": 1, "8to1": 400 * 200, "50mp": 1082 * 721}[name]
    # views counted: 5 (TTA) each for 2x2, 1x1 and the 50 MP photo; the 8:1 panorama's 2 tiles (the
    # cap) are its views, one each
    assert clip.views_encoded - views_before == 3 * TTA_VIEWS + MAX_TILES
    # decoded pixels counted: exactly the served images' bitmaps; the refused never reached a decoder
    assert worker.budget.stats.decoded == served_pixels
    assert worker.budget.stats.peak <= WORKER_BUDGET and worker.budget.stats.in_use == 0


def test_an_8k_png_is_streamed_straight_to_the_reduced_size(clip, images, tmp_path):
    """libvips reads the PNG strip by strip through the box reduce: the budget holds the reduced
    bitmap only (7680x4320 // 8 -> 960x540), the views are 5."""
    worker = make_worker(clip, tmp_path, MAX_IMAGE_BYTES=str(len(images["8k-png"]) + 1))
    views_before = clip.views_encoded
    out = asyncio.run(worker.handle({"id": "png", "input": clip_image(images["8k-png"])}))
    assert len(out["vectors"]) == 1
    assert worker.budget.stats.decoded == 960 * 540
    assert clip.views_encoded - views_before == TTA_VIEWS


@pytest.mark.parametrize(
    ("setting", "image", "pixels"),
    [("INFLATE_MAX_PIXELS", "2mp", 1600 * 1250), ("FULL_DECODE_MAX_PIXELS", "1mp-bmp", 1200 * 1000)],
)
def test_the_header_limits_are_the_workers_settings(clip, images, tmp_path, setting, image, pixels):
    """The format limits are settings (WorkerSettings.image_header_limits, what every job that opens
    an image passes to open_image): one pixel under the image's size refuses it from its header."""
    views_before = clip.views_encoded
    tight = make_worker(clip, tmp_path, **{setting: str(pixels - 1)})
    out = asyncio.run(tight.handle({"id": "lim", "input": clip_image(images[image])}))
    assert out["error"]["code"] == "media_error" and setting in out["error"]["message"]
    assert tight.budget.stats.decoded == 0 and clip.views_encoded == views_before
    at = make_worker(clip, tmp_path, **{setting: str(pixels)})
    assert len(asyncio.run(at.handle({"id": "ok", "input": clip_image(images[image])}))["vectors"]) == 1


def test_a_png_beyond_the_inflate_limit_is_refused_from_its_header(clip, images, tmp_path):
    """A 50 MP PNG would be inflated whole, serially (~2.3x an ordinary photo's job): refused."""
    worker = make_worker(clip, tmp_path)
    views_before = clip.views_encoded
    out = asyncio.run(worker.handle({"id": "png", "input": clip_image(images["claims-50mp"])}))
    assert out["error"]["code"] == "media_error" and "INFLATE_MAX_PIXELS" in out["error"]["message"]
    assert worker.budget.stats.decoded == 0 and clip.views_encoded == views_before


def test_jpegs_hold_only_their_reduced_bitmaps(clip, images, tmp_path):
    worker = make_worker(clip, tmp_path)
    out = asyncio.run(worker.handle({"id": "j", "input": clip_image([images["2mp-jpeg"]] * 4)}))
    assert len(out["vectors"]) == 4
    assert worker.budget.stats.decoded == 4 * 800 * 625  # 1/2 scale: 625 >= MIN_SIDE, 312 is not


def test_panoramas_cost_one_view_per_tile(clip, tmp_path):
    worker = make_worker(clip, tmp_path)
    shapes = [(1000, 1000), (2600, 1000), (2700, 1000), (4000, 1000), (1000, 8000), (8000, 1000)]
    expected_tiles = [1, 1, 2, 2, 2, 2]
    for (w, h), tiles in zip(shapes, expected_tiles, strict=True):
        before = clip.views_encoded
        out = asyncio.run(
            worker.handle({"id": "p", "input": clip_image(make_image_bytes((w, h), fmt="JPEG"))})
        )
        assert len(out["vectors"]) == 1, (w, h)
        assert clip.views_encoded - before == (TTA_VIEWS if tiles == 1 else tiles), (w, h)


def test_32_large_images_in_one_job_are_refused_from_their_headers(clip, images, tmp_path):
    worker = make_worker(clip, tmp_path)
    views_before = clip.views_encoded
    out = asyncio.run(worker.handle({"id": "big", "input": clip_image([images["claims-30mp"]] * 32)}))
    assert out["error"]["code"] == "payload_too_large" and out["error"]["field"] == "input.images"
    assert "JOB_MAX_PIXELS" in out["error"]["message"]
    assert worker.budget.stats.decoded == 0 and clip.views_encoded == views_before


def test_32_images_in_one_job_decode_one_at_a_time_under_the_worker_budget(clip, images, tmp_path):
    pixels = 800 * 625  # PNG, streamed: only the reduced bitmap (1/2) is allocated
    worker = make_worker(clip, tmp_path, WORKER_MAX_PIXELS=str(4 * pixels), MAX_IMAGE_PIXELS=str(4 * pixels))
    views_before = clip.views_encoded

    async def main():
        big = worker.handle({"id": "32", "input": clip_image([images["2mp"]] * 32)})
        others = [worker.handle({"id": f"o{i}", "input": clip_image(images["2mp"])}) for i in range(3)]
        text = worker.handle({"id": "q", "input": {"task": "clip_text", "texts": ["still answers"]}})
        return await asyncio.gather(big, *others, text)

    big, *others, text = asyncio.run(main())
    assert len(big["vectors"]) == 32 and all(len(o["vectors"]) == 1 for o in others)
    assert len(text["vectors"]) == 1
    stats = worker.budget.stats
    assert stats.decoded == 35 * pixels and stats.peak <= 4 * pixels and stats.in_use == 0
    assert clip.views_encoded - views_before == 35 * TTA_VIEWS
    rows = np.array(big["vectors"], np.float32)
    np.testing.assert_allclose(rows, np.repeat(rows[:1], 32, axis=0), atol=1e-5)  # same image, same row


def test_embed_item_images_follow_the_same_policy(clip, images, tmp_path):
    for name in ("9to1", "2x2", "claims-50mp"):
        (tmp_path / name).write_bytes(images[name])
    worker = make_worker(clip, tmp_path, WORKER_TASKS="embed_item", WORKER_CHANNELS="image_clip")

    def job(name: str) -> dict:
        return {
            "task": "embed_item",
            "item": {"owner_id": "o", "item_id": "i", "modality": "image"},
            "source_url": f"https://bucket.example/{name}",
            "channels": ["image_clip"],
            "outputs": {"image_clip": "https://bucket.example/out"},
        }

    wide = asyncio.run(worker.handle({"id": "w", "input": job("9to1")}))
    assert wide["error"]["code"] == "media_error" and wide["error"]["field"] == "input.source_url"
    claims = asyncio.run(worker.handle({"id": "c", "input": job("claims-50mp")}))
    assert claims["error"]["code"] == "media_error"  # a 50 MP PNG: over INFLATE_MAX_PIXELS
    tiny = asyncio.run(worker.handle({"id": "t", "input": job("2x2")}))
    assert tiny["channels"]["image_clip"]["status"] == "succeeded"
    assert tiny["channels"]["image_clip"]["tiles"] == 1
    assert worker.budget.stats.in_use == 0
