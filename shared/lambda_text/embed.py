"""Embed a validated batch and build the response (seed 003).

    {"batch_id": "b1", "model": "<label>", "dims": 384, "vectors": [{"chunk_id": "c1", "vector": [...]}]}

Vectors are float32 values, L2-normalised, in request order. A full batch (256 chunks x 384 dims)
serialises to about 2 MB of JSON, well under Lambda's 6 MB response limit.

`dims` < the model's width keeps the first `dims` values of each vector and renormalises them.
MiniLM is not Matryoshka-trained, so that prefix is a lower-quality embedding than the full
384 dims (retrieval gets worse as `dims` shrinks); it is offered for storage-bound callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from shared.errors import InvalidInput, ModelUnhealthy, PayloadTooLarge
from shared.lambda_text.request import EmbedRequest
from shared.models.minilm_onnx import truncate_dims
from shared.settings import TextSettings


class TextModel(Protocol):
    """What the handler needs from a text model (shared.models.minilm_onnx.MiniLMOnnx is the real one)."""

    name: str
    dims: int
    max_tokens: int
    model_label: str
    precision: str  # which graph answers: int8 | fp32

    def token_counts(self, texts: Sequence[str]) -> list[int]: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    def warmup(self) -> None: ...

    def health(self) -> None:
        """Deep check: embed a probe text and check the vector; raises ModelUnhealthy."""
        ...


def check_token_limit(model: TextModel, request: EmbedRequest, counts: Sequence[int]) -> None:
    """With truncation off, refuse (400) a text longer than the model reads, naming it and its token count."""
    over = [(i, n) for i, n in enumerate(counts) if n > model.max_tokens]
    if over:
        i, n = over[0]
        more = f"; {len(over) - 1} more chunk(s) are over the limit too" if len(over) > 1 else ""
        raise InvalidInput(
            f"is {n} tokens; the model reads at most {model.max_tokens} "
            f'(send "truncate": true to embed the first {model.max_tokens}){more}',
            field=f"chunks[{i}].content",
        )


def embed_batch(model: TextModel, request: EmbedRequest, settings: TextSettings) -> dict:
    """Embed `request` with `model` and return the response body.

    Raises InvalidInput when truncation is off and a text is too long, PayloadTooLarge when the
    request is over `settings.max_request_tokens` after the cut (nothing is embedded then), and
    ModelUnhealthy if the model returns the wrong shape or non-finite values.
    """
    truncate = settings.truncate if request.truncate is None else request.truncate
    counts = model.token_counts([c.content for c in request.chunks])
    if not truncate:
        check_token_limit(model, request, counts)
    total = sum(min(n, model.max_tokens) for n in counts)
    if total > settings.max_request_tokens:
        raise PayloadTooLarge(
            f"hold {total} tokens after the {model.max_tokens}-token cut; at most "
            f"{settings.max_request_tokens} per request (split the batch)",
            field="chunks",
        )
    vectors = np.asarray(model.embed([c.content for c in request.chunks]), dtype=np.float32)
    if vectors.shape != (len(request.chunks), model.dims) or not np.isfinite(vectors).all():
        raise ModelUnhealthy(
            f"{model.name} returned shape {vectors.shape} (finite: {bool(np.isfinite(vectors).all())}); "
            f"expected ({len(request.chunks)}, {model.dims})"
        )
    if request.dims is not None and request.dims != model.dims:
        vectors = truncate_dims(vectors, request.dims)
    return {
        "batch_id": request.batch_id,
        "model": model.model_label,
        "dims": int(vectors.shape[1]),
        "vectors": [
            {"chunk_id": c.chunk_id, "vector": row}
            for c, row in zip(request.chunks, vectors.tolist(), strict=True)
        ],
    }
