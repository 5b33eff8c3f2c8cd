"""wav2vec2 audio embeddings (seed 004 section 3.2), loaded from MODEL_DIR.

Mean of `last_hidden_state` over time, over at most the first 90 s of 16 kHz mono audio, L2-normalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.errors import InvalidInput
from shared.models import registry
from shared.models._loading import identity, load_transformers, precision_name
from shared.models.backend import l2_normalize

SAMPLE_RATE = 16000
MIN_SAMPLES = 400  # one conv receptive field (25 ms); shorter input has no output frame


class Wav2Vec2Backend:
    """A loaded Wav2Vec2Model + Wav2Vec2FeatureExtractor. Attributes: name, dims, max_seconds, random,
    model_label, device, precision, uses_attention_mask."""

    name: str
    dims: int
    max_seconds: float
    random: bool
    model_label: str
    device: str
    precision: str
    uses_attention_mask: bool

    def __init__(
        self,
        model: Any,
        extractor: Any,
        *,
        folder: Path,
        name: str | None,
        device: str,
        dtype: torch.dtype,
        max_seconds: float,
    ) -> None:
        self._model = model
        self._extractor = extractor
        self._dtype = dtype
        self.name, self.random, self.model_label = identity(folder, name)
        self.device = device
        self.precision = precision_name(dtype)
        self.dims = int(model.config.hidden_size)
        self.max_seconds = max_seconds
        self.uses_attention_mask = bool(getattr(extractor, "return_attention_mask", False))

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        max_seconds: float = 90.0,
        name: str | None = None,
    ) -> Wav2Vec2Backend:
        """Load config.json + model.safetensors + preprocessor_config.json. fp16/bf16 only on CUDA."""
        from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

        folder = Path(folder)
        model, extractor, dtype = load_transformers(
            Wav2Vec2Model, Wav2Vec2FeatureExtractor, folder, device=device, precision=precision
        )
        if extractor.sampling_rate != SAMPLE_RATE:
            raise InvalidInput(f"{folder}: expected a {SAMPLE_RATE} Hz feature extractor", field="model")
        return cls(
            model, extractor, folder=folder, name=name, device=device, dtype=dtype, max_seconds=max_seconds
        )

    @classmethod
    def from_model_dir(cls, model_dir: Path, name: str = "wav2vec2-base", **kw: Any) -> Wav2Vec2Backend:
        """`require_model(model_dir, name)` (ModelNotFound naming dir + bake command), then `load`."""
        return cls.load(registry.require_model(model_dir, name), name=name, **kw)

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """float32 mono 16 kHz samples [n] -> float32 [dims], unit norm. InvalidInput when shorter
        than 25 ms or not 1-D."""
        return self.embed_batch([audio])[0]

    def embed_batch(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Several clips -> float32 [n, dims], each equal to `embed(clip)` within float tolerance.

        Models whose feature extractor returns an attention mask are padded and masked (pooling only
        over real frames); group-norm models such as wav2vec2-base must not see padding (it changes
        their normalisation), so their clips are batched only with clips of the same length.
        """
        prepared = [self._prepare(clip, i) for i, clip in enumerate(clips)]
        out = np.zeros((len(prepared), self.dims), dtype=np.float32)
        if self.uses_attention_mask:
            groups = [list(range(len(prepared)))] if prepared else []
        else:
            by_len: dict[int, list[int]] = {}
            for i, clip in enumerate(prepared):
                by_len.setdefault(len(clip), []).append(i)
            groups = list(by_len.values())
        for group in groups:
            out[group] = self._forward([prepared[i] for i in group])
        return l2_normalize(out)

    def _prepare(self, audio: np.ndarray, index: int) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise InvalidInput(
                f"clip {index}: expected mono samples [n], got shape {list(audio.shape)}", field="audio"
            )
        if audio.size < MIN_SAMPLES:
            raise InvalidInput(
                f"clip {index}: {audio.size} samples; need at least {MIN_SAMPLES} (25 ms)", field="audio"
            )
        if not np.isfinite(audio).all():
            raise InvalidInput(f"clip {index}: samples contain NaN/inf", field="audio")
        return audio[: int(self.max_seconds * SAMPLE_RATE)]

    def _forward(self, clips: list[np.ndarray]) -> np.ndarray:
        inputs = self._extractor(
            clips,
            sampling_rate=SAMPLE_RATE,
            padding=True,
            return_tensors="pt",
            return_attention_mask=self.uses_attention_mask,
        )
        values = inputs["input_values"].to(self.device, self._dtype)
        mask = inputs.get("attention_mask")
        with torch.inference_mode():
            if mask is None:
                hidden = self._model(values).last_hidden_state.float()
                return hidden.mean(dim=1).cpu().numpy()
            mask = mask.to(self.device)
            hidden = self._model(values, attention_mask=mask).last_hidden_state.float()
            frames = self._model._get_feature_vector_attention_mask(hidden.shape[1], mask).unsqueeze(-1)
            pooled = (hidden * frames).sum(dim=1) / frames.sum(dim=1).clamp(min=1)
            return pooled.cpu().numpy()
