"""Whisper / distil-whisper through transformers (WHISPER_BACKEND=transformers), loaded from MODEL_DIR.

Runs `WhisperForConditionalGeneration` on the worker's PyAV-decoded 16 kHz mono audio (no ffmpeg
binary): audio up to 30 s is one padded window; longer audio goes through transformers' sequential
long-form decoding (unpadded features + attention mask). Output is faster-whisper's shape
(shared.models.whisper): text, segments (start, end, text), language, duration.

Generation length: some checkpoints ship a generation config whose `max_length` is far below the
decoder's `max_target_positions` (openai/whisper-large-v3-turbo's, seed 000 notes), which silently cuts
every window's transcript. `max_new_tokens_for` detects that and sets `max_new_tokens` to what the
decoder can hold after the prompt; WHISPER_MAX_NEW_TOKENS overrides (capped at that). There is no VAD
here (`vad` is accepted and ignored) and no word timestamps (refused).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import InvalidInput
from shared.models import registry
from shared.models._loading import identity, load_transformers, precision_name

SAMPLE_RATE = 16000
WINDOW_FRAMES = 3000  # 30 s of log-mel frames
PROMPT_TOKENS = 4  # <|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|>, at most


def max_new_tokens_for(
    max_target_positions: int, generation_max_length: int | None, override: int
) -> int | None:
    """Tokens per window to ask for: None keeps the checkpoint's own limit (it does not truncate);
    otherwise what the decoder holds after the prompt, or `override` (>0) capped at that."""
    room = max_target_positions - PROMPT_TOKENS
    if override > 0:
        return min(override, room)
    if generation_max_length is not None and generation_max_length < max_target_positions:
        return room
    return None


class TransformersWhisperBackend:
    """A loaded transformers Whisper. Attributes: name, model_label, random, device, precision,
    english_only, max_new_tokens (None: the checkpoint's generation config decides)."""

    kind = "transformers"

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        folder: Path,
        name: str | None,
        device: str,
        dtype: Any,
        override: int,
    ) -> None:
        self._model = model
        self._processor = processor
        self._dtype = dtype
        self.name, self.random, self.model_label = identity(folder, name)
        self.device = device
        self.precision = precision_name(dtype)
        gen = model.generation_config
        self.english_only = not bool(getattr(gen, "is_multilingual", False))
        self.max_new_tokens = max_new_tokens_for(
            int(model.config.max_target_positions), getattr(gen, "max_length", None), override
        )

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        name: str | None = None,
        max_new_tokens: int = 0,
    ) -> TransformersWhisperBackend:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        folder = Path(folder)
        model, processor, dtype = load_transformers(
            WhisperForConditionalGeneration, WhisperProcessor, folder, device=device, precision=precision
        )
        return cls(
            model, processor, folder=folder, name=name, device=device, dtype=dtype, override=max_new_tokens
        )

    @classmethod
    def from_model_dir(cls, model_dir: Path, name: str = "distil-whisper-large-v3", **kw: Any):
        return cls.load(registry.require_model(model_dir, name), name=name, **kw)

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        language: str | None = None,
        vad: bool = True,
        word_timestamps: bool = False,
        beam_size: int = 5,
        max_new_tokens: int | None = None,
    ) -> dict[str, Any]:
        """float32 mono 16 kHz samples -> {"text", "segments": [{"start", "end", "text"}], "language",
        "duration"}, as WhisperBackend.transcribe. `max_new_tokens` caps this call (the canary's)."""
        import torch

        if word_timestamps:
            raise InvalidInput("word timestamps need WHISPER_BACKEND=faster_whisper", field="word_timestamps")
        if self.english_only and language not in (None, "en"):
            raise InvalidInput(f"{self.name} is English-only; got another language", field="language")
        if beam_size < 1:
            raise InvalidInput("must be >= 1", field="beam_size")
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise InvalidInput(f"expected mono samples [n], got shape {list(audio.shape)}", field="audio")
        duration = round(len(audio) / SAMPLE_RATE, 3)
        if audio.size == 0:
            return {"text": "", "segments": [], "language": language or "en", "duration": 0.0}
        fe = self._processor.feature_extractor
        long_form = len(audio) > 30 * SAMPLE_RATE
        feats = fe(
            audio,
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            return_attention_mask=True,
            **({"truncation": False, "padding": "longest"} if long_form else {}),
        )
        features = feats["input_features"].to(self.device, self._dtype)
        # Long-form: transformers' sequential decoding returns its segments; one window: a single
        # generate whose timestamp tokens the tokenizer turns into offsets (one pass, not one per segment).
        kwargs: dict[str, Any] = {"return_timestamps": True, "num_beams": beam_size}
        if long_form:
            kwargs.update(return_segments=True, attention_mask=feats["attention_mask"].to(self.device))
        limit = max_new_tokens if max_new_tokens is not None else self.max_new_tokens
        if limit is not None:
            kwargs["max_new_tokens"] = limit
        if not self.english_only:
            kwargs["task"] = "transcribe"
            if language is not None:
                kwargs["language"] = language
            else:
                with torch.inference_mode():
                    lang_id = self._model.detect_language(features[..., :WINDOW_FRAMES])[0]
                language = self._processor.tokenizer.decode([int(lang_id)]).strip("<|>")
        with torch.inference_mode():
            out = self._model.generate(features, **kwargs)
        return self._result(out, duration, language or "en")

    def _result(self, out: Any, duration: float, language: str) -> dict[str, Any]:
        tok = self._processor.tokenizer
        if isinstance(out, dict):  # long-form
            pieces = [
                (float(seg["start"]), float(seg["end"]), tok.decode(seg["tokens"], skip_special_tokens=True))
                for seg in (out.get("segments") or [[]])[0]
            ]
            sequence = out["sequences"][0]
        else:
            sequence = out[0]
            offsets = tok.decode(sequence, output_offsets=True).get("offsets") or []
            pieces = [(float(o["timestamp"][0]), float(o["timestamp"][1]), o["text"]) for o in offsets]
        segments = []
        for start, end, text in pieces:
            start = _clamp(start, duration)
            end = max(start, _clamp(end, duration))
            if text.strip():
                segments.append({"start": round(start, 3), "end": round(end, 3), "text": text.strip()})
        if not segments:  # no timestamp tokens came out: one segment over the whole audio
            text = tok.decode(sequence, skip_special_tokens=True).strip()
            if text:
                segments.append({"start": 0.0, "end": duration, "text": text})
        return {
            "text": " ".join(s["text"] for s in segments),
            "segments": segments,
            "language": language,
            "duration": duration,
        }


def _clamp(t: float, duration: float) -> float:
    return min(max(t, 0.0), duration) if math.isfinite(t) else 0.0
