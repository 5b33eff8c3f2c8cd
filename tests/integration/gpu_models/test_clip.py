"""OpenCLIP backend on tiny random-weight dev models built through the real loader."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from shared.errors import ConfigError, InvalidInput
from shared.models import registry
from shared.models.backend import l2_normalize
from shared.models.clip import ClipBackend
from shared.worker.health import CANARIES

pytestmark = pytest.mark.integration


def picture(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(blocks.repeat(8, 0).repeat(8, 1)[:h, :w])


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [picture(120, 100, 1), picture(200, 300, 2), picture(64, 64, 3).convert("L"), picture(90, 80, 4)]


def unit_rows(x: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5))


def test_identity_and_shapes(clip: ClipBackend, images) -> None:
    entry = registry.get("clip-vit-b-32")
    # the Backend protocol minus warmup(): the worker's one canary (shared.worker.health) checks it
    assert callable(clip.embed) and isinstance(clip.name, str) and not hasattr(clip, "warmup")
    assert clip.dims == entry.dims == 512
    assert clip.image_size == entry.preprocessing["image_size"] == 224
    assert clip.random is True and "random-weights" in clip.model_label
    assert clip.precision == "fp32" and clip.device == "cpu"
    out = clip.embed_images(images)
    assert out.shape == (4, 512) and out.dtype == np.float32 and unit_rows(out)
    assert clip.embed([]).shape == (0, 512)


def test_random_weights_are_logged_as_a_warning(gpu_model_dir, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        ClipBackend.from_model_dir(gpu_model_dir, "clip-vit-b-32")
    assert any("RANDOM weights" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_batch_equals_single(clip: ClipBackend, images) -> None:
    for tta in (False, True):
        batch = clip.embed_images(images, tta=tta)
        single = np.stack([clip.embed_images([im], tta=tta)[0] for im in images])
        np.testing.assert_allclose(batch, single, atol=1e-5)


def test_tta_differs_but_stays_unit(clip: ClipBackend, images) -> None:
    plain = clip.embed_images(images)
    tta = clip.embed_images(images, tta=True)
    assert unit_rows(tta)
    assert np.abs(plain - tta).max() > 1e-3
    # The 5 crops are the corners and centre of the short-side-256 resize: check one by hand.
    im = images[0]
    big = im.resize((round(256 * im.width / im.height), 256), Image.BICUBIC)
    centre = big.crop(((big.width - 224) // 2, 16, (big.width - 224) // 2 + 224, 240))
    corner = big.crop((0, 0, 224, 224))
    views = clip.embed_images([centre, corner], panorama_max_ratio=None)
    sims = tta[0] @ views.T
    assert (sims > 0.9).all(), sims


@pytest.mark.parametrize("size", [(600, 200), (200, 600)])
def test_panorama_is_tiled(clip: ClipBackend, size) -> None:
    pano = picture(*size, seed=7)
    tiled = clip.embed_images([pano])[0]
    whole = clip.embed_images([pano], panorama_max_ratio=None)[0]
    w, h = size
    boxes = (
        [(k * 200, 0, (k + 1) * 200, 200) for k in range(3)]
        if w > h
        else [(0, k * 200, 200, (k + 1) * 200) for k in range(3)]
    )
    tiles = clip.embed_images([pano.crop(b) for b in boxes], panorama_max_ratio=None)
    np.testing.assert_allclose(tiled, l2_normalize(tiles.mean(axis=0)), atol=1e-5)
    assert np.abs(tiled - whole).max() > 1e-3
    # Below the ratio nothing is tiled.
    np.testing.assert_allclose(clip.embed_images([pano], panorama_max_ratio=3.5)[0], whole, atol=1e-6)


def test_frames_match_images(clip: ClipBackend, images) -> None:
    frames = np.stack([np.asarray(im.convert("RGB").resize((64, 48))) for im in images])
    out = clip.embed_frames(frames)
    expected = clip.embed_images([Image.fromarray(f) for f in frames])
    assert out.shape == (4, 512)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_texts(clip: ClipBackend) -> None:
    out = clip.embed_texts(["a photo of a cat", "a diagram of a bridge", "a photo of a cat", "x" * 5000])
    assert out.shape == (4, 512) and unit_rows(out)
    np.testing.assert_allclose(out[0], out[2], atol=1e-6)
    assert np.abs(out[0] - out[1]).max() > 1e-3
    assert clip.embed_texts([]).shape == (0, 512)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.embed_images([np.zeros((4, 4, 3), np.uint8)]), "images"),
        (lambda c: c.embed_images([Image.new("RGB", (8, 8))], panorama_max_ratio=0.5), "panorama_max_ratio"),
        (lambda c: c.embed_frames(np.zeros((2, 8, 8, 3), np.float32)), "frames"),
        (lambda c: c.embed_frames(np.zeros((8, 8, 3), np.uint8)), "frames"),
        (lambda c: c.embed_texts(["ok", 3]), "texts"),
    ],
)
def test_bad_input(clip: ClipBackend, call, field) -> None:
    with pytest.raises(InvalidInput) as err:
        call(clip)
    assert err.value.field == field


def test_precision(gpu_model_dir) -> None:
    folder = registry.require_model(gpu_model_dir, "clip-vit-b-32")
    assert ClipBackend.load(folder, precision="fp16").precision == "fp32"  # CPU always runs fp32
    with pytest.raises(ConfigError, match="fp16"):
        ClipBackend.load(folder, precision="int4")


def test_eva02_is_selectable_through_the_same_loader(gpu_model_dir) -> None:
    entry = registry.get("clip-eva02-l-14-336")
    eva = ClipBackend.from_model_dir(gpu_model_dir, entry.name)
    assert (eva.dims, eva.image_size) == (entry.dims, entry.preprocessing["image_size"]) == (768, 336)
    assert eva.random and eva.name == entry.name
    assert type(eva._model.visual).__name__ == "TimmModel"  # the tower family EVA02-L uses
    assert eva._text_first.blocks == list(eva._model.visual.trunk.blocks)  # text first per block here too
    CANARIES["clip"](eva)
    out = eva.embed_images([picture(300, 200, 9)])
    assert out.shape == (1, 768) and unit_rows(out)


TEXTS = [
    "a photo of a cat",
    "x",
    "a much longer caption about a bridge over a river at dusk " * 3,
    "y " * 200,
]


def full_context(backend: ClipBackend, texts: list[str]) -> np.ndarray:
    """open_clip's own encode_text over the whole padded context: the reference for trimming."""
    import torch

    with torch.inference_mode():
        tokens = backend._tokenizer(texts)
        return l2_normalize(backend._model.encode_text(tokens).float().numpy())


@pytest.mark.parametrize("name", ["clip-vit-b-32", "clip-eva02-l-14-336"])
def test_trimmed_text_pass_equals_full_context(gpu_model_dir, clip: ClipBackend, name: str) -> None:
    backend = clip if name == "clip-vit-b-32" else ClipBackend.from_model_dir(gpu_model_dir, name)
    assert backend.trims_text  # both towers are causal with end-of-text pooling
    expected = full_context(backend, TEXTS)
    np.testing.assert_allclose(backend.embed_texts(TEXTS), expected, atol=2e-6)
    # a short text batched with long ones gets the same vector as alone (batch == single)
    alone = np.stack([backend.embed_texts([t])[0] for t in TEXTS])
    np.testing.assert_allclose(alone, expected, atol=2e-6)


def test_non_causal_text_tower_is_not_trimmed(tmp_path) -> None:
    """Without a causal mask later (padding) positions feed earlier ones: trimming would change
    vectors, so such a tower must go through open_clip's encode_text unchanged."""
    import json

    from shared.dev import models as devmodels

    cfg = json.loads(json.dumps(devmodels.CLIP_B32_CFG))
    cfg["model_cfg"]["text_cfg"]["no_causal_mask"] = True
    folder = tmp_path / "clip-noncausal"
    folder.mkdir()
    devmodels._save_open_clip(folder, cfg, fp16=False)
    backend = ClipBackend.load(folder, name="clip-vit-b-32")
    assert not backend.trims_text
    np.testing.assert_allclose(backend.embed_texts(TEXTS), full_context(backend, TEXTS), atol=1e-6)


def test_panorama_tiles_are_capped_and_squeezed(clip: ClipBackend) -> None:
    odd = picture(100, 900, seed=4)  # 9:1 upright: 2 tiles of 100x450, box-reduced to 100x112, then 100x100
    tiles = [
        odd.reduce((1, 4), box=(0, k * 450, 100, (k + 1) * 450)).resize((100, 100), Image.BICUBIC)
        for k in (0, 1)
    ]
    np.testing.assert_allclose(
        clip.embed_images([odd], panorama_max_tiles=2)[0],
        l2_normalize(clip.embed_images(tiles, panorama_max_ratio=None).mean(axis=0)),
        atol=1e-5,
    )
    pano = picture(800, 100, seed=3)  # 8:1 would be 8 tiles; capped at 2, each 400x100 -> 100x100
    before = clip.views_encoded
    capped = clip.embed_images([pano], tta=True, panorama_max_tiles=2)[0]
    assert clip.views_encoded - before == 2 * 5
    squeezed = [pano.reduce((4, 1), box=(k * 400, 0, (k + 1) * 400, 100)) for k in (0, 1)]
    tiles = clip.embed_images(squeezed, tta=True, panorama_max_ratio=None)
    np.testing.assert_allclose(capped, l2_normalize(tiles.mean(axis=0)), atol=1e-5)
    before = clip.views_encoded
    clip.embed_images([pano], tta=True)  # no cap: ceil(8) tiles
    assert clip.views_encoded - before == 8 * 5


@pytest.mark.parametrize(
    ("size", "tiles", "side"),
    [((4000, 3000), 1, 512), ((8000, 1000), 2, 512), ((2700, 1000), 2, 512), ((2800, 1000), 3, 549)],
)
def test_decode_side_keeps_every_tile_at_twice_the_resize(clip: ClipBackend, size, tiles, side) -> None:
    from shared.media.image import tile_count

    max_tiles = 2 if size != (2800, 1000) else 3
    assert tile_count(*size, 2.6, max_tiles) == tiles
    assert clip.decode_side(*size, panorama_max_ratio=2.6, panorama_max_tiles=max_tiles) == side


def test_cpu_image_passes_run_one_view_at_a_time(clip: ClipBackend, monkeypatch) -> None:
    """Between two views an image pass can yield to a text pass (counted: forward passes of 1)."""
    sizes: list[int] = []
    encode = clip._model.encode_image
    monkeypatch.setattr(clip._model, "encode_image", lambda px: sizes.append(len(px)) or encode(px))
    out = clip.embed_images(
        [picture(300, 200, seed=1), picture(900, 200, seed=2)], tta=True, panorama_max_tiles=2
    )
    assert out.shape == (2, 512) and sizes == [1] * (5 + 2 * 5)
    assert clip._text_first.passes == 0
    clip.embed_texts(["still"])
    assert clip._text_first.passes == 0


def test_an_image_pass_stops_between_vision_blocks_while_a_text_pass_runs(clip: ClipBackend, monkeypatch):
    """A text pass that starts during a view's forward pass stops the image side at the next block
    (not at the next view), and the view then finishes with the same vector as an unpaused one."""
    import threading

    import shared.models.clip as clip_module

    monkeypatch.setattr(clip_module, "TEXT_YIELD_S", 60.0)  # no timeout within the test: only the text
    gate = clip._text_first
    blocks = gate.blocks
    assert len(blocks) >= 2  # open_clip's transformer.resblocks, found on the loaded tower
    image = picture(300, 200, seed=7)
    expected = clip.embed_images([image])
    ran: list[int] = []
    in_first_block, text_started = threading.Event(), threading.Event()

    def record(index: int):
        def hook(_module, _args):
            ran.append(index)
            if index == 0:
                in_first_block.set()
                assert text_started.wait(30)

        return hook

    handles = [b.register_forward_pre_hook(record(i)) for i, b in enumerate(blocks)]
    try:
        result: list[np.ndarray] = []
        thread = threading.Thread(target=lambda: result.append(clip.embed_images([image])))
        waits = gate.waits
        thread.start()
        assert in_first_block.wait(30)
        with gate.text_pass():
            text_started.set()
            deadline = threading.Event()
            for _ in range(3000):  # until the image side is waiting (bounded: 30 s)
                if gate.waits > waits:
                    break
                deadline.wait(0.01)
            assert gate.waits == waits + 1
            assert ran == [0]  # stopped before block 1, mid-view
        thread.join(30)
        assert not thread.is_alive() and ran == list(range(len(blocks)))
    finally:
        for h in handles:
            h.remove()
    np.testing.assert_allclose(result[0], expected, atol=1e-6)


def test_a_text_pass_that_never_ends_only_slows_an_image_pass(clip: ClipBackend, monkeypatch):
    """Each wait is bounded by TEXT_YIELD_S: a stream of queries cannot stop an image job."""
    import shared.models.clip as clip_module

    monkeypatch.setattr(clip_module, "TEXT_YIELD_S", 0.001)
    gate = clip._text_first
    waits = gate.waits
    with gate.text_pass():
        out = clip.embed_images([picture(300, 200, seed=8)], tta=True)
    assert out.shape == (1, 512)
    assert gate.waits - waits == 5 * (1 + len(gate.blocks))  # before each view and each of its blocks
