"""clip_text: CLIP text vectors through the micro-batcher.

Output: `{"model", "model_name", "dims", "random", "vectors", "batch": {"pass", "size"}}`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.models.backend import check_unit_rows
from shared.worker.batching import TEXT_BATCH, BatchInfo
from shared.worker.requests import ClipTextRequest


def batch_role(request: ClipTextRequest, settings: Any) -> str | None:
    return TEXT_BATCH


def vectors_output(clip: Any, rows: np.ndarray, info: BatchInfo, what: str) -> dict[str, Any]:
    rows = check_unit_rows(rows, what)
    return {
        "model": clip.model_label,
        "model_name": clip.name,
        "dims": int(rows.shape[1]),
        "random": bool(clip.random),
        "vectors": rows.tolist(),
        "batch": {"pass": info.pass_id, "size": info.size},
    }


async def run(worker: Any, req: ClipTextRequest) -> dict[str, Any]:
    rows, info = await worker.text_batcher.submit(req.texts)
    return vectors_output(worker.models.clip, rows, info, "clip_text")
