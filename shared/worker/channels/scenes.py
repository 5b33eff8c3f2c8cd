"""scenes: shots found by PySceneDetect, each with its span, a keyframe thumbnail and its CLIP vector.

Frames: the shared PyAV sampler (shared.media.sample_frames, one pass of embed_item's decode) takes
SCENE_ANALYSIS_FRAMES frames uniformly by timestamp at the spec's `analysis_side`: every frame of a
short video, fewer per second of a long one, so the decode, the detector and the memory held are
bounded by the setting, whatever the video's length. PySceneDetect's AdaptiveDetector reads those
frames in order (`process_frame` on numpy frames: no ffmpeg binary, no second decode). Its cuts become
shots, which `plan_scenes` then shapes: shots shorter than SCENE_MIN_SHOT_S merged into a neighbour,
longer than SCENE_MAX_SHOT_S split evenly, and at most SCENE_MAX_SCENES (the shortest merged first).
Boundary precision is one analysis frame: one video frame while the video has at most
SCENE_ANALYSIS_FRAMES frames.

Artifact: `.npy` float32 [1 + n, dims], every row unit length: row 0 the mean of the scene rows
(renormalised), rows 1..n each scene's keyframe (its middle analysis frame) in time order. Thumbnails:
each keyframe as a JPEG, PUT to the job's `thumbnails[i]` (shared.pipeline.keys.thumbnail_key).
Result metadata: `timestamps` (the keyframes' seconds, one per row), `scenes` ([{start, end,
keyframe, thumbnail}] in seconds; `thumbnail` is the index into the job's thumbnail URLs), `frames`
(analysed), `cuts` (what the detector found before shaping).
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.errors import ConfigError
from shared.models.backend import check_unit_rows, l2_normalize
from shared.worker.channels.base import (
    Artifact,
    ClipChannel,
    Decoded,
    WorkerContext,
    vector_artifact,
)

JPEG_QUALITY = 85


@dataclass(frozen=True)
class Scene:
    """A span of analysis frames [first, last] and its seconds [start, end)."""

    first: int
    last: int
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def detect_cuts(frames: np.ndarray, rate: float) -> list[int]:
    """Indices (into `frames`, RGB uint8 [n, H, W, 3] in time order) of the first frame of every shot
    after the first, by PySceneDetect's AdaptiveDetector. `rate`: analysis frames per second."""
    from scenedetect import AdaptiveDetector, FrameTimecode

    detector = AdaptiveDetector(min_scene_len=1)  # SCENE_MIN_SHOT_S merges, in seconds, afterwards
    fps = max(float(rate), 1e-3)
    cuts: list[int] = []
    for i, rgb in enumerate(frames):
        bgr = np.ascontiguousarray(rgb[..., ::-1])  # the detector converts from OpenCV's BGR
        cuts += [int(tc.frame_num) for tc in detector.process_frame(FrameTimecode(i, fps), bgr)]
    cuts += [int(tc.frame_num) for tc in detector.post_process(FrameTimecode(len(frames), fps))]
    return sorted({c for c in cuts if 0 < c < len(frames)})


def plan_scenes(
    times: np.ndarray,
    end: float,
    cuts: list[int],
    *,
    min_shot_s: float,
    max_shot_s: float,
    max_scenes: int,
) -> list[Scene]:
    """Shots from cut indices over analysis frames at `times` (seconds, ascending), shaped by the
    settings: merge shots under `min_shot_s`, split shots over `max_shot_s` evenly (by frames), then
    merge the shortest until at most `max_scenes`. `end`: the video's end in seconds."""
    n = len(times)
    if n == 0:
        return []

    def span(first: int, last: int) -> Scene:
        stop = float(times[last + 1]) if last + 1 < n else max(float(end), float(times[last]))
        return Scene(first, last, 0.0 if first == 0 else float(times[first]), stop)

    bounds = [0, *cuts, n]
    shots = [span(a, b - 1) for a, b in itertools.pairwise(bounds) if b > a]
    shots = _merge_while(shots, span, lambda s: len(s) > 1 and min(x.seconds for x in s) < min_shot_s)
    split: list[Scene] = []
    for s in shots:
        parts = min(int(np.ceil(s.seconds / max_shot_s)) if max_shot_s > 0 else 1, s.last - s.first + 1)
        edges = np.linspace(s.first, s.last + 1, max(parts, 1) + 1).round().astype(int)
        split += [span(int(a), int(b) - 1) for a, b in itertools.pairwise(edges) if b > a]
    return _merge_while(split, span, lambda s: len(s) > max_scenes)


def _merge_while(scenes: list[Scene], span: Any, more: Any) -> list[Scene]:
    """Merge the shortest scene into its shorter neighbour while `more(scenes)`."""
    scenes = list(scenes)
    while more(scenes):
        i = min(range(len(scenes)), key=lambda k: (scenes[k].seconds, k))
        if i == 0:
            j = 1
        elif i == len(scenes) - 1:
            j = i - 1
        else:
            j = i - 1 if scenes[i - 1].seconds <= scenes[i + 1].seconds else i + 1
        a, b = sorted((i, j))
        scenes[a : b + 1] = [span(scenes[a].first, scenes[b].last)]
    return scenes


def jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


class Scenes(ClipChannel):
    name = "scenes"
    needs = "frames"

    def check_settings(self, settings) -> None:
        super().check_settings(settings)
        try:  # at start, not on the first video: a worker that cannot detect shots does not start
            import scenedetect  # noqa: F401
        except ImportError as e:
            raise ConfigError(
                f"channel {self.name} needs PySceneDetect and OpenCV ({e}); install the gpu extra "
                "(pip install '.[gpu]'), or leave scenes out of WORKER_CHANNELS"
            ) from e
        pp = self.spec.preprocessing
        pairs = {
            "SCENE_ANALYSIS_FRAMES": (settings.scene_analysis_frames, int(pp["analysis_frames"])),
            "SCENE_MIN_SHOT_S": (settings.scene_min_shot_s, float(pp["min_shot_s"])),
            "SCENE_MAX_SHOT_S": (settings.scene_max_shot_s, float(pp["max_shot_s"])),
            "SCENE_MAX_SCENES": (settings.scene_max_scenes, int(pp["max_scenes"])),
        }
        for env, (value, specified) in pairs.items():
            if value != specified:
                raise ConfigError(
                    f"{env}={value} but channel {self.name} is specified with {specified} (shared/spec.py); "
                    f"change the spec (a new spec version) or leave {self.name} out of WORKER_CHANNELS; "
                    f"example: {env}={specified}"
                )

    def frame_plan(self, settings, info) -> tuple[int, int]:
        estimated = info.frame_count or (round(info.duration * info.fps) if info.duration and info.fps else 0)
        frames = min(settings.scene_analysis_frames, estimated or settings.scene_analysis_frames)
        return max(1, frames), int(self.spec.preprocessing["analysis_side"])

    def scenes(self, settings: Any, decoded: Decoded) -> tuple[Any, list[int], list[Scene]]:
        """(analysis frames, detector cuts, shaped scenes) of the decoded video."""
        frames = decoded.frame_sets[self.name]
        real = max(1, len(frames.frames) - int(frames.padded))
        times, keep = np.unique(frames.timestamps[:real], return_index=True)  # a frame hit twice, once
        images = frames.frames[keep]
        end = float(frames.duration or decoded.duration or times[-1])
        rate = len(times) / end if end > 0 else 1.0
        cuts = detect_cuts(images, rate)
        planned = plan_scenes(
            times,
            end,
            cuts,
            min_shot_s=settings.scene_min_shot_s,
            max_shot_s=settings.scene_max_shot_s,
            max_scenes=settings.scene_max_scenes,
        )
        return (images, times), cuts, planned

    async def compute(self, ctx: WorkerContext, decoded: Decoded) -> Artifact:
        import asyncio

        (images, times), cuts, planned = await asyncio.to_thread(self.scenes, ctx.settings, decoded)
        keys = [(s.first + s.last) // 2 for s in planned]
        keyframes = images[keys]
        clip = ctx.models.clip
        rows = check_unit_rows(await ctx.run_model("clip_image", clip.embed_frames, keyframes), self.name)
        pooled = l2_normalize(rows.mean(axis=0))
        thumbnails = await asyncio.to_thread(lambda: tuple(jpeg(k) for k in keyframes))
        meta = {
            "timestamps": [round(float(times[k]), 4) for k in keys],
            "scenes": [
                {
                    "start": round(s.start, 4),
                    "end": round(s.end, 4),
                    "keyframe": round(float(times[k]), 4),
                    "thumbnail": i,
                }
                for i, (s, k) in enumerate(zip(planned, keys, strict=True))
            ],
            "frames": len(times),
            "cuts": len(cuts),
            "pooled_row": 0,
        }
        artifact = vector_artifact(clip, np.vstack([pooled[None, :], rows]), self.name, meta)
        return Artifact(artifact.data, artifact.content_type, artifact.meta, thumbnails)


RUNNER = Scenes()
