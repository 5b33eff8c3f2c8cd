"""VideoMAE clip embeddings (seed 004 section 3.1), loaded from MODEL_DIR.

Output: `last_hidden_state[:, 0]` L2-normalised, as the seed specifies. VideoMAE has no CLS token, so
index 0 is the token of the first (top-left, first-tubelet) patch; we keep the seed's definition (the
channel's fingerprint records pooling="cls") rather than silently switching to mean pooling, which
would be a new channel version.
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


class VideoMAEBackend:
    """A loaded VideoMAEModel + VideoMAEImageProcessor. Attributes: name, dims (hidden size),
    num_frames, image_size, random, model_label, device, precision."""

    name: str
    dims: int
    num_frames: int
    image_size: int
    random: bool
    model_label: str
    device: str
    precision: str

    def __init__(
        self, model: Any, processor: Any, *, folder: Path, name: str | None, device: str, dtype: torch.dtype
    ) -> None:
        self._model = model
        self._processor = processor
        self._dtype = dtype
        self.name, self.random, self.model_label = identity(folder, name)
        self.device = device
        self.precision = precision_name(dtype)
        self.dims = int(model.config.hidden_size)
        self.num_frames = int(model.config.num_frames)
        self.image_size = int(model.config.image_size)

    @classmethod
    def load(
        cls, folder: Path, *, device: str = "cpu", precision: str = "fp32", name: str | None = None
    ) -> VideoMAEBackend:
        """Load config.json + model.safetensors + preprocessor_config.json. fp16/bf16 only on CUDA."""
        from transformers import VideoMAEImageProcessor, VideoMAEModel

        folder = Path(folder)
        model, processor, dtype = load_transformers(
            VideoMAEModel, VideoMAEImageProcessor, folder, device=device, precision=precision
        )
        return cls(model, processor, folder=folder, name=name, device=device, dtype=dtype)

    @classmethod
    def from_model_dir(cls, model_dir: Path, name: str = "videomae-base", **kw: Any) -> VideoMAEBackend:
        """`require_model(model_dir, name)` (ModelNotFound naming dir + bake command), then `load`."""
        return cls.load(registry.require_model(model_dir, name), name=name, **kw)

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """One clip uint8 [T, H, W, 3] RGB -> float32 [dims], unit norm.

        Fewer than num_frames frames are padded by repeating the last; more raise InvalidInput (the
        caller samples num_frames uniformly, see shared.media).
        """
        return self.embed_batch([frames])[0]

    def embed_batch(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Several clips -> float32 [n, dims], one batched forward pass (same result as `embed`)."""
        if len(clips) == 0:
            return np.zeros((0, self.dims), dtype=np.float32)
        videos = [list(self._padded(clip, i)) for i, clip in enumerate(clips)]
        pixels = self._processor(videos, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            hidden = self._model(pixel_values=pixels.to(self.device, self._dtype)).last_hidden_state
            return l2_normalize(hidden[:, 0].float().cpu().numpy())

    def _padded(self, clip: np.ndarray, index: int) -> np.ndarray:
        clip = np.asarray(clip)
        if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[-1] != 3 or clip.shape[0] == 0:
            raise InvalidInput(
                f"clip {index}: expected uint8 [T, H, W, 3] with T >= 1, got {clip.dtype} {list(clip.shape)}",
                field="frames",
            )
        t = clip.shape[0]
        if t > self.num_frames:
            raise InvalidInput(
                f"clip {index}: {t} frames; the model takes {self.num_frames} (sample them uniformly)",
                field="frames",
            )
        if t < self.num_frames:
            clip = np.concatenate([clip, np.repeat(clip[-1:], self.num_frames - t, axis=0)])
        return clip
