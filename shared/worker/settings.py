"""RunPod worker settings, read once at start from a mapping (normally os.environ) and frozen.

Every variable is optional (the defaults are the production values) and declared once, on its field
below; docs/configuration.md is rendered from the declarations (`python -m shared.dev.settings_doc`).

The embed_item channels are the spec's contract: each channel's runner (shared.worker.channels)
checks that the settings produce what `shared.spec` records for it (its fingerprint says so), e.g.
the CLIP model, TTA, panorama ratio and tile cap, otherwise start fails with ConfigError. The clip_text /
clip_image tasks may use any CLIP model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from shared import spec
from shared.errors import ConfigError
from shared.media.image import FULL_DECODE_MAX_PIXELS, INFLATE_MAX_PIXELS
from shared.models import registry
from shared.settings import BOOL, Parser, choice, model_dir_setting, parser, positive, read_settings, setting
from shared.worker.requests import TASKS

PRECISIONS = ("fp16", "bf16", "fp32")
TRANSCRIPT_MODEL = spec.CHANNELS["transcript"].model  # what the transcribe task loads (faster_whisper)
QWEN3VL_MODEL = spec.CHANNELS["video_qwen3vl"].model
QWEN3VL_TASKS = ("embed_video", "qwen3vl_text")  # opt-in: they load the 2B model
MRL_DIMS: tuple[int, ...] = tuple(registry.get(QWEN3VL_MODEL).preprocessing["mrl_dims"])
EMBEDDING_BACKENDS = ("qwen3_vl", "deterministic")
WHISPER_BACKENDS = ("faster_whisper", "transformers")
TEXT_OVERFLOW = ("truncate", "refuse")
DEFAULT_TASKS = tuple(t for t in TASKS if t not in QWEN3VL_TASKS)
_SCENES = spec.CHANNELS["scenes"].preprocessing
DEFAULT_CHANNELS = tuple(c for c in spec.RUNPOD_CHANNELS if spec.CHANNELS[c].default_on)


def _csv(allowed: tuple[str, ...]) -> Parser:
    def inner(raw: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
        if not names or any(n not in allowed for n in names):
            raise ValueError(raw)
        return names

    return Parser(inner, f"comma list of: {', '.join(allowed)}")


@parser("auto | cpu | cuda | cuda:N")
def _device(raw: str) -> str:
    low = raw.strip().lower()
    if low in ("auto", "cpu", "cuda") or (low.startswith("cuda:") and low[5:].isdigit()):
        return low
    raise ValueError(raw)


def _registry_name(kind: str) -> Parser:
    names = [n for n, e in registry.REGISTRY.items() if e.kind == kind]

    def inner(raw: str) -> str:
        if raw not in names:
            raise ValueError(raw)
        return raw

    return Parser(inner, " | ".join(names))


@parser("float >= 1")
def _ratio(raw: str) -> float:
    value = float(raw)
    if not value >= 1.0 or value == float("inf"):
        raise ValueError(raw)
    return value


@parser(" | ".join(map(str, MRL_DIMS)))
def _mrl_dims(raw: str) -> int:
    value = int(raw)
    if value not in MRL_DIMS:
        raise ValueError(raw)
    return value


@parser("int >= 0")
def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(raw)
    return value


@parser("seconds > 0")
def _seconds(raw: str) -> float:
    value = float(raw)
    if not 0 < value < float("inf"):  # also refuses nan
        raise ValueError(raw)
    return value


@parser("float >= 0")
def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0 or value == float("inf"):
        raise ValueError(raw)
    return value


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@dataclass(frozen=True)
class WorkerSettings:
    """The GPU worker's configuration. Build with `from_env`; tests pass plain dicts."""

    model_dir: Path = model_dir_setting()  # noqa: RUF009 (a field specifier, as dataclasses.field)
    device: str = setting(  # the field holds the resolved device: cpu | cuda | cuda:N
        "DEVICE",
        _device,
        "auto: cuda when available; the GPU image sets cuda, and a worker told cuda that finds none "
        "refuses to start",
        default="cpu",
        env_default="auto",
        example="cuda",
    )
    precision: str = setting(  # the field holds the effective precision: always fp32 on CPU
        "PRECISION",
        choice(*PRECISIONS),
        "model precision on a GPU (CPU always runs fp32)",
        default="fp32",
        env_default="fp16",
    )
    clip_model: str = setting(
        "CLIP_MODEL",
        _registry_name("open_clip"),
        "registry name of the CLIP model (the spec's image_clip and video_clip channels need the default)",
        default="clip-vit-b-32",
    )
    tasks: tuple[str, ...] = setting(
        "WORKER_TASKS",
        _csv(TASKS),
        "tasks served; embed_video and qwen3vl_text are opt-in: they load Qwen3-VL-Embedding-2B",
        default=DEFAULT_TASKS,
        example="clip_text,clip_image",
    )
    channels: tuple[str, ...] = setting(
        "WORKER_CHANNELS",
        _csv(spec.RUNPOD_CHANNELS),
        "embed_item channels served (default: the RunPod channels of shared.spec that are on by default)",
        default=DEFAULT_CHANNELS,
        example="video_clip,transcript",
    )
    embedding_backend: str = setting(
        "EMBEDDING_BACKEND",
        choice(*EMBEDDING_BACKENDS),
        "what embed_video / qwen3vl_text run; deterministic is a hash-seeded placeholder for callers' "
        "integration tests, labelled so in every output, refused for the video_qwen3vl channel",
        default="qwen3_vl",
    )
    embedding_dims: int = setting(
        "EMBEDDING_DIMS",
        _mrl_dims,
        "embed_video / qwen3vl_text dims when a job names none (one of the model's Matryoshka sizes)",
        default=MRL_DIMS[0],
        example="512",
    )
    qwen3vl_max_text_tokens: int = setting(
        "QWEN3VL_MAX_TEXT_TOKENS", positive(int), "tokens of a caption or query text", default=512
    )
    qwen3vl_text_overflow: str = setting(
        "QWEN3VL_TEXT_OVERFLOW",
        choice(*TEXT_OVERFLOW),
        "a longer caption / text is cut at a token boundary (the output says so) or refused",
        default="truncate",
        example="refuse",
    )
    whisper_backend: str = setting(
        "WHISPER_BACKEND",
        choice(*WHISPER_BACKENDS),
        "what the transcribe task and embed_video's transcript run; the spec's transcript channel is "
        "faster-whisper, so embed_item's transcript needs faster_whisper",
        default="faster_whisper",
        example="transformers",
    )
    whisper_model: str = setting(
        "WHISPER_MODEL",
        _registry_name("whisper-transformers"),
        "registry name of the transformers Whisper checkpoint (only read with WHISPER_BACKEND=transformers)",
        default="distil-whisper-large-v3",
    )
    whisper_max_new_tokens: int = setting(
        "WHISPER_MAX_NEW_TOKENS",
        _non_negative_int,
        "tokens a transformers Whisper may generate per 30 s window (0: derived from the checkpoint: its "
        "max_target_positions minus the prompt, whenever its generation config's max_length would cut "
        "transcripts shorter)",
        default=0,
        example="440",
    )
    tta: bool = setting("ENABLE_TTA", BOOL, "5-crop TTA for image_clip / clip_image", default=True)
    panorama_max_ratio: float = setting(
        "PANORAMA_MAX_RATIO", _ratio, "images wider than this aspect ratio are tiled", default=2.6
    )
    panorama_max_tiles: int = setting(
        "PANORAMA_MAX_TILES",
        positive(int),
        "most panorama tiles per image; a wider image is cut into N tiles, each squeezed to a square and "
        "one view (no 5-crop TTA per tile), so an image costs at most max(5, N) views",
        default=2,
    )
    scene_analysis_frames: int = setting(
        "SCENE_ANALYSIS_FRAMES",
        positive(int),
        "frames the scenes channel decodes and analyses per video (uniform by timestamp: every frame of a "
        "short video, fewer per second of a long one), so a long video costs a bounded amount",
        default=int(_SCENES["analysis_frames"]),
    )
    scene_min_shot_s: float = setting(
        "SCENE_MIN_SHOT_S", _non_negative_float, "scenes shorter than this are merged", default=1.0
    )
    scene_max_shot_s: float = setting(
        "SCENE_MAX_SHOT_S",
        _seconds,
        "scenes longer than this are split evenly (SCENE_MAX_SCENES has the last word on a long video)",
        default=60.0,
    )
    scene_max_scenes: int = setting(
        "SCENE_MAX_SCENES",
        positive(int),
        "most scenes per video (the shortest are merged into a neighbour until this many); the dispatcher "
        "presigns this many thumbnail PUTs",
        default=int(_SCENES["max_scenes"]),
    )
    max_image_aspect: float = setting(
        "MAX_IMAGE_ASPECT",
        _ratio,
        "an image whose aspect ratio is beyond N:1 is refused from its header with media_error",
        default=8.0,
    )
    max_download_bytes: int = setting(
        "MAX_DOWNLOAD_BYTES", positive(int), "source size cap", default=2 * 1024**3
    )
    download_timeout_s: float = setting(
        "DOWNLOAD_TIMEOUT_S", _seconds, "download / upload time limit", default=300.0
    )
    allow_private_urls: bool = setting(
        "ALLOW_PRIVATE_URLS",
        BOOL,
        "allow loopback / private addresses (only the local stack sets it)",
        default=False,
    )
    batch_window_ms: float = setting(
        "BATCH_WINDOW_MS", _non_negative_float, "clip_text / clip_image batching window", default=15.0
    )
    batch_early_close: bool = setting(
        "BATCH_EARLY_CLOSE", BOOL, "run a batch once no job in the worker can still join it", default=True
    )
    max_batch: int = setting("MAX_BATCH", positive(int), "items per batched forward pass", default=64)
    concurrency: int = setting(
        "WORKER_CONCURRENCY", positive(int), "jobs RunPod hands this worker at once", default=8
    )
    media_concurrency: int = setting(
        "MEDIA_CONCURRENCY", positive(int), "embed_item / transcribe jobs decoding at once", default=2
    )
    max_texts: int = setting("MAX_TEXTS", positive(int), "texts per clip_text job", default=256)
    max_text_chars: int = setting("MAX_TEXT_CHARS", positive(int), "characters per text", default=2000)
    max_images: int = setting("MAX_IMAGES", positive(int), "images per clip_image job", default=32)
    max_image_bytes: int = setting(
        "MAX_IMAGE_BYTES", positive(int), "bytes per clip_image image", default=20_000_000
    )
    max_image_pixels: int = setting(
        "MAX_IMAGE_PIXELS", positive(int), "decoded pixels per image", default=50_000_000
    )
    full_decode_max_pixels: int = setting(
        "FULL_DECODE_MAX_PIXELS",
        positive(int),
        "pixels of an image only Pillow decodes, at full size (GIF, BMP, odd TIFF...), refused from its "
        "header above it",
        default=FULL_DECODE_MAX_PIXELS,
    )
    inflate_max_pixels: int = setting(
        "INFLATE_MAX_PIXELS",
        positive(int),
        "pixels of a PNG / WebP / TIFF, inflated whole though streamed, refused from its header above it "
        "(the default is an 8K UHD frame; JPEG is DCT-scaled)",
        default=INFLATE_MAX_PIXELS,
    )
    job_max_pixels: int = setting(
        "JOB_MAX_PIXELS",
        positive(int),
        "decoded image pixels per job, summed from the headers before any image is decoded (the default: "
        "32 twelve-megapixel photos)",
        default=400_000_000,
    )
    worker_max_pixels: int = setting(
        "WORKER_MAX_PIXELS",
        positive(int),
        "image pixels decoded at once in the whole worker, all jobs together (the default is ~0.5 GB of "
        "RGB); a decode waits for room",
        default=150_000_000,
    )
    max_video_pixels: int = setting(
        "MAX_VIDEO_PIXELS",
        positive(int),
        "pixels per coded video frame, read from the stream header (the default is 8K)",
        default=8192 * 4320,
    )
    transcript_max_seconds: float = setting(
        "TRANSCRIPT_MAX_SECONDS", _seconds, "audio transcribed per item / job", default=1800.0
    )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, cuda_available: Callable[[], bool] = _cuda_available
    ) -> WorkerSettings:
        """Read and validate every setting; a malformed value raises ConfigError with an example."""
        values = read_settings(cls, os.environ if env is None else env)
        device = values["device"]
        if device == "auto":
            device = "cuda" if cuda_available() else "cpu"
        elif device.startswith("cuda") and not cuda_available():
            raise ConfigError(
                f"DEVICE={device} but no CUDA device is visible (torch.cuda.is_available() is False; "
                f"check the host's driver against the image's CUDA); example: DEVICE=cpu"
            )
        values["device"] = device
        if device == "cpu":
            values["precision"] = "fp32"  # half precision on CPU is slow and lossy; never what anyone wants
        settings = cls(**values)
        settings.check_budgets()
        settings.check_spec()
        settings.check_text_budget()
        return settings

    @property
    def embed_channels(self) -> tuple[str, ...]:
        """The embed_item channels actually served (none when the embed_item task is off)."""
        return self.channels if "embed_item" in self.tasks else ()

    def required_models(self) -> tuple[str, ...]:
        """Registry names of every model this worker loads at start, in a stable order."""
        from shared.worker.channels import RUNNERS

        names: list[str] = []
        if {"clip_text", "clip_image"} & set(self.tasks):
            names.append(self.clip_model)
        for ch in self.embed_channels:
            names.append(RUNNERS[ch].model_name(self))
        if "transcribe" in self.tasks or ("embed_video" in self.tasks and self.serves_qwen3vl):
            names.append(self.transcript_model)
        if self.serves_qwen3vl and self.embedding_backend == "qwen3_vl":
            names.append(QWEN3VL_MODEL)
        return tuple(dict.fromkeys(names))

    @property
    def serves_qwen3vl(self) -> bool:
        """Whether anything served needs the Qwen3-VL embedder (or its deterministic stand-in)."""
        return bool(set(QWEN3VL_TASKS) & set(self.tasks)) or "video_qwen3vl" in self.embed_channels

    @property
    def transcript_model(self) -> str:
        """The registry name the transcribe task (and embed_video's transcript) loads."""
        return self.whisper_model if self.whisper_backend == "transformers" else TRANSCRIPT_MODEL

    def check_text_budget(self) -> None:
        """A caption at the token limit plus the most visual tokens a video can cost must fit the
        model's context (the card's MAX_LENGTH), or a legal job could be refused by the model."""
        from shared.models.qwen3vl import VideoPlan

        pp = registry.get(QWEN3VL_MODEL).preprocessing
        room = int(pp["max_length"]) - VideoPlan(pp).max_video_tokens() - 64  # template and instruction
        if self.qwen3vl_max_text_tokens > room:
            raise ConfigError(
                f"QWEN3VL_MAX_TEXT_TOKENS={self.qwen3vl_max_text_tokens} does not fit the model's "
                f"{pp['max_length']}-token context beside a video; example: QWEN3VL_MAX_TEXT_TOKENS={room}"
            )

    def image_header_limits(self) -> dict[str, int | float]:
        """open_image's limits (checked from the header, before any decode) for every image job."""
        return {
            "max_pixels": self.max_image_pixels,
            "max_aspect": self.max_image_aspect,
            "max_full_decode_pixels": self.full_decode_max_pixels,
            "max_inflate_pixels": self.inflate_max_pixels,
        }

    def check_budgets(self) -> None:
        """One image must fit each budget, or a job could wait for room that never comes."""
        budgets = {"JOB_MAX_PIXELS": self.job_max_pixels, "WORKER_MAX_PIXELS": self.worker_max_pixels}
        for name, value in budgets.items():
            if value < self.max_image_pixels:
                raise ConfigError(
                    f"{name}={value} is below MAX_IMAGE_PIXELS={self.max_image_pixels}: one image would "
                    f"never fit; example: {name}={self.max_image_pixels * 3}"
                )

    def check_spec(self) -> None:
        """Refuse a configuration that would write artifacts the spec's fingerprints do not describe
        (each served channel's runner checks its own part)."""
        from shared.worker.channels import RUNNERS

        for name in self.embed_channels:
            RUNNERS[name].check_settings(self)
