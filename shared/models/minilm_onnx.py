"""all-MiniLM-L6-v2 on ONNX Runtime: the Lambda text model. No torch, no transformers.

The model folder (MODEL_DIR/minilm-l6-v2, written by `shared.models.minilm_export`) holds the
tokenizer and `onnx/model.onnx`, a BERT graph with fused attention / LayerNorm / GELU whose single
output `sentence_embedding` is already mean-pooled and L2-normalised, so one session run returns
sentence vectors. `onnx/model_int8.onnx` (only present when it passed the export's accuracy bar) is
statically quantized: its activation scales are fixed, so it batches like fp32 and a text's vector
does not depend on its batch-mates. Its u8s8 kernels are exact on CPUs with VNNI; on AVX2 CPUs without
VNNI they may saturate, hence the self-check.

Precision (`TextSettings.precision`, TEXT_PRECISION): `fp32`, `int8` (fp32 with a warning when the
folder has no int8 graph) or `auto` (default): at load, the int8 graph embeds the probe set baked
beside it (`onnx/probe.npz`, written by the export) and is served only if every probe keeps cosine
>= AUTO_MIN_COSINE to the baked fp32 reference vectors; else fp32 is served. The outcome (`SelfCheck`:
choice, measured min cosines, the CPU's ISA) is `model.self_check`; `model_label` ends in
`onnx-int8` or `onnx-fp32`.

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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from shared.errors import ConfigError, InvalidInput, ModelNotFound, ModelUnhealthy
from shared.models import registry
from shared.models.backend import l2_normalize
from shared.settings import TEXT_PRECISIONS as PRECISIONS
from shared.settings import TextSettings

log = logging.getLogger(__name__)

NAME = "minilm-l6-v2"
FP32_FILE = "onnx/model.onnx"
INT8_FILE = "onnx/model_int8.onnx"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "sentence_embedding"
MAX_POSITIONS = 512  # BERT position embeddings
PROBE_FILE = "onnx/probe.npz"
MAX_BATCH_TOKENS = 1024  # padded tokens per session run (bench/bench_text.py)
AUTO_MIN_COSINE = 0.995  # int8 below this on any probe (vs the baked fp32 reference) -> serve fp32
HEALTH_MIN_COSINE = 0.99  # the deep health check's bar on its probe text (catches garbage, not drift)
_ISA_FLAGS = {
    "avx2": "avx2",
    "avx512f": "avx512",
    "avx512_vnni": "vnni",
    "avx_vnni": "vnni",
    "amx_int8": "amx",
}


def cpu_info(cpuinfo: str | None = None) -> tuple[str, tuple[str, ...]]:
    """(CPU model name, ISA features among avx2/avx512/vnni/amx) from /proc/cpuinfo ("unknown", ())."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "unknown", ()
    model, flags = "unknown", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    isa = tuple(dict.fromkeys(name for flag, name in _ISA_FLAGS.items() if flag in flags))
    return model, isa


@dataclass(frozen=True)
class Probe:
    """The self-check's probe texts and their fp32 (torch) reference vectors, baked by the export."""

    texts: tuple[str, ...]
    reference: np.ndarray

    @classmethod
    def read(cls, path: Path) -> Probe:
        with np.load(path, allow_pickle=False) as data:
            texts, reference = tuple(str(t) for t in data["texts"]), data["reference"].astype(np.float32)
        if reference.shape != (len(texts), 384) or not texts:
            raise ModelUnhealthy(f"{NAME}: {path} holds {len(texts)} texts but vectors {reference.shape}")
        return cls(texts, reference)


@dataclass(frozen=True)
class SelfCheck:
    """What `MiniLMOnnx.load` chose and why (logged once and emitted as a metric at cold start)."""

    requested: str  # auto | int8 | fp32
    served: str  # int8 | fp32
    min_cosine: float | None  # the int8 graph's worst probe cosine to the fp32 reference (None: not run)
    reason: str
    cpu: str
    isa: tuple[str, ...]
    seconds: float  # probe read, sessions, probe embed

    def as_log(self) -> dict:
        return {
            "precision_requested": self.requested,
            "precision": self.served,
            "int8_min_cosine": None if self.min_cosine is None else round(self.min_cosine, 6),
            "reason": self.reason,
            "cpu": self.cpu,
            "isa": "+".join(self.isa) or "none",
            "self_check_s": round(self.seconds, 3),
        }


def session_options(threads: int) -> ort.SessionOptions:
    """Explicit ORT options: `threads` intra-op threads, sequential execution, all graph optimisations,
    no spinning: ORT's intra-op threads otherwise busy-wait after each run, and two sessions of one
    process (the search function's MiniLM and CLIP text tower) then take each other's cores
    (bench_search.py, 2 vCPU: MiniLM 14.9 -> 5.3 ms, CLIP's tower 40 -> 18 ms a query, run in turn)."""
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
        precision: str = "fp32",
        probe: Probe | None = None,
        self_check: SelfCheck | None = None,
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
        self.precision = precision  # the graph that answers: int8 | fp32
        self.probe = probe
        self.self_check = self_check
        self._encoded: tuple[list[str], list[list[int]]] | None = None

    @classmethod
    def load(cls, settings: TextSettings) -> MiniLMOnnx:
        """Load from `settings.model_dir`; a missing or incomplete folder raises ModelNotFound naming
        the directory and the command that builds it. `settings.precision` picks the graph (module doc);
        `model.self_check` says which one serves and why."""
        folder = registry.require_model(settings.model_dir, NAME)
        return cls.from_folder(
            folder,
            threads=settings.threads,
            batch_size=settings.batch_size,
            max_tokens=settings.max_tokens,
            precision=settings.precision,
        )

    @classmethod
    def from_folder(
        cls,
        folder: Path,
        *,
        threads: int = 2,
        batch_size: int = 32,
        max_tokens: int = 256,
        precision: str = "fp32",
        onnx_file: str | None = None,
    ) -> MiniLMOnnx:
        """Load from a model folder directly. `onnx_file` (FP32_FILE or INT8_FILE) loads that graph
        with no self-check and no probe (the export's own parity check uses this)."""
        folder = Path(folder)
        if precision not in PRECISIONS:
            raise ConfigError(f"precision={precision!r} is not one of {PRECISIONS}; example: auto")
        tokenizer_path = folder / "tokenizer.json"
        if onnx_file is not None:
            return cls._build(folder, onnx_file, threads, batch_size, max_tokens)
        probe_path = folder / PROBE_FILE
        for path in (folder / FP32_FILE, probe_path, tokenizer_path):
            if not path.is_file():
                raise ModelNotFound(
                    f"model {NAME!r} is missing {path.relative_to(folder)} in {folder}; "
                    f"build it with: {registry.BAKE_COMMAND.format(model_dir=folder.parent)}"
                )
        start = time.perf_counter()
        probe = Probe.read(probe_path)
        cpu, isa = cpu_info()
        cosine = None
        if precision == "fp32":
            reason = "TEXT_PRECISION=fp32 (no self-check)"
        elif not (folder / INT8_FILE).is_file():
            reason = f"no int8 graph in {folder} (the export left it out)"
            if precision == "int8":
                log.warning("%s: int8 requested but %s has no %s; serving fp32", NAME, folder, INT8_FILE)
        else:
            model = cls._build(folder, INT8_FILE, threads, batch_size, max_tokens, probe)
            cosine = float(model.probe_cosines().min())
            if precision == "int8" or cosine >= AUTO_MIN_COSINE:
                if cosine < AUTO_MIN_COSINE:
                    log.warning("%s: int8 forced at min probe cosine %.4f", NAME, cosine)
                reason = (
                    "TEXT_PRECISION=int8"
                    if precision == "int8"
                    else f"int8 min probe cosine {cosine:.4f} >= {AUTO_MIN_COSINE}"
                )
                model.self_check = SelfCheck(
                    precision, "int8", cosine, reason, cpu, isa, time.perf_counter() - start
                )
                return model
            reason = f"int8 min probe cosine {cosine:.4f} < {AUTO_MIN_COSINE} on this CPU"
            del model  # free the int8 session before the fp32 one loads (peak RSS)
        # fp32's own parity (>= 0.9999 to torch) is the export's bar; it is not re-measured here.
        model = cls._build(folder, FP32_FILE, threads, batch_size, max_tokens, probe)
        model.self_check = SelfCheck(precision, "fp32", cosine, reason, cpu, isa, time.perf_counter() - start)
        return model

    @classmethod
    def _build(
        cls,
        folder: Path,
        onnx_file: str,
        threads: int,
        batch_size: int,
        max_tokens: int,
        probe: Probe | None = None,
    ) -> MiniLMOnnx:
        entry = registry.get(NAME)
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
            batch_size=batch_size,
            model_label=label,
            precision=variant,
            probe=probe,
        )

    def probe_cosines(self, n: int | None = None) -> np.ndarray:
        """Cosine of this graph's vector to the baked fp32 reference, per probe text (the first `n`)."""
        if self.probe is None:
            raise ModelUnhealthy(f"{NAME}: no probe set loaded (built with onnx_file=...)")
        texts, reference = self.probe.texts[:n], self.probe.reference[:n]
        return np.sum(self.embed(list(texts)) * reference, axis=1)

    def health(self) -> None:
        """Deep check (GET /health): embed a probe text and compare it with its baked reference.

        Raises ModelUnhealthy on a wrong shape, NaN/inf, a non-unit vector or cosine < HEALTH_MIN_COSINE."""
        self.warmup()
        (cos,) = self.probe_cosines(1)
        if not cos >= HEALTH_MIN_COSINE:
            raise ModelUnhealthy(
                f"{self.name}: probe vector cosine {cos:.4f} to its reference < {HEALTH_MIN_COSINE}"
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
        # One-entry cache: the handler counts tokens (the request's budget) and then embeds the same list.
        cached = self._encoded
        if cached is not None and cached[0] == texts:
            return cached[1]
        ids = [enc.ids for enc in self._tokenizer.encode_batch_fast(texts)]
        self._encoded = (texts, ids)
        return ids

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
        self._encoded = None
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
