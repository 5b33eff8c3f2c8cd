"""transcribe: seed 000's transcript of one audio/video URL.

Output: `{"text", "segments": [{"start", "end", "text", "words"?}], "language", "duration", "model"}`;
decoding options default to the transcript channel's spec entry.
"""

from __future__ import annotations

import asyncio
from typing import Any

from shared.errors import EmbeddingError, InvalidInput
from shared.worker.channels import RUNNERS
from shared.worker.channels.base import SAMPLE_RATE
from shared.worker.channels.transcript import transcript_doc
from shared.worker.faults import rescrubbed
from shared.worker.requests import TranscribeRequest


def batch_role(request: TranscribeRequest, settings: Any) -> str | None:
    return None


async def run(worker: Any, req: TranscribeRequest) -> dict[str, Any]:
    from shared.media import decode_audio, temp_workdir

    whisper = worker.models.whisper
    if req.language is not None and whisper.name.endswith(".en") and req.language != "en":
        raise InvalidInput(f"{whisper.name} only transcribes English", field="input.language")
    async with worker.media_slot():
        with temp_workdir("transcribe-") as workdir:
            try:
                path = await asyncio.to_thread(
                    worker.download, req.source_url, workdir, worker.settings.max_download_bytes
                )
                audio = await asyncio.to_thread(
                    decode_audio,
                    path,
                    sample_rate=SAMPLE_RATE,
                    max_seconds=worker.settings.transcript_max_seconds,
                )
            except EmbeddingError as e:
                raise rescrubbed(e, str(workdir), field="input.source_url") from None
    options = RUNNERS["transcript"].options()
    if req.vad is not None:
        options["vad"] = req.vad
    if req.beam_size is not None:
        options["beam_size"] = req.beam_size
    options["word_timestamps"] = req.word_timestamps
    result = await worker.run_model("whisper", whisper.transcribe, audio, language=req.language, **options)
    return {**transcript_doc(result, words=req.word_timestamps), "model": whisper.model_label}
