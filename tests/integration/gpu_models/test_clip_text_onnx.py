"""The CLIP text tower on ONNX Runtime (the search function's query encoder), exported by the production
export (shared.models.clip_text_export, run by the dev set-up) from the tiny random-weight CLIP built
through open_clip's own loader: the same vectors as the torch tower, the same tokens as open_clip."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from shared.dev.models import setup_dev_models
from shared.errors import ModelUnhealthy
from shared.models import registry
from shared.models.clip_text_onnx import NAME, PROBE_FILE, ClipTextOnnx
from shared.models.text_samples import EDGE_TEXTS, sample_texts
from shared.search.engine import SPACES, VISUAL
from shared.settings import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.integration

TEXTS = [
    "the ferry leaves at noon",
    "A RED CAR parked by the river...",
    "two kids & a dog &amp; a ball",
    "x",
    "Straße, café, 東京, Привет",
    " ".join(["a very long caption about a sunny day at the beach"] * 10),
]


@pytest.fixture(scope="module")
def onnx_tower(gpu_model_dir: Path) -> ClipTextOnnx:
    setup_dev_models(DEFAULT_MODEL_DIR, [NAME])  # exported from the tiny clip-vit-b-32 (idempotent)
    return ClipTextOnnx.load(DEFAULT_MODEL_DIR, threads=1)


def test_onnx_matches_the_torch_tower(onnx_tower: ClipTextOnnx, clip) -> None:
    got = onnx_tower.embed(TEXTS)
    assert got.shape == (len(TEXTS), 512) and got.dtype == np.float32
    # the worker's own text path (ClipBackend: open_clip's tokenizer, the trimmed tower) ...
    worker = clip.embed_texts(TEXTS)
    assert (np.sum(got * worker, axis=1) > 0.999).all()
    # ... and open_clip's encode_text on its 77-token input
    import torch

    tokens = clip._tokenizer(TEXTS)
    with torch.no_grad():
        full = clip._model.encode_text(tokens, normalize=True).numpy()
    assert (np.sum(got * full, axis=1) > 0.999).all()
    # one text alone gets its vector from a batch of any company (padding never leaks)
    np.testing.assert_allclose(onnx_tower.embed([TEXTS[0]])[0], got[0], atol=1e-5)


def test_tokens_equal_open_clips(onnx_tower: ClipTextOnnx, clip) -> None:
    texts = [*TEXTS, *EDGE_TEXTS.values(), *sample_texts(30, seed=3)]
    ours = onnx_tower.token_ids(texts)
    theirs = clip._tokenizer(texts)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == [int(t) for t in b[: len(a)]] and int(b[len(a) :].sum()) == 0, (i, texts[i][:40])


def test_the_folder_says_whose_space_it_is(onnx_tower: ClipTextOnnx) -> None:
    entry, image = registry.get(NAME), registry.get(onnx_tower.tower_of)
    assert onnx_tower.tower_of == SPACES[VISUAL][0] == image.name  # the visual table's model
    pin = (image.source_repo, image.revision, image.files)
    assert (entry.source_repo, entry.revision, entry.files) == pin
    assert onnx_tower.dims == image.dims == SPACES[VISUAL][1]
    assert onnx_tower.random and onnx_tower.model_label == f"{NAME}:random-weights"
    manifest = registry.read_manifest(onnx_tower.folder)
    assert manifest["parity"]["tokens_equal"] and manifest["parity"]["min_cosine"] > 0.999


def test_a_drifted_graph_fails_the_load(onnx_tower: ClipTextOnnx, tmp_path: Path) -> None:
    folder = tmp_path / NAME
    shutil.copytree(onnx_tower.folder, folder)
    with np.load(folder / PROBE_FILE) as data:
        texts, reference = data["texts"], data["reference"]
    np.savez(folder / PROBE_FILE, texts=texts, reference=-reference)
    with pytest.raises(ModelUnhealthy, match="drifted from its torch reference"):
        ClipTextOnnx.load(tmp_path)
