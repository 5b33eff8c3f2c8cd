"""The scenes channel on synthetic videos with known cuts (made in-process with PyAV), through the real
PySceneDetect, the real PyAV sampler and the real CLIP loading code with the tiny dev model: hard cuts
found within +-1 frame, a fade and a static shot left whole, and a long video's work COUNTED (frames
decoded, frames analysed, scenes), never timed."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.dev.media import make_shot_video
from shared.media import probe, sample_frames
from shared.settings import DEFAULT_MODEL_DIR
from shared.worker.channels.base import Decoded
from shared.worker.channels.scenes import RUNNER, detect_cuts, plan_scenes
from shared.worker.settings import WorkerSettings

pytestmark = pytest.mark.integration

FPS = 10


@pytest.fixture(scope="module")
def clip():
    from shared.dev.models import setup_dev_models
    from shared.models.clip import ClipBackend

    setup_dev_models(DEFAULT_MODEL_DIR, ["clip-vit-b-32"])  # idempotent: only the model this file uses
    return ClipBackend.from_model_dir(DEFAULT_MODEL_DIR, "clip-vit-b-32")


@pytest.fixture(scope="module")
def settings() -> WorkerSettings:
    return WorkerSettings.from_env({"WORKER_CHANNELS": "scenes"}, cuda_available=lambda: False)


class Ctx:
    """What a runner uses of the worker: its settings, its models and run_model."""

    def __init__(self, settings: WorkerSettings, clip) -> None:
        self.settings = settings
        self.models = type("M", (), {"clip": clip})()

    async def run_model(self, role, fn, *args, **kw):
        return fn(*args, **kw)


def decode(path: Path, settings: WorkerSettings) -> Decoded:
    """embed_item's frame decode for the scenes runner alone (its own frame plan)."""
    info = probe(path)
    frames, side = RUNNER.frame_plan(settings, info)
    sampled = sample_frames(path, frames, max_side=side)
    return Decoded(duration=info.duration, frame_sets={"scenes": sampled})


def test_hard_cuts_are_found_within_one_frame(tmp_path: Path, settings: WorkerSettings):
    rng = np.random.default_rng(7)
    shots = [("pan" if i % 3 else "static", int(n)) for i, n in enumerate(rng.integers(12, 30, size=24))]
    video = make_shot_video(tmp_path / "cuts.mp4", shots, fps=FPS, seed=1)
    decoded = decode(video.video.path, settings)
    (_, times), cuts, _ = RUNNER.scenes(settings, decoded)
    found = [float(times[c]) for c in cuts]
    truth = video.cut_times
    tolerance = 1.01 / FPS

    def hits(a: list[float], b: list[float]) -> int:
        return sum(any(abs(x - y) <= tolerance for y in b) for x in a)

    precision, recall = hits(found, truth) / max(1, len(found)), hits(truth, found) / len(truth)
    assert len(truth) == 23
    assert precision >= 0.95 and recall >= 0.95, (precision, recall, found, truth)


def test_a_fade_and_a_static_shot_are_not_split(tmp_path: Path, settings: WorkerSettings, clip):
    shots = [("pan", 25), ("fade", 15), ("static", 40), ("pan", 25)]
    video = make_shot_video(tmp_path / "fade.mp4", shots, fps=FPS, seed=2)
    assert video.cuts == [80]  # the fade has none; the static shot ends with a hard cut
    decoded = decode(video.video.path, settings)
    artifact = asyncio.run(RUNNER.compute(Ctx(settings, clip), decoded))
    spans = [(s["start"], s["end"]) for s in artifact.meta["scenes"]]
    assert len(spans) == 2, spans
    assert spans[0][0] == 0.0 and abs(spans[1][0] - 8.0) <= 1.01 / FPS
    assert abs(spans[1][1] - 10.5) <= 1.01 / FPS
    # one CLIP row per scene behind the pooled row, each keyframe a JPEG inside its scene
    rows = np.load(io.BytesIO(artifact.data))
    assert rows.shape == (3, clip.dims) and np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-4)
    assert len(artifact.thumbnails) == 2
    meta = artifact.meta
    for scene, thumb, t in zip(meta["scenes"], artifact.thumbnails, meta["timestamps"], strict=True):
        assert scene["start"] <= t == scene["keyframe"] < scene["end"]
        assert Image.open(io.BytesIO(thumb)).format == "JPEG"


def test_a_long_video_costs_a_bounded_amount(tmp_path: Path, settings: WorkerSettings):
    # 200 shots of 1 s at 10 fps: 2000 frames; analysis capped at 100 frames, scenes at 8
    capped = dataclasses.replace(settings, scene_analysis_frames=100, scene_max_scenes=8)
    video = make_shot_video(tmp_path / "long.mp4", [("pan", FPS)] * 200, fps=FPS, size=(32, 24), seed=3)
    decoded = decode(video.video.path, capped)
    sampled = decoded.frame_sets["scenes"]
    assert len(sampled.frames) == 100
    gop = 2 * FPS  # make_shot_video's keyframe interval
    assert sampled.decoded <= 100 * (gop + 1)  # each target: a seek and at most one GOP decoded
    assert sampled.decoded < 2000  # fewer than the video has
    (_, times), _cuts, planned = RUNNER.scenes(capped, decoded)
    assert len(times) == 100 and 1 <= len(planned) <= 8
    assert planned[0].start == 0.0 and planned[-1].end == pytest.approx(200.0, abs=0.2)
    assert all(a.end == b.start for a, b in itertools.pairwise(planned))
    # a 3-hour 60 fps video's plan is the same cap, from the header alone
    info = probe(video.video.path)
    huge = dataclasses.replace(info, duration=3 * 3600.0, fps=60.0, frame_count=3 * 3600 * 60)
    assert RUNNER.frame_plan(settings, huge)[0] == settings.scene_analysis_frames


def test_shots_are_merged_split_and_capped():
    times = np.arange(100) / 10.0  # 10 s at 10 analysis frames/s
    # a 0.3 s shot merges; the 7 s shot splits into 3 of <= 3 s
    scenes = plan_scenes(times, 10.0, [20, 23, 30], min_shot_s=1.0, max_shot_s=3.0, max_scenes=64)
    assert [(s.start, s.end) for s in scenes][:2] == [(0.0, 2.0), (2.0, 3.0)]
    assert all(s.seconds <= 3.0 + 1e-9 for s in scenes) and len(scenes) == 5
    capped = plan_scenes(times, 10.0, list(range(5, 100, 5)), min_shot_s=0, max_shot_s=60, max_scenes=4)
    assert len(capped) == 4 and capped[0].start == 0.0 and capped[-1].end == 10.0
    assert detect_cuts(np.zeros((5, 8, 8, 3), np.uint8), 10.0) == []
