"""transcript: faster-whisper over up to TRANSCRIPT_MAX_SECONDS of the item's audio.

Artifact: JSON `{"text", "segments": [{"start", "end", "text"}], "language", "duration"}` (the
transcribe task returns the same document, see `transcript_doc`). Metadata: model identity,
`language`, `duration`, `segments`, `chars`, `truncated`.
"""

from __future__ import annotations

import json
from typing import Any

from shared.worker.channels.base import SAMPLE_RATE, Artifact, ChannelRunner, Decoded, WorkerContext


def transcript_doc(result: dict[str, Any], *, words: bool = False) -> dict[str, Any]:
    """Seed 000's transcript shape from a WhisperBackend.transcribe result."""
    segments = []
    for seg in result.get("segments", []):
        item = {"start": float(seg["start"]), "end": float(seg["end"]), "text": str(seg["text"])}
        if words and "words" in seg:
            item["words"] = seg["words"]
        segments.append(item)
    return {
        "text": str(result.get("text", "")),
        "segments": segments,
        "language": str(result.get("language", "")),
        "duration": float(result.get("duration", 0.0)),
    }


class Transcript(ChannelRunner):
    name = "transcript"
    needs = "audio"
    role = "whisper"

    def audio_seconds(self, settings) -> float:
        return settings.transcript_max_seconds

    def options(self) -> dict[str, Any]:
        """The spec's decoding options (vad, word_timestamps, beam_size)."""
        pp = self.spec.preprocessing
        return {
            "vad": bool(pp["vad"]),
            "word_timestamps": bool(pp["word_timestamps"]),
            "beam_size": int(pp["beam_size"]),
        }

    async def compute(self, ctx: WorkerContext, decoded: Decoded) -> Artifact:
        whisper = ctx.models.whisper
        seconds = self.audio_seconds(ctx.settings)
        audio = decoded.audio[: int(seconds * SAMPLE_RATE)]
        doc = transcript_doc(await ctx.run_model("whisper", whisper.transcribe, audio, **self.options()))
        meta = {
            "model": whisper.model_label,
            "model_name": whisper.name,
            "random": bool(whisper.random),
            "language": doc["language"],
            "duration": doc["duration"],
            "segments": len(doc["segments"]),
            "chars": len(doc["text"]),
            "truncated": (decoded.duration or 0.0) > seconds,
        }
        data = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        return Artifact(data, "application/json", meta)


RUNNER = Transcript()
