"""One module per task: `run(worker, request) -> output dict` and `batch_role(request,
settings) -> str | None` (the name of the one micro-batcher the job may submit to: batching.TEXT_BATCH,
batching.image_batch(tta), or None). `JOBS` is keyed by the parser's task names."""

from __future__ import annotations

from types import MappingProxyType, ModuleType

from shared.worker.jobs import clip_image, clip_text, embed_item, embed_video, qwen3vl_text, transcribe
from shared.worker.requests import TASKS

JOBS: MappingProxyType[str, ModuleType] = MappingProxyType(
    {
        "embed_item": embed_item,
        "transcribe": transcribe,
        "clip_text": clip_text,
        "clip_image": clip_image,
        "embed_video": embed_video,
        "qwen3vl_text": qwen3vl_text,
    }
)
if set(JOBS) != set(TASKS):
    raise RuntimeError(f"tasks {TASKS} and job modules {tuple(JOBS)} differ")
