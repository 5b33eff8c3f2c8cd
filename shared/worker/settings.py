"""RunPod worker settings, read once at start from a mapping (normally os.environ) and frozen.

Every variable (all optional; the defaults are the production values):

    MODEL_DIR                 baked model folder (image: /models; dev: <repo>/.models)
    DEVICE                    auto | cpu | cuda | cuda:N          (auto: cuda when available; the GPU
                              image sets cuda, and a worker told cuda that finds none refuses to start)
    PRECISION                 fp16 | bf16 | fp32                  (CPU always runs fp32)
    CLIP_MODEL                registry name of the CLIP model      (clip-vit-b-32; clip-eva02-l-14-336)
    WORKER_TASKS              tasks served  (embed_item,transcribe,clip_text,clip_image; embed_video and
                              qwen3vl_text are opt-in: they load Qwen3-VL-Embedding-2B)
    WORKER_CHANNELS           embed_item channels it serves        (the RunPod channels of shared.spec
                              that are on by default: all but video_qwen3vl)
    EMBEDDING_BACKEND         qwen3_vl | deterministic             (qwen3_vl) what embed_video/qwen3vl_text
                              run; deterministic is a hash-seeded placeholder for callers' integration
                              tests, labelled so in every output, refused for the video_qwen3vl channel
    EMBEDDING_DIMS            embed_video/qwen3vl_text dims when a job names none (2048; one of the
                              model's Matryoshka sizes: 2048,1536,1024,768,512,256,128,64)
    QWEN3VL_MAX_TEXT_TOKENS   tokens of a caption or query text     (512)
    QWEN3VL_TEXT_OVERFLOW     truncate | refuse: a longer caption/text is cut at a token boundary
                              (the output says so) or refused      (truncate)
    WHISPER_BACKEND           faster_whisper | transformers        (faster_whisper) what the transcribe
                              task and embed_video's transcript run; the spec's transcript channel is
                              faster-whisper, so embed_item's transcript needs faster_whisper
    WHISPER_MODEL             registry name of the transformers Whisper checkpoint
                              (distil-whisper-large-v3; only read with WHISPER_BACKEND=transformers)
    WHISPER_MAX_NEW_TOKENS    tokens a transformers Whisper may generate per 30 s window (0: derived
                              from the checkpoint: its max_target_positions minus the prompt, whenever
                              its generation config's max_length would cut transcripts shorter)
    ENABLE_TTA                5-crop TTA for image_clip / clip_image (1)
    PANORAMA_MAX_RATIO        tile images wider than this ratio    (2.6)
    PANORAMA_MAX_TILES        most panorama tiles per image; a wider image is cut into N tiles, each
                              squeezed to a square and one view (no 5-crop TTA per tile), so an
                              image costs at most max(5, N) views (2)
    MAX_IMAGE_ASPECT          an image whose aspect ratio is beyond N:1 is refused from its header
                              with media_error (8)
    MAX_DOWNLOAD_BYTES        source size cap                      (2147483648)
    DOWNLOAD_TIMEOUT_S        download/upload time limit, seconds  (300)
    ALLOW_PRIVATE_URLS        allow loopback/private addresses     (0; only the local stack sets it)
    BATCH_WINDOW_MS           clip_text/clip_image batching window (15)
    BATCH_EARLY_CLOSE         run a batch once no job in the worker can still join it (1)
    MAX_BATCH                 items per batched forward pass       (64)
    WORKER_CONCURRENCY        jobs RunPod hands this worker at once (8)
    MEDIA_CONCURRENCY         embed_item/transcribe jobs decoding at once (2)
    MAX_TEXTS                 texts per clip_text job              (256)
    MAX_TEXT_CHARS            characters per text                  (2000)
    MAX_IMAGES                images per clip_image job            (32)
    MAX_IMAGE_BYTES           bytes per clip_image image           (20000000)
    MAX_IMAGE_PIXELS          decoded pixels per image             (50000000)
    FULL_DECODE_MAX_PIXELS    pixels of an image only Pillow decodes, at full size (GIF, BMP, odd
                              TIFF...), refused from its header above it (1500000)
    INFLATE_MAX_PIXELS        pixels of a PNG/WebP/TIFF, inflated whole though streamed, refused from
                              its header above it (33177600: an 8K UHD frame; JPEG is DCT-scaled)
    JOB_MAX_PIXELS            decoded image pixels per job, summed from the headers before any
                              image is decoded (400000000: 32 twelve-megapixel photos)
    WORKER_MAX_PIXELS         image pixels decoded at once in the whole worker, all jobs together
                              (150000000, ~0.5 GB of RGB); a decode waits for room
    MAX_VIDEO_PIXELS          pixels per coded video frame, read from the stream header (35389440, 8K)
    TRANSCRIPT_MAX_SECONDS    audio transcribed per item/job       (1800)

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
from shared.settings import DEFAULT_MODEL_DIR, choice, model_dir_from, positive, read, read_bool
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
DEFAULT_CHANNELS = tuple(c for c in spec.RUNPOD_CHANNELS if spec.CHANNELS[c].default_on)


def _csv(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def inner(raw: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
        if not names or any(n not in allowed for n in names):
            raise ValueError(raw)
        return names

    return inner


def _device(raw: str) -> str:
    low = raw.strip().lower()
    if low in ("auto", "cpu", "cuda") or (low.startswith("cuda:") and low[5:].isdigit()):
        return low
    raise ValueError(raw)


def _clip_name(raw: str) -> str:
    entry = registry.REGISTRY.get(raw)
    if entry is None or entry.kind != "open_clip":
        raise ValueError(raw)
    return raw


def _ratio(raw: str) -> float:
    value = float(raw)
    if not value >= 1.0 or value == float("inf"):
        raise ValueError(raw)
    return value


def _whisper_name(raw: str) -> str:
    entry = registry.REGISTRY.get(raw)
    if entry is None or entry.kind != "whisper-transformers":
        raise ValueError(raw)
    return raw


def _mrl_dims(raw: str) -> int:
    value = int(raw)
    if value not in MRL_DIMS:
        raise ValueError(raw)
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(raw)
    return value


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@dataclass(frozen=True)
class WorkerSettings:
    """The GPU worker's configuration. Build with `from_env`; tests pass plain dicts."""

    model_dir: Path = DEFAULT_MODEL_DIR
    device: str = "cpu"  # resolved: cpu | cuda | cuda:N
    precision: str = "fp32"  # effective: always fp32 on CPU
    clip_model: str = "clip-vit-b-32"
    tasks: tuple[str, ...] = DEFAULT_TASKS
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    embedding_backend: str = "qwen3_vl"
    embedding_dims: int = MRL_DIMS[0]
    qwen3vl_max_text_tokens: int = 512
    qwen3vl_text_overflow: str = "truncate"
    whisper_backend: str = "faster_whisper"
    whisper_model: str = "distil-whisper-large-v3"
    whisper_max_new_tokens: int = 0
    tta: bool = True
    panorama_max_ratio: float = 2.6
    panorama_max_tiles: int = 2
    max_image_aspect: float = 8.0
    max_download_bytes: int = 2 * 1024**3
    download_timeout_s: float = 300.0
    allow_private_urls: bool = False
    batch_window_ms: float = 15.0
    batch_early_close: bool = True
    max_batch: int = 64
    concurrency: int = 8
    media_concurrency: int = 2
    max_texts: int = 256
    max_text_chars: int = 2000
    max_images: int = 32
    max_image_bytes: int = 20_000_000
    max_image_pixels: int = 50_000_000
    full_decode_max_pixels: int = FULL_DECODE_MAX_PIXELS
    inflate_max_pixels: int = INFLATE_MAX_PIXELS
    job_max_pixels: int = 400_000_000
    worker_max_pixels: int = 150_000_000
    max_video_pixels: int = 8192 * 4320
    transcript_max_seconds: float = 1800.0

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, cuda_available: Callable[[], bool] = _cuda_available
    ) -> WorkerSettings:
        """Read and validate every setting; a malformed value raises ConfigError with an example."""
        env = os.environ if env is None else env
        requested = read(env, "DEVICE", _device, "auto", "cuda")
        if requested == "auto":
            device = "cuda" if cuda_available() else "cpu"
        else:
            device = requested
            if device.startswith("cuda") and not cuda_available():
                raise ConfigError(
                    f"DEVICE={device} but no CUDA device is visible (torch.cuda.is_available() is False; "
                    f"check the host's driver against the image's CUDA); example: DEVICE=cpu"
                )
        precision = read(env, "PRECISION", choice(*PRECISIONS), "fp16", "fp16")
        if device == "cpu":
            precision = "fp32"  # half precision on CPU is slow and lossy; never what anyone wants
        settings = cls(
            model_dir=model_dir_from(env),
            device=device,
            precision=precision,
            clip_model=read(env, "CLIP_MODEL", _clip_name, cls.clip_model, "clip-vit-b-32"),
            tasks=read(env, "WORKER_TASKS", _csv(TASKS), cls.tasks, "clip_text,clip_image"),
            channels=read(
                env, "WORKER_CHANNELS", _csv(spec.RUNPOD_CHANNELS), cls.channels, "video_clip,transcript"
            ),
            embedding_backend=read(
                env, "EMBEDDING_BACKEND", choice(*EMBEDDING_BACKENDS), cls.embedding_backend, "qwen3_vl"
            ),
            embedding_dims=read(env, "EMBEDDING_DIMS", _mrl_dims, cls.embedding_dims, "512"),
            qwen3vl_max_text_tokens=read(
                env, "QWEN3VL_MAX_TEXT_TOKENS", positive(int), cls.qwen3vl_max_text_tokens, "512"
            ),
            qwen3vl_text_overflow=read(
                env, "QWEN3VL_TEXT_OVERFLOW", choice(*TEXT_OVERFLOW), cls.qwen3vl_text_overflow, "refuse"
            ),
            whisper_backend=read(
                env, "WHISPER_BACKEND", choice(*WHISPER_BACKENDS), cls.whisper_backend, "transformers"
            ),
            whisper_model=read(
                env, "WHISPER_MODEL", _whisper_name, cls.whisper_model, "distil-whisper-large-v3"
            ),
            whisper_max_new_tokens=read(
                env, "WHISPER_MAX_NEW_TOKENS", _non_negative_int, cls.whisper_max_new_tokens, "440"
            ),
            tta=read_bool(env, "ENABLE_TTA", cls.tta),
            panorama_max_ratio=read(env, "PANORAMA_MAX_RATIO", _ratio, cls.panorama_max_ratio, "2.6"),
            panorama_max_tiles=read(env, "PANORAMA_MAX_TILES", positive(int), cls.panorama_max_tiles, "2"),
            max_image_aspect=read(env, "MAX_IMAGE_ASPECT", _ratio, cls.max_image_aspect, "8"),
            max_download_bytes=read(
                env, "MAX_DOWNLOAD_BYTES", positive(int), cls.max_download_bytes, "2147483648"
            ),
            download_timeout_s=read(env, "DOWNLOAD_TIMEOUT_S", _seconds, cls.download_timeout_s, "300"),
            allow_private_urls=read_bool(env, "ALLOW_PRIVATE_URLS", cls.allow_private_urls),
            batch_window_ms=read(env, "BATCH_WINDOW_MS", _non_negative_float, cls.batch_window_ms, "15"),
            batch_early_close=read_bool(env, "BATCH_EARLY_CLOSE", cls.batch_early_close),
            max_batch=read(env, "MAX_BATCH", positive(int), cls.max_batch, "64"),
            concurrency=read(env, "WORKER_CONCURRENCY", positive(int), cls.concurrency, "8"),
            media_concurrency=read(env, "MEDIA_CONCURRENCY", positive(int), cls.media_concurrency, "2"),
            max_texts=read(env, "MAX_TEXTS", positive(int), cls.max_texts, "256"),
            max_text_chars=read(env, "MAX_TEXT_CHARS", positive(int), cls.max_text_chars, "2000"),
            max_images=read(env, "MAX_IMAGES", positive(int), cls.max_images, "32"),
            max_image_bytes=read(env, "MAX_IMAGE_BYTES", positive(int), cls.max_image_bytes, "20000000"),
            max_image_pixels=read(env, "MAX_IMAGE_PIXELS", positive(int), cls.max_image_pixels, "50000000"),
            full_decode_max_pixels=read(
                env, "FULL_DECODE_MAX_PIXELS", positive(int), cls.full_decode_max_pixels, "1500000"
            ),
            inflate_max_pixels=read(
                env, "INFLATE_MAX_PIXELS", positive(int), cls.inflate_max_pixels, "33177600"
            ),
            job_max_pixels=read(env, "JOB_MAX_PIXELS", positive(int), cls.job_max_pixels, "400000000"),
            worker_max_pixels=read(
                env, "WORKER_MAX_PIXELS", positive(int), cls.worker_max_pixels, "150000000"
            ),
            max_video_pixels=read(env, "MAX_VIDEO_PIXELS", positive(int), cls.max_video_pixels, "35389440"),
            transcript_max_seconds=read(
                env, "TRANSCRIPT_MAX_SECONDS", _seconds, cls.transcript_max_seconds, "1800"
            ),
        )
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


def _seconds(raw: str) -> float:
    value = float(raw)
    if not 0 < value < float("inf"):  # also refuses nan
        raise ValueError(raw)
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0 or value == float("inf"):
        raise ValueError(raw)
    return value
