"""qwen3vl_text: search queries into the video_qwen3vl space, through the same model.

Input: `{"task": "qwen3vl_text", "texts": [str, ...], "dims"?, "instruction"?}` (instruction default:
the model card's query instruction, see shared.models.registry). Output: `{"version", "model",
"model_name", "backend", "random", "dims", "vectors", "truncated": [bool, ...]}`; `version` is the
video_qwen3vl fingerprint ("deterministic" under EMBEDDING_BACKEND=deterministic). Texts and the
instruction are held to QWEN3VL_MAX_TEXT_TOKENS each; at most MAX_BATCH texts share a forward pass.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from shared.models.backend import check_unit_rows
from shared.models.qwen3vl import matryoshka
from shared.worker.channels import RUNNERS
from shared.worker.channels.video_qwen3vl import fit_text
from shared.worker.jobs.embed_video import DETERMINISTIC_VERSION
from shared.worker.requests import Qwen3VLTextRequest

log = logging.getLogger(__name__)


def batch_role(request: Qwen3VLTextRequest, settings: Any) -> str | None:
    return None


async def run(worker: Any, req: Qwen3VLTextRequest) -> dict[str, Any]:
    settings = worker.settings
    backend = worker.models.qwen3vl
    dims = req.dims or settings.embedding_dims
    fitted = [fit_text(backend, settings, t, f"input.texts[{i}]") for i, t in enumerate(req.texts)]
    texts = [t for t, _ in fitted]
    instruction = None
    if req.instruction is not None:
        instruction, _ = fit_text(backend, settings, req.instruction, "input.instruction")
    if backend.kind == "deterministic":
        rows = np.stack([backend.vector("text", instruction or "", t, dims=dims) for t in texts])
        version = DETERMINISTIC_VERSION
    else:
        step = settings.max_batch  # MAX_BATCH texts per forward pass
        parts = [
            await worker.run_model("qwen3vl", backend.embed_texts, texts[i : i + step], instruction)
            for i in range(0, len(texts), step)
        ]
        rows = matryoshka(np.concatenate(parts), dims)
        version = RUNNERS["video_qwen3vl"].spec.fingerprint
    rows = check_unit_rows(np.asarray(rows, dtype=np.float32), "qwen3vl_text")
    log.info("qwen3vl_text backend=%s texts=%d dims=%d", backend.kind, len(texts), dims)
    return {
        "version": version,
        "model": backend.model_label,
        "model_name": backend.name,
        "backend": backend.kind,
        "random": bool(backend.random),
        "dims": int(rows.shape[1]),
        "vectors": rows.tolist(),
        "truncated": [cut for _, cut in fitted],
    }
