"""Synthetic media for the media tests, made once per session (all tiny)."""

from pathlib import Path

import pytest

from shared.dev.media import SyntheticVideo, make_audio, make_video


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def cfr_mp4(media_dir: Path) -> SyntheticVideo:
    """4 s, 10 fps, keyframe every 10 frames, with an AAC tone track."""
    return make_video(media_dir / "cfr.mp4", seconds=4, fps=10, gop=10, with_audio=True)


@pytest.fixture(scope="session")
def bframes_mp4(media_dir: Path) -> SyntheticVideo:
    """B-frames (x264 'medium'): decode order differs from presentation order."""
    return make_video(media_dir / "bframes.mp4", seconds=3, fps=10, gop=12, preset="medium")


@pytest.fixture(scope="session")
def vfr_mp4(media_dir: Path) -> SyntheticVideo:
    return make_video(media_dir / "vfr.mp4", seconds=3, fps=10, vfr=True)


@pytest.fixture(scope="session")
def vp9_webm(media_dir: Path) -> SyntheticVideo:
    return make_video(media_dir / "vp9.webm", seconds=3, fps=10, codec="vp9", gop=10, with_audio=True)


@pytest.fixture(scope="session")
def one_gop_mp4(media_dir: Path) -> SyntheticVideo:
    """6 s with a single keyframe: seeking cannot help, so the sampler must decode forward."""
    return make_video(media_dir / "onegop.mp4", seconds=6, fps=10, gop=1000)


@pytest.fixture(scope="session")
def short_mp4(media_dir: Path) -> SyntheticVideo:
    """5 frames: fewer than the 16 a model wants."""
    return make_video(media_dir / "short.mp4", seconds=0.5, fps=10)


@pytest.fixture(scope="session")
def tone_wav(media_dir: Path) -> Path:
    return make_audio(media_dir / "tone.wav", 2.0, 440.0)
