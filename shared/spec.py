"""What "the latest embeddings" means.

Each channel declares its model, dims, preprocessing, inputs and where it runs. Its fingerprint is
a hash of that canonical definition plus the model's canonical registry entry, so changing one
channel's model (or its pinned revision, or its preprocessing) changes that channel's fingerprint
and nothing else. The spec version is a human label plus a short hash of all fingerprints; artifacts
of a new version are written beside the old ones (see DESIGN.md, S3 keys).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from shared.models import registry

SPEC_LABEL = "2026-11-23"
RUNPOD = "runpod"
LAMBDA = "lambda"


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class Channel:
    name: str
    runs_on: str
    model: str | None  # registry name; None for derived channels (text_fused, person_query)
    dims: int | None  # None for the transcript (JSON, not a vector)
    modality: str  # which item modality it applies to: video | audio | image | text | person
    artifact: str  # npy | json
    preprocessing: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    depends_on: tuple[str, ...] = ()
    description: str = ""
    # Kept current by a deployment that does not choose its channels (PIPELINE_CHANNELS,
    # WORKER_CHANNELS unset). Not part of the fingerprint: it says who runs a channel, not what it makes.
    default_on: bool = True

    def canonical(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "runs_on": self.runs_on,
            "model": registry.get(self.model).canonical() if self.model else None,
            "dims": self.dims,
            "modality": self.modality,
            "artifact": self.artifact,
            "preprocessing": dict(self.preprocessing),
            "depends_on": list(self.depends_on),
        }

    @property
    def per_row(self) -> bool:
        """The artifact is a matrix [1 + rows, dims] (row 0 the pooled vector, one row per frame), not
        one vector."""
        return bool(self.preprocessing.get("per_frame"))

    @property
    def thumbnails(self) -> int:
        """How many thumbnail JPEGs (one per scene) a job of this channel may PUT: 0 for most channels."""
        return int(self.preprocessing["max_scenes"]) if "thumbnail" in self.preprocessing else 0

    @property
    def fingerprint(self) -> str:
        return _hash(self.canonical())[:16]


def _pp(**kw: Any) -> MappingProxyType:
    return MappingProxyType(kw)


_CHANNELS = (
    Channel(
        "video_clip",
        RUNPOD,
        "clip-vit-b-32",
        512,
        "video",
        "npy",
        _pp(frames=16, sampling="uniform-timestamp", pool="mean", normalize="l2", per_frame=True),
        description="CLIP image embeddings of uniformly sampled frames + mean-pooled video vector",
    ),
    Channel(
        "video_mae",
        RUNPOD,
        "videomae-base",
        768,
        "video",
        "npy",
        _pp(frames=16, sampling="uniform-timestamp", pad="repeat-last", pooling="cls", normalize="l2"),
        description="VideoMAE-base CLS token of 16 uniformly sampled frames",
    ),
    Channel(
        "audio_wav2vec2",
        RUNPOD,
        "wav2vec2-base",
        768,
        "audio",
        "npy",
        _pp(sample_rate=16000, mono=True, max_seconds=90, pooling="mean", normalize="l2"),
        description="wav2vec2-base mean-pooled over the first 90 s, 16 kHz mono",
    ),
    Channel(
        "transcript",
        RUNPOD,
        "whisper-tiny.en",
        None,
        "audio",
        "json",
        _pp(vad=True, beam_size=5, word_timestamps=False),
        description="faster-whisper segments (start, end, text), language, duration",
    ),
    Channel(
        "text_transcript",
        LAMBDA,
        "minilm-l6-v2",
        384,
        "text",
        "npy",
        _pp(source="transcript.text", max_tokens=256, normalize="l2", precision="fp32"),
        depends_on=("transcript",),
        description="MiniLM of the transcript",
    ),
    Channel(
        "text_meta",
        LAMBDA,
        "minilm-l6-v2",
        384,
        "text",
        "npy",
        _pp(
            fields=("title", "description", "query"),
            joiner=" [SEP] ",
            max_tokens=256,
            normalize="l2",
            precision="fp32",  # stored vectors come from one graph on every host (TEXT_PRECISION=fp32)
        ),
        description='MiniLM of [title, description, query] joined by " [SEP] "',
    ),
    Channel(
        "text_fused",
        LAMBDA,
        None,
        768,
        "text",
        "npy",
        _pp(concat=("text_meta", "text_transcript"), normalize="l2"),
        depends_on=("text_meta", "text_transcript"),
        description="L2-normalised concat [text_meta, text_transcript]",
    ),
    Channel(
        "image_clip",
        RUNPOD,
        "clip-vit-b-32",
        512,
        "image",
        "npy",
        _pp(
            tta="5-crop",  # an untiled image's views; a panorama's views are its tiles, one each
            panorama_max_ratio=2.6,
            panorama_max_tiles=2,  # wider images: 2 tiles, each squeezed to a square
            panorama_views="1 per tile",
            # libvips streamed (JPEG DCT-scaled, box-reduced; a capped panorama box-squeezed along its
            # long side at decode), Pillow for other formats; tile short side >= 2x resize
            decode="streamed, reduced, tile short side >= 2x resize",
            normalize="l2",
        ),
        description="CLIP image embedding of an uploaded image (optional 5-crop TTA, panorama tiling)",
    ),
    Channel(
        "scenes",
        RUNPOD,
        "clip-vit-b-32",
        512,
        "video",
        "npy",
        _pp(
            detector="scenedetect==0.7.2 AdaptiveDetector(adaptive_threshold=3, min_content_val=15)",
            # analysis frames: the PyAV sampler's uniform timestamps, every frame of a short video
            analysis_frames=1200,
            analysis_side=224,  # px, longer side: what the detector reads and the keyframe comes from
            min_shot_s=1.0,  # shorter shots are merged into a neighbour
            max_shot_s=60.0,  # longer shots are split evenly
            max_scenes=64,  # then the shortest scenes are merged until at most this many
            keyframe="middle analysis frame",
            thumbnail="jpeg q85",
            pool="mean",
            normalize="l2",
            per_frame=True,  # rows 1..n: the scenes' keyframes; `timestamps` their times
        ),
        description="shots by PySceneDetect; per scene its span, a keyframe thumbnail and its CLIP vector",
        # opt-in (PIPELINE_CHANNELS/WORKER_CHANNELS): its decode and detector cost a short video's job
        # again on the worker's CPU (docs/benchmarks.md, Scenes)
        default_on=False,
    ),
    Channel(
        "scene_text",
        LAMBDA,
        "minilm-l6-v2",
        384,
        "video",
        "npy",
        _pp(
            source="transcript words inside each scene's span (the scenes row's spans)",
            # a word belongs to the scene holding its midpoint; a segment's words share its span evenly
            # (the transcript has no word timestamps): shared.search.rows.scene_texts
            assign="word midpoint, words spread evenly over their segment",
            empty='""',  # a scene without words embeds "" (as text_meta does); the index leaves it out
            max_tokens=256,
            pool="mean of the scenes with words",
            normalize="l2",
            precision="fp32",
            per_frame=True,  # rows 1..n: the scenes' texts, aligned with the scenes artifact's rows
        ),
        depends_on=("transcript", "scenes"),
        description="MiniLM of the transcript's words inside each scene (row 0: their mean)",
        default_on=False,  # follows scenes
    ),
    Channel(
        "person_query",
        LAMBDA,
        None,
        512,
        "person",
        "npy",
        _pp(source="image_clip of READY reference photos", pool="mean", normalize="l2"),
        depends_on=("image_clip",),
        description="mean of a person's READY reference-photo embeddings, L2-normalised",
    ),
    Channel(
        "video_qwen3vl",
        RUNPOD,
        "qwen3-vl-embedding-2b",
        2048,
        "video",
        "npy",
        _pp(
            fps=1.0,  # the model card's video sampling: 1 frame/s, 4..64 frames, an even count
            min_frames=4,
            max_frames=64,
            sampling="uniform-timestamp",  # the PyAV sampler's slice centres, not the card's linspace
            resize="smart_resize to the card's frame-list pixel budget",
            caption=False,  # embed_item embeds the frames alone; embed_video may add a caption
            pooling="last",
            normalize="l2",
        ),
        description="Qwen3-VL-Embedding of sampled frames + caption in one input, Matryoshka dims",
        default_on=False,  # a 2B model on the GPU: a deployment opts in (PIPELINE_CHANNELS/WORKER_CHANNELS)
    ),
)

CHANNELS: MappingProxyType = MappingProxyType({c.name: c for c in _CHANNELS})
RUNPOD_CHANNELS = tuple(c.name for c in _CHANNELS if c.runs_on == RUNPOD)
LAMBDA_CHANNELS = tuple(c.name for c in _CHANNELS if c.runs_on == LAMBDA)


def fingerprints(channels: MappingProxyType = CHANNELS) -> dict[str, str]:
    return {name: ch.fingerprint for name, ch in channels.items()}


def spec_version(channels: MappingProxyType = CHANNELS, label: str = SPEC_LABEL) -> str:
    """Human label + short hash of all fingerprints, e.g. '2026-11-23-3f9a1c2b'."""
    return f"{label}-{_hash(fingerprints(channels))[:8]}"


SPEC_VERSION = spec_version()
