"""faster-whisper (CTranslate2) transcription, loaded from MODEL_DIR.

The folder is a CTranslate2 Whisper model (config.json, model.bin, tokenizer.json, vocabulary.txt),
as in the Systran/faster-whisper-* repos. Compute type follows the device unless given: int8 on CPU,
float16 on CUDA. Output shape follows seed 000: text, segments (start, end, text), language, duration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import InvalidInput
from shared.models import registry
from shared.models._loading import identity

SAMPLE_RATE = 16000


class WhisperBackend:
    """A loaded faster-whisper model. Attributes: name, model_label, random (False for every folder
    the dev setup or bake produce), device, compute_type, english_only."""

    name: str
    model_label: str
    random: bool
    device: str
    compute_type: str
    english_only: bool

    def __init__(self, model: Any, *, folder: Path, name: str | None, device: str, compute_type: str) -> None:
        self._model = model
        self.name, self.random, self.model_label = identity(folder, name)
        self.device = device
        self.compute_type = compute_type
        self.english_only = not model.model.is_multilingual

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        device: str = "cpu",
        compute_type: str | None = None,
        cpu_threads: int = 0,
        name: str | None = None,
    ) -> WhisperBackend:
        """Load a CTranslate2 Whisper folder. compute_type None -> int8 on CPU, float16 on CUDA.
        cpu_threads 0 lets CTranslate2 choose. device "cuda:1" selects a GPU index."""
        from faster_whisper import WhisperModel

        kind, _, index = device.partition(":")
        compute_type = compute_type or ("float16" if kind == "cuda" else "int8")
        model = WhisperModel(
            str(Path(folder)),
            device=kind,
            device_index=int(index or 0),
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            local_files_only=True,
        )
        return cls(model, folder=Path(folder), name=name, device=device, compute_type=compute_type)

    @classmethod
    def from_model_dir(cls, model_dir: Path, name: str = "whisper-tiny.en", **kw: Any) -> WhisperBackend:
        """`require_model(model_dir, name)` (ModelNotFound naming dir + bake command), then `load`."""
        return cls.load(registry.require_model(model_dir, name), name=name, **kw)

    def transcribe(
        self,
        audio: np.ndarray | str | Path,
        *,
        language: str | None = None,
        vad: bool = True,
        word_timestamps: bool = False,
        beam_size: int = 5,
    ) -> dict[str, Any]:
        """Transcribe float32 mono 16 kHz samples (or a file path).

        Returns {"text": str, "segments": [{"start": s, "end": s, "text": str, ("words": [{"start",
        "end", "word", "probability"}])}], "language": str, "duration": seconds of input audio}.
        English-only models always report "en"; asking them for another language is InvalidInput.
        Empty or all-silent audio gives text "" and no segments.
        """
        if self.english_only and language not in (None, "en"):
            raise InvalidInput(f"{self.name} is English-only; got language={language!r}", field="language")
        if beam_size < 1:
            raise InvalidInput(f"must be >= 1, got {beam_size}", field="beam_size")
        if isinstance(audio, np.ndarray):
            audio = np.asarray(audio, dtype=np.float32)
            if audio.ndim != 1:
                raise InvalidInput(f"expected mono samples [n], got shape {list(audio.shape)}", field="audio")
            if audio.size == 0:
                return {"text": "", "segments": [], "language": language or "en", "duration": 0.0}
        elif not isinstance(audio, (str, Path)):
            raise InvalidInput(
                f"expected float32 samples or a path, got {type(audio).__name__}", field="audio"
            )
        segments, info = self._model.transcribe(
            audio if isinstance(audio, np.ndarray) else str(audio),
            language="en" if self.english_only else language,
            vad_filter=vad,
            word_timestamps=word_timestamps,
            beam_size=beam_size,
        )
        out = []
        for seg in segments:  # a generator: decoding happens here
            item: dict[str, Any] = {
                "start": round(float(seg.start), 3),
                "end": round(float(seg.end), 3),
                "text": seg.text.strip(),
            }
            if word_timestamps:
                item["words"] = [
                    {
                        "start": round(float(w.start), 3),
                        "end": round(float(w.end), 3),
                        "word": w.word.strip(),
                        "probability": round(float(w.probability), 4),
                    }
                    for w in seg.words or ()
                ]
            out.append(item)
        return {
            "text": " ".join(s["text"] for s in out if s["text"]),
            "segments": out,
            "language": info.language,
            "duration": round(float(info.duration), 3),
        }
