"""all-MiniLM-L6-v2 on ONNX Runtime: the Lambda text model. No torch, no transformers.

The model folder (MODEL_DIR/minilm-l6-v2, written by `shared.models.minilm_export`) holds the
tokenizer and `onnx/model.onnx`, a BERT graph with fused attention / LayerNorm / GELU whose single
output `sentence_embedding` is already mean-pooled and L2-normalised, so one session run returns
sentence vectors. `onnx/model_int8.onnx` (only present when it passed the export's accuracy bar) is
picked by `TextSettings.quantized`; it runs one text per session run, because its dynamic per-tensor
activation quantization would otherwise make a text's vector depend on the rest of its batch. Its
u8s8 kernels are exact on CPUs with VNNI; on AVX2 CPUs without VNNI they may saturate.

Behaviour matches sentence-transformers' `encode(..., normalize_embeddings=True)`:
- text is cut at `max_tokens` (256) tokens including [CLS] and [SEP];
- empty and whitespace-only text tokenizes to [CLS] [SEP] and gets the same vector as
  sentence-transformers gives for "" (a valid unit vector, not an error);
- "[SEP]" written in a text is the special separator token (the text_meta channel relies on it).

Texts are length-sorted into runs of at most `batch_size` texts and `MAX_BATCH_TOKENS` padded tokens
(short queries batch wide, 256-token passages go 4 at a time: on 2 threads that beats a fixed batch
size), each padded only to its longest member; results come back in input order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from shared.errors import ConfigError, InvalidInput, ModelNotFound, ModelUnhealthy
from shared.models import registry
from shared.models.backend import l2_normalize
from shared.settings import TextSettings

log = logging.getLogger(__name__)

NAME = "minilm-l6-v2"
FP32_FILE = "onnx/model.onnx"
INT8_FILE = "onnx/model_int8.onnx"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "sentence_embedding"
MAX_POSITIONS = 512  # BERT position embeddings
MAX_BATCH_TOKENS = 1024  # padded tokens per session run (bench/bench_text.py)


def session_options(threads: int) -> ort.SessionOptions:
    """Explicit ORT options: `threads` intra-op threads, sequential execution, all graph optimisations."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


class MiniLMOnnx:
    """Sentence embeddings (384-d, unit norm) from all-MiniLM-L6-v2 on ONNX Runtime (CPU)."""

    name: str = NAME

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        *,
        dims: int,
        max_tokens: int,
        batch_size: int,
        model_label: str,
    ) -> None:
        if not 2 <= max_tokens <= MAX_POSITIONS:
            raise ConfigError(f"max_tokens={max_tokens} must be within 2..{MAX_POSITIONS}; example: 256")
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1; example: 32")
        self._session = session
        self._tokenizer = tokenizer
        self._inputs = tuple(i.name for i in session.get_inputs())
        unknown = set(self._inputs) - set(INPUT_NAMES)
        if unknown or [o.name for o in session.get_outputs()] != [OUTPUT_NAME]:
            raise ModelUnhealthy(
                f"{NAME}: the ONNX graph has inputs {self._inputs} and outputs "
                f"{[o.name for o in session.get_outputs()]}; expected {INPUT_NAMES} -> [{OUTPUT_NAME!r}]"
            )
        sep = tokenizer.token_to_id("[SEP]")
        if sep is None:
            raise ModelUnhealthy(f"{NAME}: tokenizer has no [SEP] token")
        self._sep = sep
        self.dims = dims
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.model_label = model_label

    @classmethod
    def load(cls, settings: TextSettings) -> MiniLMOnnx:
        """Load from `settings.model_dir`; a missing or incomplete folder raises ModelNotFound naming
        the directory and the command that builds it. `settings.quantized` selects the int8 graph when
        the folder has one (else fp32, with a warning; `model_label` says which one runs)."""
        folder = registry.require_model(settings.model_dir, NAME)
        return cls.from_folder(
            folder,
            threads=settings.threads,
            batch_size=settings.batch_size,
            max_tokens=settings.max_tokens,
            quantized=settings.quantized,
        )

    @classmethod
    def from_folder(
        cls,
        folder: Path,
        *,
        threads: int = 2,
        batch_size: int = 32,
        max_tokens: int = 256,
        quantized: bool = False,
        onnx_file: str | None = None,
    ) -> MiniLMOnnx:
        """Load from a model folder directly (the export's own parity check uses this).

        `onnx_file` (FP32_FILE or INT8_FILE) overrides the `quantized` choice."""
        folder = Path(folder)
        entry = registry.get(NAME)
        if onnx_file is None:
            onnx_file = FP32_FILE
            if quantized:
                if (folder / INT8_FILE).is_file():
                    onnx_file = INT8_FILE
                else:
                    log.warning("%s: int8 requested but %s has no %s; serving fp32", NAME, folder, INT8_FILE)
        path = folder / onnx_file
        if not path.is_file() or not (folder / "tokenizer.json").is_file():
            raise ModelNotFound(
                f"model {NAME!r} is missing {path.name if not path.is_file() else 'tokenizer.json'} "
                f"in {folder}; build it with: {registry.BAKE_COMMAND.format(model_dir=folder.parent)}"
            )
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.no_truncation()  # counts must be untruncated; embed() truncates itself
        session = ort.InferenceSession(
            str(path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        manifest = registry.read_manifest(folder)
        revision = str(manifest.get("revision") or entry.revision)[:12]
        variant = "int8" if onnx_file == INT8_FILE else "fp32"
        label = f"{manifest.get('source_repo') or entry.source_repo}@{revision} onnx-{variant}"
        return cls(
            session,
            tokenizer,
            dims=int(entry.dims or 384),
            max_tokens=max_tokens,
            batch_size=1 if variant == "int8" else batch_size,  # int8: one text per run (see module doc)
            model_label=label,
        )

    def _check(self, texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str | bytes):
            raise InvalidInput("expected a list of strings, got a single string", field="texts")
        out = list(texts)
        for i, text in enumerate(out):
            if not isinstance(text, str):
                raise InvalidInput(f"expected a string, got {type(text).__name__}", field=f"texts[{i}]")
        return out

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return [enc.ids for enc in self._tokenizer.encode_batch_fast(texts)]

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Untruncated token counts, [CLS] and [SEP] included (compare with `max_tokens`)."""
        return [len(ids) for ids in self._encode(self._check(texts))]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), 384], unit-norm rows, in input order; texts over `max_tokens` are cut."""
        batch = self._check(texts)
        out = np.empty((len(batch), self.dims), dtype=np.float32)
        if not batch:
            return out
        cut = self.max_tokens - 1
        ids = [t if len(t) <= self.max_tokens else [*t[:cut], self._sep] for t in self._encode(batch)]
        lengths = np.fromiter((len(t) for t in ids), dtype=np.int64, count=len(ids))
        for rows in self._runs(lengths):
            width = int(lengths[rows[-1]])
            input_ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                input_ids[r, : lengths[i]] = ids[i]
                mask[r, : lengths[i]] = 1
            feed = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(mask)}
            out[rows] = self._session.run([OUTPUT_NAME], {k: feed[k] for k in self._inputs})[0]
        return out

    def _runs(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Indices grouped into runs, shortest first: each run's last text is its longest."""
        order = np.argsort(lengths, kind="stable")
        runs, start = [], 0
        while start < len(order):
            end = start + 1
            while (
                end < len(order)
                and end - start < self.batch_size
                and (end - start + 1) * lengths[order[end]] <= MAX_BATCH_TOKENS
            ):
                end += 1
            runs.append(order[start:end])
            start = end
        return runs

    def warmup(self) -> None:
        """One canary inference; raises ModelUnhealthy on a wrong shape, NaN/inf or a non-unit vector."""
        vectors = self.embed(["warmup: a short canary sentence", ""])
        norms = np.linalg.norm(vectors, axis=1) if vectors.ndim == 2 else np.array([])
        healthy = vectors.shape == (2, self.dims) and np.isfinite(vectors).all()
        if not healthy or not np.allclose(norms, 1, atol=1e-3):
            raise ModelUnhealthy(f"{self.name}: canary returned shape {vectors.shape}, norms {norms}")


def truncate_dims(vectors: np.ndarray, k: int) -> np.ndarray:
    """Keep the first `k` dims of each vector and renormalise (1 <= k <= width, else InvalidInput).

    MiniLM is not Matryoshka-trained: the prefix is a lower-quality embedding than the full vector."""
    arr = np.asarray(vectors, dtype=np.float32)
    width = arr.shape[-1] if arr.ndim else 0
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= width:
        raise InvalidInput(f"must be an integer within 1..{width}, got {k!r}", field="dims")
    return l2_normalize(arr[..., :k])
