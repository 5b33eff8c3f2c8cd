"""The Lambda text channels of seed 004, section 3.3, over any text Backend (MiniLMOnnx in production).

- text_meta: the item's [title, description, query] joined by " [SEP] " (the tokenizer reads "[SEP]" as
  its separator token), missing or blank fields skipped; an item with none embeds "" (a valid vector);
- text_transcript: the transcript text (a string, or the transcript JSON: "text", else seed 004's
  "transcript", else its segments' texts joined), cut at the model's 256-token window like
  sentence-transformers does;
- text_fused: L2-normalised concatenation [text_meta || text_transcript] (768-d).

No torch here: the Lambda imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from shared.errors import InvalidInput
from shared.models.backend import Backend, l2_normalize

META_FIELDS = ("title", "description", "query")
META_SEPARATOR = " [SEP] "


def _text_field(value: Any, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"expected a string, got {type(value).__name__}", field=field)
    return value.strip()


def meta_text(meta: Mapping[str, Any]) -> str:
    """`title [SEP] description [SEP] query`, skipping missing/blank fields; "" when all are blank.

    Raises InvalidInput when `meta` is not a mapping or a field is not a string (None counts as missing)."""
    if not isinstance(meta, Mapping):
        raise InvalidInput(f"expected an object, got {type(meta).__name__}", field="meta")
    parts = [_text_field(meta.get(name), f"meta.{name}") for name in META_FIELDS]
    return META_SEPARATOR.join(p for p in parts if p)


def transcript_text(transcript: str | Mapping[str, Any]) -> str:
    """The text of a transcript: the string itself, or a transcript JSON's "text" / "transcript" /
    joined "segments" texts (the first present wins). Raises InvalidInput for any other shape."""
    if isinstance(transcript, str):
        return transcript.strip()
    if not isinstance(transcript, Mapping):
        kind = type(transcript).__name__
        raise InvalidInput(f"expected a string or an object, got {kind}", field="transcript")
    for key in ("text", "transcript"):
        if transcript.get(key) is not None:
            return _text_field(transcript[key], f"transcript.{key}")
    segments = transcript.get("segments")
    if isinstance(segments, list):
        texts = []
        for i, seg in enumerate(segments):
            if not isinstance(seg, Mapping):
                raise InvalidInput("expected an object", field=f"transcript.segments[{i}]")
            texts.append(_text_field(seg.get("text"), f"transcript.segments[{i}].text"))
        return " ".join(t for t in texts if t)
    raise InvalidInput('has none of "text", "transcript", "segments"', field="transcript")


def _one(model: Backend, text: str) -> np.ndarray:
    return np.asarray(model.embed([text]), dtype=np.float32)[0]


def embed_text_meta(model: Backend, meta: Mapping[str, Any]) -> np.ndarray:
    """The text_meta vector: float32 [model.dims], unit norm."""
    return _one(model, meta_text(meta))


def embed_text_transcript(model: Backend, transcript: str | Mapping[str, Any]) -> np.ndarray:
    """The text_transcript vector: float32 [model.dims], unit norm."""
    return _one(model, transcript_text(transcript))


def fuse(meta_vec: np.ndarray, transcript_vec: np.ndarray) -> np.ndarray:
    """The text_fused vector: L2-normalised [meta || transcript], float32 [2 * dims].

    Raises InvalidInput when the two are not finite 1-D vectors of the same width."""
    a = np.asarray(meta_vec, dtype=np.float32)
    b = np.asarray(transcript_vec, dtype=np.float32)
    if a.ndim != 1 or b.shape != a.shape or a.size == 0:
        raise InvalidInput(f"need two 1-D vectors of one width, got {a.shape} and {b.shape}", field="vectors")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InvalidInput("vectors contain NaN or inf", field="vectors")
    return l2_normalize(np.concatenate([a, b]))


def text_channels(
    model: Backend, meta: Mapping[str, Any], transcript: str | Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """All three text channels with one embed call: {"text_meta", "text_transcript", "text_fused"}."""
    vectors = np.asarray(model.embed([meta_text(meta), transcript_text(transcript)]), dtype=np.float32)
    meta_vec, transcript_vec = vectors[0], vectors[1]
    return {
        "text_meta": meta_vec,
        "text_transcript": transcript_vec,
        "text_fused": fuse(meta_vec, transcript_vec),
    }
