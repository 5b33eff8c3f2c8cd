"""What a channel is on the worker: one `ChannelRunner` per module in this package.

A runner names its spec entry (`shared.spec.CHANNELS[name]`), the decoded input it needs ("frames",
"audio" or "image"; embed_item decodes each once and shares it), the model role it runs on, how it
checks the worker's settings against its spec entry, and `compute`, which returns the exact bytes
to PUT plus the metadata the result reports. Adding a channel: one spec entry plus one module here
that defines `RUNNER`; the worker, the settings and the parser learn of it from this package.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from shared import spec
from shared.errors import ConfigError, EmbeddingError
from shared.models.backend import check_unit_rows

if TYPE_CHECKING:
    from shared.worker.batching import MicroBatcher
    from shared.worker.settings import WorkerSettings

SAMPLE_RATE = 16000
NPY = "application/octet-stream"
INPUTS = ("frames", "audio", "image")
FRAME_MAX_SIDE = 512  # CLIP and VideoMAE resize to 224-336 px; decoding more only costs memory


@dataclass(frozen=True)
class Artifact:
    """The bytes PUT for one channel (sha256/bytes in the result are of exactly these) + metadata."""

    data: bytes
    content_type: str
    meta: dict[str, Any]
    thumbnails: tuple[bytes, ...] = ()  # JPEGs PUT to the job's `thumbnails` URLs, in order, before `data`


@dataclass
class Decoded:
    """What one embed_item decode produced, per input kind; an error instead of data for a kind
    the source cannot give (no video stream, undecodable audio)."""

    duration: float | None = None
    frames: Any = None  # shared.media.VideoFrames of the default plan (the spec's frame count)
    frame_sets: dict[str, Any] = field(default_factory=dict)  # channel -> VideoFrames of its own plan
    audio: np.ndarray | None = None
    image: Any = None  # PIL.Image
    errors: dict[str, EmbeddingError] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


class WorkerContext(Protocol):
    """What a runner may use of the worker (shared.worker.worker.Worker)."""

    settings: WorkerSettings
    models: Any

    async def run_model(self, role: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any: ...

    def image_batcher(self, tta: bool) -> MicroBatcher: ...


class ChannelRunner:
    """Base class: subclasses set `name`, `needs`, `role` and implement `compute`."""

    name: ClassVar[str]
    needs: ClassVar[str]
    role: ClassVar[str]

    @property
    def spec(self) -> spec.Channel:
        return spec.CHANNELS[self.name]

    def model_name(self, settings: WorkerSettings) -> str:
        """The registry name of the model this channel loads."""
        return self.spec.model

    def check_settings(self, settings: WorkerSettings) -> None:
        """Raise ConfigError when the settings would not produce what the spec entry describes."""

    def frame_plan(self, settings: WorkerSettings, info: Any) -> tuple[int, int]:
        """(frames, max side in px) this channel samples from a video (`info`: shared.media.MediaInfo).
        Channels with the same plan share one sampling pass; the default is the spec's frame count."""
        return int(self.spec.preprocessing["frames"]), FRAME_MAX_SIDE

    def audio_seconds(self, settings: WorkerSettings) -> float:
        """How much decoded audio this channel reads (audio channels only)."""
        return 0.0

    async def compute(self, ctx: WorkerContext, decoded: Decoded) -> Artifact:
        raise NotImplementedError


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def vector_artifact(backend: Any, array: Any, what: str, extra: dict[str, Any]) -> Artifact:
    """An `.npy` artifact of unit rows (checked: check_unit_rows) with the model's identity."""
    arr = check_unit_rows(np.asarray(array, dtype=np.float32), what)
    meta = {
        "shape": list(arr.shape),
        "dims": int(arr.shape[-1]),
        "dtype": "float32",
        "model": backend.model_label,
        "model_name": backend.name,
        "random": bool(backend.random),
        **extra,
    }
    return Artifact(npy_bytes(arr), NPY, meta)


def check_clip_model(runner: ChannelRunner, settings: WorkerSettings) -> None:
    """A CLIP channel's artifacts are the spec's only when CLIP_MODEL is the spec's model."""
    if runner.spec.model != settings.clip_model:
        raise ConfigError(
            f"CLIP_MODEL={settings.clip_model} but channel {runner.name} is specified with "
            f"{runner.spec.model} (shared/spec.py); change the spec (a new spec version) or leave "
            f"{runner.name} out of WORKER_CHANNELS, e.g. "
            "WORKER_CHANNELS=video_mae,audio_wav2vec2,transcript"
        )


class ClipChannel(ChannelRunner):
    """A channel whose vectors come from the worker's CLIP model (CLIP_MODEL, run on its "clip_image"
    thread): the model is the settings', held to the spec's by check_clip_model at start."""

    role: ClassVar[str] = "clip"

    def model_name(self, settings: WorkerSettings) -> str:
        return settings.clip_model

    def check_settings(self, settings: WorkerSettings) -> None:
        check_clip_model(self, settings)
