"""Fixtures for the worker's unit tests: small local media files and a private temp root."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from shared.dev.media import make_audio, make_image_bytes, make_video, png_with_claimed_size


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    files = {
        "clip.mp4": make_video(d / "clip.mp4", seconds=2.0, fps=10, with_audio=True).path,
        "short.mp4": make_video(d / "short.mp4", seconds=0.5, fps=10).path,
        "tone.wav": make_audio(d / "tone.wav", 1.5),
        "zero.mp4": d / "zero.mp4",
        "garbage.mp4": d / "garbage.mp4",
        "photo.png": d / "photo.png",
        "huge.png": d / "huge.png",
    }
    files["zero.mp4"].write_bytes(b"")
    files["garbage.mp4"].write_bytes(b"this is not a video at all" * 10)
    files["photo.png"].write_bytes(make_image_bytes((40, 30)))
    files["huge.png"].write_bytes(png_with_claimed_size())
    return files


@pytest.fixture
def temp_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root
