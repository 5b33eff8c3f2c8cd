"""Build time only: an OpenCLIP checkpoint folder -> its text tower on ONNX Runtime (the search function's
CLIP query encoder, `shared.models.clip_text_onnx`).

    python -m shared.models.clip_text_export --checkpoint MODEL_DIR/clip-vit-b-32 \
        --out MODEL_DIR/clip-vit-b-32-text

Imports torch and open_clip (the `export` extra): Dockerfile.cpu's model stage runs it through the bake
step (`shared.models.bake`, registry kind `clip-text-onnx`), the dev set-up through shared.dev.models.
The checkpoint is loaded by open_clip's own `local-dir:` loader, the one the GPU worker uses, so the
tower exported is the tower that embedded the frames. What it writes into the out folder:

- the checkpoint's files (open_clip_config.json, the safetensors: Dockerfile.cpu deletes the weights
  from the image, the runtime reads only what follows);
- `onnx/text.onnx`: the tower (torch.export-based exporter, opset 18), dynamic batch and sequence axes,
  pooled at the end-of-text token, projected and L2-normalised in the graph. It runs the tower the way
  `shared.models.clip._TrimmedText` does on the worker (causal attention over the tokens up to the
  batch's last end-of-text), so only towers that path accepts are exported (ConfigError otherwise);
- `tokenizer.json`: open_clip's SimpleTokenizer as a `tokenizers` BPE (vocabulary, merges, `</w>`,
  its pre-tokenizer pattern, NFC + whitespace + lower case), so the Lambda tokenizes without torch;
- `onnx/probe.npz`: the probe texts and their torch vectors (the runtime's start check);
- `manifest.json`: source, revision, the tower's token ids and context, parity numbers.

Parity, checked here on PROBE_TEXTS: the runtime's token ids must equal open_clip's tokenizer's, and
the ONNX vectors (through the runtime loader) must keep cosine >= FP32_MIN_COSINE to open_clip's own
`encode_text` on the full 77-token input; anything less fails the export (ConfigError). The folder is
built in a temporary sibling and renamed into place: a failed export leaves the previous one.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import ConfigError, EmbeddingError, ModelNotFound
from shared.models import registry
from shared.models.clip_text_onnx import (
    INPUT_NAME,
    NAME,
    ONNX_FILE,
    OUTPUT_NAME,
    PROBE_FILE,
    TOKENIZER_FILE,
    ClipTextOnnx,
    clean,
)

log = logging.getLogger(__name__)

OPSET = 18
FP32_MIN_COSINE = 0.999
# open_clip's SimpleTokenizer pre-tokenizer pattern (its text is lower-cased first, so IGNORECASE is moot)
SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
PROBE_TEXTS = (
    "",
    "when does the ferry leave",
    "A Dog Running On The Beach!",
    "two people shaking hands in an office, smiling",
    "Café naïve résumé — Zürich at night",
    "東京の夜景とラーメン",
    "order #12345 at 14:05 costs $1,299.99",
    "fish &amp; chips",
    "  lots   of\twhitespace \n here ",
    "🚀🔥 launch day",
    " ".join(["the quick brown fox jumps over the lazy dog"] * 12),  # over the 77-token context
)


def recipe() -> str:
    """Stamp of this export recipe and the runtime it targets: a change re-exports dev folders."""
    here = Path(__file__)
    digest = hashlib.sha256(here.read_bytes() + here.with_name("clip_text_onnx.py").read_bytes())
    return digest.hexdigest()[:16]


def build_tokenizer(simple: Any) -> Any:
    """open_clip's SimpleTokenizer as a `tokenizers.Tokenizer` (what transformers' CLIP converter
    builds): byte-level BPE with `</w>` word ends over open_clip's own vocabulary and merges."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    merges = [pair for pair, _ in sorted(simple.bpe_ranks.items(), key=lambda kv: kv[1])]
    tok = Tokenizer(
        models.BPE(vocab=dict(simple.encoder), merges=merges, end_of_word_suffix="</w>", fuse_unk=False)
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def _load(checkpoint: Path) -> tuple[Any, Any]:
    """(model in eval mode, its open_clip tokenizer), through open_clip's own local-dir loader."""
    import open_clip

    model, _, _ = open_clip.create_model_and_transforms(
        f"local-dir:{checkpoint}", device="cpu", precision="fp32", weights_only=True
    )
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{checkpoint}")
    if not hasattr(tokenizer, "bpe_ranks") or getattr(tokenizer, "reduction_fn", None) is not None:
        raise ConfigError(
            f"{checkpoint}: only open_clip's SimpleTokenizer (truncating) is exported, not "
            f"{type(tokenizer).__name__}"
        )
    return model, tokenizer


def _graph_module(model: Any) -> tuple[Any, str]:
    """(the tower as a module with input_ids -> unit vectors, its pooling: argmax | eos)."""
    import torch

    from shared.models.clip import _TrimmedText

    trimmed = _TrimmedText.probe(model)
    if trimmed is None:
        raise ConfigError("this text tower is not causal with end-of-text pooling: no ONNX export for it")

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tower = trimmed.tower  # registered, so its weights are the graph's

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            x = trimmed.run(input_ids, trimmed.ends(input_ids)).float()
            return torch.nn.functional.normalize(x, dim=-1)

    return TextTower().eval(), str(trimmed.pool_type)


def _export(module: Any, example: Any, path: Path, context_length: int) -> None:
    """torch.export-based exporter with a dynamic batch and sequence axis (sequence <= the context).
    The TorchScript exporter (the MiniLM export's) bakes nn.MultiheadAttention's sequence length into
    a Reshape as a constant, so its graph only runs at the traced length."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    sequence = torch.export.Dim("sequence", min=2, max=context_length)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch, 1: sequence},),
            opset_version=OPSET,
            dynamo=True,
            optimize=True,
            external_data=False,  # one file (ViT-B-32's text tower: ~250 MB, under protobuf's 2 GB)
            verbose=False,
        )


def _reference(model: Any, tokenizer: Any, texts: Sequence[str]) -> tuple[np.ndarray, list[list[int]]]:
    """open_clip's own computation: its tokenizer (77 tokens, padded) and encode_text, normalised."""
    import torch

    tokens = tokenizer(list(texts))
    with torch.no_grad():
        vectors = model.encode_text(tokens, normalize=True).float().numpy()
    ids = [[int(t) for t in row[: int((row != 0).sum())]] for row in tokens]
    return vectors.astype(np.float32), ids


def write_text_tower(checkpoint: Path, out: Path, *, tower_of: str = "clip-vit-b-32") -> dict[str, Any]:
    """Write the runtime folder's files into the (empty) folder `out` from the open_clip checkpoint
    folder; returns the manifest's extra fields. ConfigError when parity fails."""
    checkpoint, out = Path(checkpoint), Path(out)
    entry = registry.get(NAME)
    missing = [f for f in entry.files if not (checkpoint / f).is_file()]
    if missing:
        raise ModelNotFound(f"checkpoint {checkpoint} lacks {', '.join(missing)} (want {entry.source_repo})")
    for name in entry.files:
        shutil.copyfile(checkpoint / name, out / name)
    model, tokenizer = _load(checkpoint)
    build_tokenizer(tokenizer).save(str(out / TOKENIZER_FILE))
    module, pool = _graph_module(model)
    example = tokenizer(["a photo of a dog", "a"])[:, :8]  # two lengths: the padding path is traced
    _export(module, example, out / ONNX_FILE, int(tokenizer.context_length))
    texts = list(PROBE_TEXTS)
    reference, ref_ids = _reference(model, tokenizer, texts)
    np.savez(out / PROBE_FILE, texts=np.array(texts), reference=reference)
    tower = {
        "tower_of": tower_of,
        "dims": int(reference.shape[1]),
        "context_length": int(tokenizer.context_length),
        "sot_id": int(tokenizer.sot_token_id),
        "eot_id": int(tokenizer.eot_token_id),
        "pool": pool,
    }
    registry.write_manifest(out, entry, text_tower=tower)  # the runtime reads it; rewritten below
    runtime = ClipTextOnnx(out, threads=1)
    ids = runtime.token_ids(texts)
    wrong = [i for i, (a, b) in enumerate(zip(ids, ref_ids, strict=True)) if a != b]
    if wrong:
        raise ConfigError(
            f"the exported tokenizer disagrees with open_clip's on probe {wrong[0]} "
            f"({clean(texts[wrong[0]])[:40]!r})"
        )
    cos = np.sum(runtime.embed(texts) * reference, axis=1)
    if float(cos.min()) < FP32_MIN_COSINE:
        worst = int(cos.argmin())
        raise ConfigError(
            f"ONNX text tower parity {cos.min():.6f} < {FP32_MIN_COSINE} on probe {worst} "
            f"({texts[worst][:40]!r})"
        )
    return {
        "text_tower": tower,
        "recipe": recipe(),
        "onnx": {"file": ONNX_FILE, "opset": OPSET, "input": INPUT_NAME, "output": OUTPUT_NAME},
        "parity": {
            "reference": "open_clip encode_text(normalize=True) on its own 77-token input, torch fp32",
            "probes": len(texts),
            "min_cosine": round(float(cos.min()), 6),
            "tokens_equal": True,
        },
    }


def export_clip_text(checkpoint_dir: Path, out_dir: Path, *, dev_source: str | None = None) -> Path:
    """The whole folder `out_dir` (MODEL_DIR/clip-vit-b-32-text) from a checkpoint folder, with its
    manifest (source, revision, random or not: the checkpoint's), swapped into place; returns out_dir."""
    entry = registry.get(NAME)
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    source = registry.read_manifest(checkpoint_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the model from Lambda's non-root user
    old = out_dir.with_name(f".{out_dir.name}.old-{tmp.name}")
    try:
        extra = write_text_tower(checkpoint_dir, tmp, tower_of=entry.preprocessing["tower_of"])
        registry.write_manifest(
            tmp, entry, random=bool(source.get("random", False)), dev_source=dev_source, **extra
        )
        for path in tmp.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m shared.models.clip_text_export --checkpoint DIR --out DIR`."""
    parser = argparse.ArgumentParser(
        prog="python -m shared.models.clip_text_export", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--checkpoint", required=True, type=Path, help="open_clip folder (MODEL_DIR/clip-vit-b-32)"
    )
    parser.add_argument("--out", required=True, type=Path, help=f"folder to write (MODEL_DIR/{NAME})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        folder = export_clip_text(args.checkpoint, args.out)
    except EmbeddingError as e:
        print(f"export failed: {e}", file=sys.stderr)
        return 2
    manifest = registry.read_manifest(folder)
    print(f"wrote {folder}: {manifest['onnx']['file']}, parity vs torch: {manifest['parity']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
