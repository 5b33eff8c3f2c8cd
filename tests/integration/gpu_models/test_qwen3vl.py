"""Qwen3-VL-Embedding through transformers' own classes: the tiny random-weight dev model (real output
width 2048, real patch/merge sizes, Qwen's chat layout), loaded by the same code as the 2B."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shared.errors import InvalidInput, ModelNotFound
from shared.models import registry
from shared.models.qwen3vl import Qwen3VLBackend, VideoInput, matryoshka

pytestmark = pytest.mark.integration


def clip(seed: int, frames: int = 4, size: tuple[int, int] = (48, 64)) -> VideoInput:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (frames, *size, 3), dtype=np.uint8)
    return VideoInput(pixels, [i + 0.5 for i in range(frames)])


def unit_rows(arr: np.ndarray, rows: int, dims: int = 2048) -> None:
    assert arr.dtype == np.float32 and arr.shape == (rows, dims)
    assert np.isfinite(arr).all()
    np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)


def test_loads_through_the_registry_with_its_identity(qwen3vl) -> None:
    entry = registry.get("qwen3-vl-embedding-2b")
    assert qwen3vl.dims == entry.dims == 2048
    assert qwen3vl.mrl_dims == tuple(entry.preprocessing["mrl_dims"])
    assert qwen3vl.random is True and qwen3vl.model_label == "qwen3-vl-embedding-2b:random-weights"


def test_videos_and_texts_are_unit_vectors_of_the_full_width(qwen3vl) -> None:
    unit_rows(qwen3vl.embed_videos([clip(1), clip(2, frames=6)]), 2)
    unit_rows(qwen3vl.embed_texts(["a cat", "a red car in the street"]), 2)
    assert qwen3vl.embed_videos([]).shape == (0, 2048)


def test_batch_equals_single(qwen3vl) -> None:
    items = [clip(1), VideoInput(clip(2, frames=6).frames, clip(2, frames=6).timestamps, "a moving square")]
    batch = qwen3vl.embed_videos(items)
    for i, item in enumerate(items):
        np.testing.assert_allclose(batch[i], qwen3vl.embed_videos([item])[0], atol=2e-5)
    texts = ["a cat", "a red car in the street at night"]
    batch = qwen3vl.embed_texts(texts)
    for i, text in enumerate(texts):
        np.testing.assert_allclose(batch[i], qwen3vl.embed_texts([text])[0], atol=2e-5)


def test_the_caption_goes_into_the_same_input(qwen3vl) -> None:
    base = clip(3)
    plain = qwen3vl.embed_videos([base])[0]
    again = qwen3vl.embed_videos([VideoInput(base.frames, base.timestamps, None)])[0]
    cat = qwen3vl.embed_videos([VideoInput(base.frames, base.timestamps, "a cat on a sofa")])[0]
    car = qwen3vl.embed_videos([VideoInput(base.frames, base.timestamps, "a red car")])[0]
    np.testing.assert_allclose(plain, again, atol=1e-6)  # deterministic
    assert float(plain @ cat) < 0.9999 and float(cat @ car) < 0.9999
    # the frames still count: another clip with the same caption is another vector
    other = qwen3vl.embed_videos([VideoInput(clip(4).frames, base.timestamps, "a cat on a sofa")])[0]
    assert float(cat @ other) < 0.9999


def test_prompt_follows_the_card(qwen3vl) -> None:
    """System = instruction, user = video then text, generation prompt; the processor writes one
    "<t seconds>" per frame pair from the frames' real timestamps."""
    proc = qwen3vl._processor
    conv = qwen3vl._conversation("Represent the user's input", True, "a cat")
    text = proc.apply_chat_template([conv], add_generation_prompt=True, tokenize=False)[0]
    assert text.startswith("<|im_start|>system\nRepresent the user's input.<|im_end|>\n<|im_start|>user\n")
    user = "<|vision_start|><|video_pad|><|vision_end|>a cat<|im_end|>\n"
    assert text.endswith(user + "<|im_start|>assistant\n")
    video, meta = qwen3vl._frames(VideoInput(clip(1).frames, [0.25, 1.25, 2.25, 3.25]), 0)
    inputs = proc(text=[text], videos=[video], video_metadata=[meta], do_resize=False, do_sample_frames=False)
    decoded = proc.tokenizer.decode(inputs["input_ids"][0])
    assert "<0.8 seconds>" in decoded and "<2.8 seconds>" in decoded  # pair means of 0.25/1.25, 2.25/3.25
    # 48x64 frames are upscaled to the card's minimum of 128 tokens per frame pair (sides of 32)
    assert tuple(video.shape[2:]) == qwen3vl.plan.frame_size(48, 64, 4)
    t, h, w = (int(x) for x in inputs["video_grid_thw"][0])
    assert t == 2 and h * w // 4 >= 128


def test_odd_frame_counts_are_padded_like_the_card(qwen3vl) -> None:
    video, meta = qwen3vl._frames(clip(5, frames=5), 0)
    assert video.shape[0] == 6 and len(meta.frames_indices) == 6


def test_matryoshka_truncates_and_renormalises(qwen3vl) -> None:
    full = qwen3vl.embed_videos([clip(1)])
    for dims in qwen3vl.mrl_dims:
        cut = matryoshka(full, dims)
        unit_rows(cut, 1, dims)
        np.testing.assert_allclose(cut[0], full[0, :dims] / np.linalg.norm(full[0, :dims]), atol=1e-6)
    with pytest.raises(ValueError):
        matryoshka(full, 4096)


def test_text_fits_a_token_budget(qwen3vl) -> None:
    text = "a red car in the street at night with people walking by"
    n = qwen3vl.count_tokens(text)
    assert qwen3vl.fit_text(text, n) == (text, False)
    cut, was_cut = qwen3vl.fit_text(text, 5)
    assert was_cut and text.startswith(cut) and qwen3vl.count_tokens(cut) <= 5


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((4, 48, 64), dtype=np.uint8),  # no channel axis
        np.zeros((4, 48, 64, 3), dtype=np.float32),  # not uint8
        np.zeros((0, 48, 64, 3), dtype=np.uint8),  # no frames
        np.zeros((66, 48, 64, 3), dtype=np.uint8),  # over the card's 64
    ],
)
def test_bad_frames_are_invalid_input(qwen3vl, frames) -> None:
    with pytest.raises(InvalidInput):
        qwen3vl.embed_videos([VideoInput(frames, list(range(len(frames))))])


def test_a_checkpoint_missing_weights_is_refused(gpu_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    src = registry.model_path(gpu_model_dir, "qwen3-vl-embedding-2b")
    broken = tmp_path / "qwen3-vl-embedding-2b"
    broken.mkdir()
    for f in src.iterdir():
        if f.name != "model.safetensors":
            (broken / f.name).write_bytes(f.read_bytes())
    state = load_file(str(src / "model.safetensors"))
    dropped = next(k for k in state if "layers.0.mlp" in k)
    del state[dropped]
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelNotFound, match="weights are missing"):
        Qwen3VLBackend.from_model_dir(tmp_path)
    assert json.loads((broken / "manifest.json").read_text())["random"] is True
