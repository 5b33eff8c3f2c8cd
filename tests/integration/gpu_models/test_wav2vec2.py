"""wav2vec2 backend on tiny random-weight dev models (real 768-d output, 16 kHz, 50 frames/s)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shared.dev.models import WAV2VEC2_CFG
from shared.errors import InvalidInput
from shared.models import registry
from shared.models.wav2vec2 import SAMPLE_RATE, Wav2Vec2Backend

pytestmark = pytest.mark.integration


def noise(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def test_identity_and_shape(wav2vec2: Wav2Vec2Backend) -> None:
    entry = registry.get("wav2vec2-base")
    assert wav2vec2.dims == entry.dims == 768
    assert wav2vec2.max_seconds == entry.preprocessing["max_seconds"] == 90
    assert wav2vec2.random and "random-weights" in wav2vec2.model_label
    assert wav2vec2.uses_attention_mask is False  # as facebook/wav2vec2-base-960h
    v = wav2vec2.embed(noise(1.5, 1))
    assert v.shape == (768,) and v.dtype == np.float32
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)


def test_batch_equals_single_with_mixed_lengths(wav2vec2: Wav2Vec2Backend) -> None:
    clips = [noise(1.0, 2), noise(0.6, 3), noise(1.0, 4)]
    batch = wav2vec2.embed_batch(clips)
    single = np.stack([wav2vec2.embed(c) for c in clips])
    np.testing.assert_allclose(batch, single, atol=1e-5)
    assert wav2vec2.embed_batch([]).shape == (0, 768)


def test_only_the_first_max_seconds_count(gpu_model_dir: Path) -> None:
    short = Wav2Vec2Backend.from_model_dir(gpu_model_dir, max_seconds=1.0)
    head, tail = noise(1.0, 5), noise(0.5, 6)
    np.testing.assert_allclose(short.embed(np.concatenate([head, tail])), short.embed(head), atol=1e-6)


@pytest.fixture(scope="module")
def masked_model(tmp_path_factory: pytest.TempPathFactory) -> Wav2Vec2Backend:
    """A layer-norm variant whose feature extractor returns an attention mask (as wav2vec2-large-lv60)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder = tmp_path_factory.mktemp("w2v-masked")
    torch.manual_seed(0)
    cfg = dict(
        WAV2VEC2_CFG,
        conv_dim=tuple(WAV2VEC2_CFG["conv_dim"]),
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )
    Wav2Vec2Model(Wav2Vec2Config(**cfg)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    (folder / "manifest.json").write_text(json.dumps({"name": "w2v-masked", "random": True}))
    return Wav2Vec2Backend.load(folder)


def test_masked_batching_equals_single(masked_model: Wav2Vec2Backend) -> None:
    assert masked_model.uses_attention_mask
    clips = [noise(1.0, 7), noise(0.4, 8)]
    batch = masked_model.embed_batch(clips)
    single = np.stack([masked_model.embed(c) for c in clips])
    np.testing.assert_allclose(batch, single, atol=1e-5)


@pytest.mark.parametrize(
    "audio",
    [np.zeros(100, np.float32), np.zeros((2, 16000), np.float32), np.full(16000, np.nan, np.float32)],
)
def test_bad_audio(wav2vec2: Wav2Vec2Backend, audio) -> None:
    with pytest.raises(InvalidInput) as err:
        wav2vec2.embed(audio)
    assert err.value.field == "audio"
