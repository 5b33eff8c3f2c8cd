"""OpenCLIP image/text embeddings (ViT-B-32 by default, EVA02-L-14-336 selectable), loaded from MODEL_DIR.

The folder holds `open_clip_config.json` + `open_clip_model.safetensors` (what the hub repos ship) and
is loaded with open_clip's own `local-dir:` schema, so baked real weights and the tiny random dev
models go through the same code. Preprocessing (size, mean/std, interpolation, resize mode) comes
from the config's `preprocess_cfg`, i.e. it is bound to the weights (seed 001).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from shared.errors import InvalidInput
from shared.media.image import tile_count
from shared.models import registry
from shared.models._loading import identity, precision_name, torch_dtype
from shared.models.backend import l2_normalize

TTA_RESIZE = 8 / 7  # 5-crop TTA: short side resized to image_size * 8/7 (256 for 224, 384 for 336)
# decode_side: a tile's short side is decoded at >= this many times the model's resize target, so the
# model's own (antialiased bicubic) resize still does the final downscale from a sharper bitmap
DECODE_MARGIN = 2
# Text before images on a CPU: an image pass runs in chunks of this many views and, before each chunk
# and each block of the vision tower, waits (at most TEXT_YIELD_S) while a text pass runs, so a query
# shares the cores with one block of one view at most (ViT-B-32: ~1/12 of a ~75 ms view on 2 cores),
# not with a whole image job (_TextFirst). On CUDA the chunk is the batch size and nothing waits
# (kernels interleave).
CPU_IMAGE_CHUNK = 1
TEXT_YIELD_S = 0.25


@dataclass(frozen=True)
class PreparedImage:
    """One image turned into model input on the CPU: views float32 [k, 3, S, S] (k = tiles, x5 with
    TTA), ready for one or more batched forward passes. The decoded image can be dropped after this."""

    views: torch.Tensor
    tiles: int


class ClipBackend:
    """A loaded OpenCLIP model. Every output row is float32 and L2-normalised.

    Attributes: name (registry name), dims, random (dev-only random weights), model_label
    (repo@revision, or "<name>:random-weights"), image_size, device, precision, trims_text (text
    passes stop at the batch's longest end-of-text token, see _TrimmedText).
    """

    name: str
    dims: int
    random: bool
    model_label: str
    image_size: int
    device: str
    precision: str
    trims_text: bool
    views_encoded: int  # image views through the image tower since load (work done, for bounds checks)

    def __init__(
        self,
        model: Any,
        preprocess: Any,
        tokenizer: Any,
        *,
        folder: Path,
        name: str | None,
        device: str,
        dtype: torch.dtype,
        dims: int,
        batch_size: int,
    ) -> None:
        self._model = model
        self._preprocess = preprocess
        self._tokenizer = tokenizer
        trimmed = _TrimmedText.probe(model)
        self.trims_text = trimmed is not None
        self._encode_text = trimmed.encode if trimmed is not None else model.encode_text
        self._dtype = dtype
        self._batch_size = batch_size
        self.name, self.random, self.model_label = identity(folder, name)
        self.device = device
        self.precision = precision_name(dtype)
        self.dims = dims
        self.views_encoded = 0
        self._image_chunk = batch_size if device.startswith("cuda") else min(batch_size, CPU_IMAGE_CHUNK)
        self._text_first = _TextFirst(model.visual if not device.startswith("cuda") else None)
        cfg = model.visual.preprocess_cfg
        size = cfg["size"]
        self.image_size = int(size if isinstance(size, int) else size[0])
        self._to_tensor = T.Compose([T.ToTensor(), T.Normalize(mean=cfg["mean"], std=cfg["std"])])
        interp = (
            T.InterpolationMode.BICUBIC
            if cfg.get("interpolation", "bicubic") == "bicubic"
            else (T.InterpolationMode.BILINEAR)
        )
        self._tta = T.Compose(
            [T.Resize(round(self.image_size * TTA_RESIZE), interpolation=interp), T.FiveCrop(self.image_size)]
        )

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        name: str | None = None,
        batch_size: int = 64,
    ) -> ClipBackend:
        """Load from a model folder. precision: fp32 | fp16 | bf16 (CUDA only; CPU always runs fp32).

        batch_size caps how many crops go through one forward pass.
        """
        import open_clip

        folder = Path(folder).resolve()
        dtype = torch_dtype(precision, device)
        model, _, preprocess = open_clip.create_model_and_transforms(
            f"local-dir:{folder}", device=device, precision=precision_name(dtype), weights_only=True
        )
        model.eval()
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        dims = int(json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]["embed_dim"])
        return cls(
            model,
            preprocess,
            tokenizer,
            folder=folder,
            name=name,
            device=device,
            dtype=dtype,
            dims=dims,
            batch_size=batch_size,
        )

    @classmethod
    def from_model_dir(cls, model_dir: Path, name: str = "clip-vit-b-32", **kw: Any) -> ClipBackend:
        """`require_model(model_dir, name)` (ModelNotFound naming dir + bake command), then `load`."""
        return cls.load(registry.require_model(model_dir, name), name=name, **kw)

    # -- images -------------------------------------------------------------------------------

    def embed(self, batch: Sequence[Image.Image]) -> np.ndarray:
        """Backend protocol: `embed_images(batch)` with the defaults (no TTA, panorama tiling on)."""
        return self.embed_images(batch)

    def embed_images(
        self,
        images: Sequence[Image.Image],
        *,
        tta: bool = False,
        panorama_max_ratio: float | None = 2.6,
        panorama_max_tiles: int | None = None,
    ) -> np.ndarray:
        """Embed PIL images -> float32 [n, dims], unit rows: `embed_prepared` of `prepare` of each.

        tta: 5-crop test-time augmentation (4 corners + centre at the model's input size, from the
        image resized so its short side is image_size * 8/7), the 5 embeddings averaged and
        renormalised. panorama_max_ratio: an image whose long/short side ratio exceeds it is cut into
        `tile_count` square-ish tiles along the long side, each embedded (with TTA if on), averaged and
        renormalised; None disables tiling. panorama_max_tiles: at most this many tiles (None: no
        cap); an image that would need more is cut into that many tiles, each squeezed to a square
        along the long side, so the views per image stay bounded (tiles x 5 with TTA). All crops of
        all images run as batched forward passes.
        """
        return self.embed_prepared(
            [
                self.prepare(
                    image,
                    tta=tta,
                    panorama_max_ratio=panorama_max_ratio,
                    panorama_max_tiles=panorama_max_tiles,
                )
                for image in images
            ]
        )

    def decode_side(
        self,
        width: int,
        height: int,
        *,
        panorama_max_ratio: float | None = 2.6,
        panorama_max_tiles: int | None = None,
    ) -> int:
        """The short side an image of this (header) size must be decoded at, at least, for `prepare`:
        every tile it is cut into keeps a short side >= DECODE_MARGIN x the model's resize target
        (image_size * 8/7, TTA's; plain preprocessing resizes to less). For `decode_image(min_side=)`."""
        n = tile_count(width, height, panorama_max_ratio, panorama_max_tiles)
        long, short = max(width, height), min(width, height)
        tile_short = min(short, long / n)
        return math.ceil(DECODE_MARGIN * round(self.image_size * TTA_RESIZE) * short / tile_short)

    def prepare(
        self,
        image: Image.Image,
        *,
        tta: bool = False,
        panorama_max_ratio: float | None = 2.6,
        panorama_max_tiles: int | None = None,
    ) -> PreparedImage:
        """Crop, resize and normalise one image into its views (CPU only; safe from any thread)."""
        if panorama_max_ratio is not None and panorama_max_ratio < 1:
            raise InvalidInput(f"must be >= 1 or None, got {panorama_max_ratio}", field="panorama_max_ratio")
        if panorama_max_tiles is not None and panorama_max_tiles < 1:
            raise InvalidInput(f"must be >= 1 or None, got {panorama_max_tiles}", field="panorama_max_tiles")
        if not isinstance(image, Image.Image):
            raise InvalidInput(f"a {type(image).__name__}, not an image", field="images")
        if image.mode != "RGB":  # convert() copies even when the mode is already RGB
            image = image.convert("RGB")
        views: list[torch.Tensor] = []
        tiles = _panorama_tiles(image, panorama_max_ratio, panorama_max_tiles)
        for tile in tiles:
            if tta:
                views.extend(self._to_tensor(crop) for crop in self._tta(tile))
            else:
                views.append(self._preprocess(tile))
        return PreparedImage(torch.stack(views), len(tiles))

    def embed_prepared(self, prepared: Sequence[PreparedImage]) -> np.ndarray:
        """Prepared images -> float32 [n, dims], unit rows (the views of each image averaged)."""
        views = [v for p in prepared for v in p.views]
        owner = [i for i, p in enumerate(prepared) for _ in range(len(p.views))]
        return self._pool(self._encode_pixels(views), owner, len(prepared))

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """Embed decoded video frames uint8 [n, H, W, 3] (RGB) -> float32 [n, dims] (no TTA/tiling)."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise InvalidInput(
                f"expected uint8 [n, H, W, 3], got {frames.dtype} {list(frames.shape)}", field="frames"
            )
        views = [self._preprocess(Image.fromarray(f)) for f in frames]
        return self._encode_pixels(views)

    def _encode_pixels(self, views: list[torch.Tensor]) -> np.ndarray:
        out = np.zeros((0, self.dims), dtype=np.float32)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(views), self._image_chunk):
                self._text_first.wait()
                pixels = torch.stack(views[start : start + self._image_chunk]).to(self.device, self._dtype)
                self.views_encoded += len(pixels)
                chunks.append(self._model.encode_image(pixels).float().cpu().numpy())
        if chunks:
            out = np.concatenate(chunks)
        return l2_normalize(out)

    def _pool(self, vectors: np.ndarray, owner: list[int], n: int) -> np.ndarray:
        if len(owner) == n:  # one view per image: nothing to average
            return vectors
        index = np.asarray(owner)
        pooled = np.stack([vectors[index == i].mean(axis=0) for i in range(n)]) if n else vectors[:0]
        return l2_normalize(pooled)

    # -- text ---------------------------------------------------------------------------------

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts with the model's own open_clip tokenizer (truncated to its context) -> [n, dims]."""
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise InvalidInput("every item must be a string", field="texts")
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        chunks = []
        with self._text_first.text_pass(), torch.inference_mode():
            for start in range(0, len(texts), self._batch_size):
                tokens = self._tokenizer(texts[start : start + self._batch_size]).to(self.device)
                chunks.append(self._encode_text(tokens).float().cpu().numpy())
        return l2_normalize(np.concatenate(chunks))


class _TextFirst:
    """Text passes before image passes on a CPU, where both towers share the same cores.

    A text pass runs inside `text_pass()`; the image side calls `wait()` before each chunk of views,
    and, given the vision tower (`visual`), before each of its blocks too (forward pre-hooks on
    open_clip's `transformer.resblocks` or a timm trunk's `blocks`; a tower with neither waits per
    chunk only). wait() returns at once when no text pass runs, else when the last one ends or after
    TEXT_YIELD_S, so a stream of queries slows an image job but never stops it.
    """

    def __init__(self, visual: torch.nn.Module | None) -> None:
        self.passes = 0  # text passes running now
        self.waits = 0  # times the image side found one running and waited
        self._done = threading.Condition()
        self.blocks = _vision_blocks(visual) if visual is not None else []
        for block in self.blocks:
            block.register_forward_pre_hook(lambda _module, _args: self.wait())

    @contextlib.contextmanager
    def text_pass(self) -> Iterator[None]:
        with self._done:
            self.passes += 1
        try:
            yield
        finally:
            with self._done:
                self.passes -= 1
                self._done.notify_all()

    def wait(self) -> None:
        if self.passes:  # read without the lock: a pass that starts just after is one block late
            with self._done:
                self.waits += 1
                self._done.wait_for(lambda: self.passes == 0, timeout=TEXT_YIELD_S)


def _vision_blocks(visual: torch.nn.Module) -> list[torch.nn.Module]:
    for path in ("transformer.resblocks", "trunk.blocks"):
        blocks: Any = visual
        for attr in path.split("."):
            blocks = getattr(blocks, attr, None)
        if isinstance(blocks, torch.nn.Sequential | torch.nn.ModuleList):
            return list(blocks)
    return []


class _TrimmedText:
    """CLIP's text tower run only up to the longest end-of-text token in the batch.

    The tokenizer pads every text to the context length (77) and the tower's attention is causal,
    so a position never sees the padding after it, and the pooled row is the end-of-text position
    (`argmax`/`eos` pooling). Cutting the padding off therefore gives the same vectors (to float
    rounding) for a fraction of the work: a 12-token query costs 13 positions, not 77.
    Only used when those conditions hold (`probe` returns None otherwise, e.g. no causal mask, a
    CoCa class token or a padding mask), so any other tower goes through open_clip's encode_text.
    """

    def __init__(self, tower: Any, pool_attr: str, eos_attr: str) -> None:
        self.tower = tower
        self.pool_type = getattr(tower, pool_attr)
        self.eos_id = getattr(tower, eos_attr, None)

    @classmethod
    def probe(cls, model: Any) -> _TrimmedText | None:
        text = getattr(model, "text", None)  # CustomTextCLIP (e.g. EVA02) keeps a TextTransformer here
        tower, pool_attr, eos_attr = (
            (text, "pool_type", "eos_id") if text is not None else (model, "text_pool_type", "text_eos_id")
        )
        needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
        if not all(hasattr(tower, a) for a in needed) or getattr(tower, "attn_mask", None) is None:
            return None
        if getattr(tower, "cls_emb", None) is not None or getattr(tower, "use_pad_mask", False):
            return None
        if getattr(tower, pool_attr, None) not in ("argmax", "eos"):
            return None
        if getattr(tower, "output_tokens", False):
            return None
        return cls(tower, pool_attr, eos_attr)

    def ends(self, tokens: torch.Tensor) -> torch.Tensor:
        """Each row's end-of-text position (the pooled one)."""
        if self.pool_type == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)
        return tokens.argmax(dim=-1)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        ends = self.ends(tokens)
        return self.run(tokens[:, : int(ends.max()) + 1], ends)

    def run(self, tokens: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        """The tower over `tokens` already cut after the batch's last end (its length read from the
        tensor's shape, so a traced graph keeps the sequence axis dynamic: shared.models.clip_text_export)."""
        t = self.tower
        length = tokens.shape[1]
        cast = t.transformer.get_cast_dtype()
        x = t.token_embedding(tokens).to(cast)
        x = x + t.positional_embedding[:length].to(cast)
        x = t.transformer(x, attn_mask=t.attn_mask[:length, :length])
        x = t.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), ends]
        if t.text_projection is None:
            return x
        if isinstance(t.text_projection, torch.nn.Linear):
            return t.text_projection(x)
        return x @ t.text_projection


def _panorama_tiles(image: Image.Image, max_ratio: float | None, max_tiles: int | None) -> list[Image.Image]:
    w, h = image.size
    n = tile_count(w, h, max_ratio, max_tiles)
    if n == 1:
        return [image]
    long, short = max(w, h), min(w, h)
    edges = [round(k * long / n) for k in range(n + 1)]
    boxes = [(e0, 0, e1, h) if w >= h else (0, e0, w, e1) for e0, e1 in itertools.pairwise(edges)]
    if n == math.ceil(long / short):
        return [image.crop(box) for box in boxes]
    # capped: each tile is wider than square; squeeze it to one, first by an integer box reduce
    # along the long side (crop and reduce in one pass, cheap), then bicubic for the remainder
    tiles = []
    for box in boxes:
        f = max(1, (box[2] - box[0] if w >= h else box[3] - box[1]) // short)
        tile = image.reduce((f, 1) if w >= h else (1, f), box=box)
        tiles.append(
            tile if tile.size == (short, short) else tile.resize((short, short), Image.Resampling.BICUBIC)
        )
    return tiles
