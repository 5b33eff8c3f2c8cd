"""transcript: faster-whisper over up to TRANSCRIPT_MAX_SECONDS of the item's audio.

The spec's transcript is faster-whisper tiny.en: a worker with WHISPER_BACKEND=transformers refuses to
serve this channel (its artifacts would not be the spec's), but embed_video's transcript reuses
`document` with whatever backend the worker runs.

Artifact: JSON `{"text", "segments": [{"start", "end", "text"}], "language", "duration"}` (the
transcribe task returns the same document, see `transcript_doc`). Metadata: model identity,
`language`, `duration`, `segments`, `chars`, `truncated`.
"""

from __future__ import annotations

import json
from typing import Any

from shared.errors import ConfigError
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

    def model_name(self, settings) -> str:
        return settings.transcript_model

    def check_settings(self, settings) -> None:
        if settings.whisper_backend != "faster_whisper":
            raise ConfigError(
                f"WHISPER_BACKEND={settings.whisper_backend}: the spec's transcript channel is "
                f"faster-whisper {self.spec.model}; leave transcript out of WORKER_CHANNELS, e.g. "
                "WORKER_CHANNELS=video_clip,video_mae,audio_wav2vec2,image_clip"
            )

    def options(self) -> dict[str, Any]:
        """The spec's decoding options (vad, word_timestamps, beam_size)."""
        pp = self.spec.preprocessing
        return {
            "vad": bool(pp["vad"]),
            "word_timestamps": bool(pp["word_timestamps"]),
            "beam_size": int(pp["beam_size"]),
        }

    async def document(self, ctx: WorkerContext, decoded: Decoded) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the transcript document, its metadata) of the decoded audio."""
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
        return doc, meta

    async def compute(self, ctx: WorkerContext, decoded: Decoded) -> Artifact:
        doc, meta = await self.document(ctx, decoded)
        data = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        return Artifact(data, "application/json", meta)


RUNNER = Transcript()
