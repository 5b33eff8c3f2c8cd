"""The text channels (seed 004, 3.3) over a FakeBackend, and the pure helpers beside them."""

from __future__ import annotations

import numpy as np
import pytest

from shared.dev.fakes import FakeBackend
from shared.errors import InvalidInput
from shared.models.minilm_onnx import truncate_dims
from shared.models.text_samples import EDGE_TEXTS, sample_kind, sample_texts
from shared.text.channels import (
    embed_text_meta,
    embed_text_transcript,
    fuse,
    meta_text,
    text_channels,
    transcript_text,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend(dims=384)


def test_meta_text_joins_title_description_query_in_order() -> None:
    meta = {"query": "cats", "title": "Funny cats", "description": "A compilation", "other": "ignored"}
    assert meta_text(meta) == "Funny cats [SEP] A compilation [SEP] cats"


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"title": "Only title"}, "Only title"),
        ({"title": "T", "description": None, "query": "q"}, "T [SEP] q"),
        ({"title": "  T  ", "description": "   ", "query": ""}, "T"),
        ({"description": "D", "query": "Q"}, "D [SEP] Q"),
        ({}, ""),
    ],
)
def test_meta_text_skips_missing_and_blank_fields(meta: dict, expected: str) -> None:
    assert meta_text(meta) == expected


def test_meta_text_refuses_non_strings_and_non_mappings() -> None:
    with pytest.raises(InvalidInput) as err:
        meta_text({"title": ["not", "a", "string"]})
    assert err.value.field == "meta.title"
    with pytest.raises(InvalidInput):
        meta_text("title")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("transcript", "expected"),
    [
        ("  hello there ", "hello there"),
        ({"text": "from whisper", "segments": [{"text": "ignored"}]}, "from whisper"),
        ({"transcript": "seed 004 field"}, "seed 004 field"),
        ({"segments": [{"start": 0, "end": 1, "text": " one "}, {"text": ""}, {"text": "two"}]}, "one two"),
        ({"text": "", "segments": []}, ""),
    ],
)
def test_transcript_text_shapes(transcript, expected: str) -> None:
    assert transcript_text(transcript) == expected


@pytest.mark.parametrize("bad", [{"language": "en"}, {"segments": ["x"]}, {"text": 3}, 42])
def test_transcript_text_refuses_other_shapes(bad) -> None:
    with pytest.raises(InvalidInput):
        transcript_text(bad)


def test_embed_text_meta_and_transcript_embed_the_built_text(fake: FakeBackend) -> None:
    meta = {"title": "T", "description": "D", "query": "Q"}
    np.testing.assert_array_equal(embed_text_meta(fake, meta), fake.embed(["T [SEP] D [SEP] Q"])[0])
    vec = embed_text_transcript(fake, {"segments": [{"text": "a"}, {"text": "b"}]})
    np.testing.assert_array_equal(vec, fake.embed(["a b"])[0])
    assert vec.shape == (384,) and vec.dtype == np.float32


def test_fuse_is_normalised_concatenation(fake: FakeBackend) -> None:
    a, b = fake.embed(["meta", "transcript"])
    fused = fuse(a, b)
    assert fused.shape == (768,) and fused.dtype == np.float32
    assert abs(np.linalg.norm(fused) - 1) < 1e-6
    np.testing.assert_allclose(fused, np.concatenate([a, b]) / np.sqrt(2), atol=1e-6)
    np.testing.assert_allclose(fused[:384] / np.linalg.norm(fused[:384]), a, atol=1e-6)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (np.ones(384), np.ones(512)),
        (np.ones((2, 384)), np.ones((2, 384))),
        (np.full(384, np.nan), np.ones(384)),
        (np.ones(0), np.ones(0)),
    ],
)
def test_fuse_refuses_mismatched_or_non_finite(a: np.ndarray, b: np.ndarray) -> None:
    with pytest.raises(InvalidInput):
        fuse(a, b)


def test_text_channels_embeds_once_and_matches_the_single_functions(fake: FakeBackend) -> None:
    calls = []
    real_embed = fake.embed

    def counting(batch):
        calls.append(list(batch))
        return real_embed(batch)

    fake.embed = counting  # type: ignore[method-assign]
    meta, transcript = {"title": "T", "query": "Q"}, {"text": "spoken words"}
    out = text_channels(fake, meta, transcript)
    assert calls == [["T [SEP] Q", "spoken words"]]
    np.testing.assert_array_equal(out["text_meta"], embed_text_meta(fake, meta))
    np.testing.assert_array_equal(out["text_transcript"], embed_text_transcript(fake, transcript))
    np.testing.assert_array_equal(out["text_fused"], fuse(out["text_meta"], out["text_transcript"]))


def test_truncate_dims_keeps_prefix_and_renormalises(fake: FakeBackend) -> None:
    vectors = fake.embed(["a", "b", "c"])
    cut = truncate_dims(vectors, 64)
    assert cut.shape == (3, 64) and cut.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(cut[0], vectors[0, :64] / np.linalg.norm(vectors[0, :64]), atol=1e-6)
    np.testing.assert_allclose(truncate_dims(vectors, 384), vectors, atol=1e-6)


@pytest.mark.parametrize("k", [0, 385, -1, 2.5, True])
def test_truncate_dims_refuses_out_of_range(fake: FakeBackend, k) -> None:
    with pytest.raises(InvalidInput) as err:
        truncate_dims(fake.embed(["a"]), k)
    assert err.value.field == "dims"


def test_sample_texts_are_deterministic_and_mixed() -> None:
    texts = sample_texts(30, seed=7)
    assert texts == sample_texts(30, seed=7) and texts != sample_texts(30, seed=8)
    passages = [t for i, t in enumerate(texts) if sample_kind(i) == "passage"]
    shorts = [t for i, t in enumerate(texts) if sample_kind(i) == "short"]
    assert all(100 <= len(p.split()) <= 300 for p in passages)
    assert all(2 <= len(s.split()) <= 10 for s in shorts)
    assert EDGE_TEXTS["empty"] == "" and not EDGE_TEXTS["whitespace"].strip()
