"""Deterministic stand-ins for the worker's model backends (unit tests only; real models are
covered in tests/integration/worker and tests/integration/gpu_models)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.dev.fakes import FakeBackend
from shared.media.image import tile_count


class _Base:
    def __init__(self, name: str, dims: int) -> None:
        self.name = name
        self.dims = dims
        self.random = True
        self.model_label = f"{name}:fake"
        self.calls: list[tuple[str, int]] = []
        self.fail: BaseException | None = None
        self.nan = False
        self._fake = FakeBackend(dims, name)
        self._lock = threading.Lock()

    def _rows(self, what: str, keys: Sequence[Any]) -> np.ndarray:
        with self._lock:
            self.calls.append((what, len(keys)))
        if self.fail is not None:
            raise self.fail
        out = self._fake.embed([f"{what}:{k}" for k in keys])
        if self.nan:
            out[:] = np.nan
        return out


def image_key(img: Any) -> str:
    arr = np.asarray(img)
    return f"{arr.shape}:{int(arr.astype(np.int64).sum())}"


@dataclass(frozen=True)
class FakePrepared:
    key: str
    tta: bool
    tiles: int

    @property
    def views(self) -> range:
        return range(self.tiles * (5 if self.tta else 1))


class FakeClip(_Base):
    def __init__(self, name: str = "clip-vit-b-32", dims: int = 512) -> None:
        super().__init__(name, dims)
        self.views_encoded = 0

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._rows("text", list(texts))

    def decode_side(
        self, width: int, height: int, *, panorama_max_ratio: float | None = 2.6, panorama_max_tiles=None
    ) -> int:
        return 512

    def prepare(
        self,
        image: Any,
        *,
        tta: bool = False,
        panorama_max_ratio: float | None = 2.6,
        panorama_max_tiles: int | None = None,
    ) -> FakePrepared:
        tiles = tile_count(*image.size, panorama_max_ratio, panorama_max_tiles)
        return FakePrepared(image_key(image), tta, tiles)

    def embed_prepared(self, prepared: Sequence[FakePrepared]) -> np.ndarray:
        self.views_encoded += sum(len(p.views) for p in prepared)
        tta = {p.tta for p in prepared}
        return self._rows(
            f"image-tta{int(tta.pop())}" if len(tta) == 1 else "image-mixed", [p.key for p in prepared]
        )

    def embed_images(
        self,
        images: Sequence[Any],
        *,
        tta: bool = False,
        panorama_max_ratio: float | None = 2.6,
        panorama_max_tiles: int | None = None,
    ):
        return self.embed_prepared(
            [
                self.prepare(
                    i, tta=tta, panorama_max_ratio=panorama_max_ratio, panorama_max_tiles=panorama_max_tiles
                )
                for i in images
            ]
        )

    def embed_frames(self, frames: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        return self._rows("frame", [image_key(f) for f in frames])


class FakeVideoMAE(_Base):
    def __init__(self, name: str = "videomae-base", dims: int = 768) -> None:
        super().__init__(name, dims)
        self.num_frames = 16
        self.seen: list[tuple[int, ...]] = []

    def embed(self, frames: np.ndarray) -> np.ndarray:
        self.seen.append(tuple(np.asarray(frames).shape))
        return self._rows("clip", [image_key(frames)])[0]


class FakeWav2Vec2(_Base):
    def __init__(self, name: str = "wav2vec2-base", dims: int = 768) -> None:
        super().__init__(name, dims)
        self.seen: list[int] = []

    def embed(self, audio: np.ndarray) -> np.ndarray:
        self.seen.append(len(audio))
        return self._rows("audio", [f"{len(audio)}:{float(np.abs(audio).sum()):.3f}"])[0]


class FakeWhisper:
    def __init__(self, name: str = "whisper-tiny.en") -> None:
        self.name = name
        self.random = False
        self.model_label = f"{name}:fake"
        self.calls: list[dict[str, Any]] = []
        self.result: dict[str, Any] | None = None
        self.fail: BaseException | None = None
        self.delay = 0.0  # seconds each call takes, on the model's thread

    def transcribe(self, audio: np.ndarray, **kw: Any) -> dict[str, Any]:
        self.calls.append({"samples": len(audio), **kw})
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        if self.result is not None:
            return self.result
        duration = len(audio) / 16000
        return {
            "text": "hello world",
            "segments": [{"start": 0.0, "end": min(1.0, duration), "text": "hello world"}],
            "language": "en",
            "duration": duration,
        }
