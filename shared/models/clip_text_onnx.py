"""CLIP's text tower on ONNX Runtime: the search function's query encoder for the visual table. No torch.

The model folder (MODEL_DIR/clip-vit-b-32-text, written at image build time by
`shared.models.clip_text_export` from the same checkpoint the GPU worker embeds frames and images
with) holds:

- `onnx/text.onnx`: the tower, input `input_ids` int64 [batch, length] (length <= the context, 77),
  output `text_embeds` float32 [batch, dims], pooled at each row's end-of-text token, projected and
  L2-normalised in the graph. The attention is causal, so a row padded after its end-of-text token
  gets the same vector as the full 77-token input: the encoder feeds each batch cut after its longest
  row (a 5-word query costs 7 positions, not 77);
- `tokenizer.json`: open_clip's BPE (the same vocabulary, merges, `</w>` suffix and pre-tokenizer
  pattern) as a `tokenizers` file; `manifest.json` holds the start/end token ids and the context;
- `onnx/probe.npz`: a few texts and their torch reference vectors. `load` embeds them and refuses
  to start (ModelUnhealthy) below PROBE_MIN_COSINE: a broken graph fails the cold start, never a query.

Text cleaning follows open_clip's `basic_clean` + `whitespace_clean` + lower case, except ftfy's mojibake
repair (ftfy is not in the Lambda image): HTML entities are unescaped here, NFC, whitespace collapsing
and lower case are the tokenizer's normalizer. Texts longer than the context are cut, the last token
replaced by end-of-text, as open_clip's tokenizer does.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from shared.errors import InvalidInput, ModelNotFound, ModelUnhealthy
from shared.models import registry
from shared.models.backend import l2_normalize
from shared.models.minilm_onnx import session_options

log = logging.getLogger(__name__)

NAME = "clip-vit-b-32-text"
ONNX_FILE = "onnx/text.onnx"
PROBE_FILE = "onnx/probe.npz"
TOKENIZER_FILE = "tokenizer.json"
INPUT_NAME = "input_ids"
OUTPUT_NAME = "text_embeds"
PROBE_MIN_COSINE = 0.999  # the ONNX graph against the torch tower on the baked probes
MAX_BATCH = 64  # texts per session run


def clean(text: str) -> str:
    """open_clip's basic_clean without ftfy: HTML entities unescaped (twice, as there), ends stripped."""
    return html.unescape(html.unescape(text)).strip()


def tokenizer_from_file(path: Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    return tok


class ClipTextOnnx:
    """Text -> CLIP embedding (unit rows) on ONNX Runtime. Attributes: name, dims, context_length,
    tower_of (the image model whose space this is), random (dev weights), model_label."""

    def __init__(self, folder: Path, *, threads: int = 1, name: str = NAME) -> None:
        folder = Path(folder)
        manifest = registry.read_manifest(folder)
        tower = manifest.get("text_tower")
        if not isinstance(tower, dict):
            raise ModelNotFound(f"{folder} has no text_tower in its {registry.MANIFEST} (re-export it)")
        self.name = name
        self.folder = folder
        self.dims = int(tower["dims"])
        self.context_length = int(tower["context_length"])
        self.sot_id, self.eot_id = int(tower["sot_id"]), int(tower["eot_id"])
        self.tower_of = str(tower["tower_of"])
        self.random = bool(manifest.get("random", False))
        self.model_label = (
            f"{name}:random-weights"
            if self.random
            else f"{manifest.get('source_repo', name)}@{manifest.get('revision', 'unknown')}:text-onnx"
        )
        if self.random:
            log.warning(
                "model %s in %s has RANDOM weights (dev/test only): outputs mean nothing", name, folder
            )
        self._tokenizer = tokenizer_from_file(folder / TOKENIZER_FILE)
        self._session = ort.InferenceSession(
            str(folder / ONNX_FILE), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )

    @classmethod
    def load(cls, model_dir: Path, name: str = NAME, *, threads: int = 1) -> ClipTextOnnx:
        """The folder MODEL_DIR/name (ModelNotFound naming it and the bake command when incomplete),
        loaded and checked against its probes (ModelUnhealthy below PROBE_MIN_COSINE)."""
        model = cls(registry.require_model(model_dir, name), threads=threads, name=name)
        model.check()
        return model

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """[start] + BPE ids + [end] per text, cut to the context with end-of-text last (open_clip's rule)."""
        out = []
        for enc in self._tokenizer.encode_batch([clean(t) for t in texts], add_special_tokens=False):
            ids = [self.sot_id, *enc.ids, self.eot_id]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot_id
            out.append(ids)
        return out

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [n, dims], unit rows, in input order."""
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise InvalidInput("every item must be a string", field="texts")
        rows = self.token_ids(texts)
        out = np.zeros((len(rows), self.dims), dtype=np.float32)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths share a run
        for start in range(0, len(order), MAX_BATCH):
            chunk = order[start : start + MAX_BATCH]
            width = max(len(rows[i]) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            for r, i in enumerate(chunk):
                ids[r, : len(rows[i])] = rows[i]
            (vectors,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: ids})
            out[chunk] = vectors
        return l2_normalize(out)

    def __call__(self, texts: list[str]) -> np.ndarray:  # shared.search.query.Encoder
        return self.embed(texts)

    def check(self) -> dict[str, Any]:
        """Embed the baked probes; ModelUnhealthy below PROBE_MIN_COSINE. Returns the worst cosine."""
        with np.load(self.folder / PROBE_FILE, allow_pickle=False) as data:
            texts, reference = [str(t) for t in data["texts"]], data["reference"].astype(np.float32)
        if reference.shape != (len(texts), self.dims) or not texts:
            raise ModelUnhealthy(f"{self.name}: {PROBE_FILE} holds {len(texts)} texts but {reference.shape}")
        got = self.embed(texts)
        cos = np.sum(got * reference, axis=1)
        if not np.all(np.isfinite(cos)) or float(cos.min()) < PROBE_MIN_COSINE:
            raise ModelUnhealthy(
                f"{self.name}: the ONNX text tower drifted from its torch reference "
                f"(min cosine {float(np.nan_to_num(cos).min()):.6f} < {PROBE_MIN_COSINE}); re-export it"
            )
        return {"probes": len(texts), "min_cosine": round(float(cos.min()), 6)}

    def warmup(self) -> None:
        self.embed(["warmup"])
