"""VideoMAE backend on a tiny random-weight dev model (real 768-d output, 16 frames, 224 px)."""

from __future__ import annotations

import numpy as np
import pytest

from shared.errors import InvalidInput
from shared.models import registry
from shared.models.videomae import VideoMAEBackend

pytestmark = pytest.mark.integration


def clip_frames(t: int, seed: int, h: int = 36, w: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)


def test_identity_and_shape(videomae: VideoMAEBackend) -> None:
    entry = registry.get("videomae-base")
    assert videomae.dims == entry.dims == 768
    assert videomae.num_frames == entry.preprocessing["num_frames"] == 16
    assert videomae.image_size == 224
    assert videomae.random and "random-weights" in videomae.model_label
    v = videomae.embed(clip_frames(16, 1))
    assert v.shape == (768,) and v.dtype == np.float32
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)


def test_short_clip_is_padded_by_repeating_the_last_frame(videomae: VideoMAEBackend) -> None:
    short = clip_frames(5, 2)
    padded = np.concatenate([short, np.repeat(short[-1:], 11, axis=0)])
    np.testing.assert_allclose(videomae.embed(short), videomae.embed(padded), atol=1e-6)
    assert np.abs(videomae.embed(short) - videomae.embed(clip_frames(16, 2))).max() > 1e-3


def test_batch_equals_single(videomae: VideoMAEBackend) -> None:
    clips = [clip_frames(16, 3), clip_frames(9, 4, 40, 30)]
    batch = videomae.embed_batch(clips)
    single = np.stack([videomae.embed(c) for c in clips])
    assert batch.shape == (2, 768)
    np.testing.assert_allclose(batch, single, atol=1e-5)
    assert videomae.embed_batch([]).shape == (0, 768)


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((17, 8, 8, 3), np.uint8),
        np.zeros((0, 8, 8, 3), np.uint8),
        np.zeros((16, 8, 8, 3), np.float32),
        np.zeros((16, 8, 8), np.uint8),
    ],
)
def test_bad_clips(videomae: VideoMAEBackend, frames) -> None:
    with pytest.raises(InvalidInput) as err:
        videomae.embed(frames)
    assert err.value.field == "frames"
