"""Qwen3-VL-Embedding (Qwen/Qwen3-VL-Embedding-2B) through transformers' own Qwen3-VL classes.

Follows the model card's reference embedder, `Qwen3VLEmbedder` in github.com/QwenLM/Qwen3-VL-Embedding
src/models/qwen3_vl_embedding.py (the card's scripts/qwen3_vl_embedding.py), and qwen-vl-utils 0.0.14
vision_process.py, which it calls:

- Input: one chat conversation per item. System: the instruction (default "Represent the user's
  input."; one not ending in punctuation gets a "."). User: the video, then the text (`format_model_input`
  puts videos before texts). `apply_chat_template(..., add_generation_prompt=True)`, right padding.
- Pooling: the last layer's hidden state at the final non-padding token (`_pooling_last`), then L2.
- Video: the card's sampling is fps 1.0 with max_frames 64 (README, "Video Sampling Settings"); the count
  rule is qwen-vl-utils `smart_nframes` (duration x fps, clamped to [4, 64], floored to an even number).
  The frames themselves are the caller's (the PyAV sampler in shared.media.video), so they are a frame
  list, and the card's frame-list path applies: `total_pixels` 7864320, each frame resized with
  `smart_resize` (sides multiples of 32; pixels within [128 x 32^2, min(768 x 32^2, total x 2 / n)]),
  bicubic with antialias, then the processor with do_resize=False and do_sample_frames=False.
- Timestamps: Qwen3-VL writes "<t seconds>" before each frame pair from `video_metadata`; we pass the
  frames' real pts (as millisecond indices at fps 1000), as the card's file path does with its own decode.

Matryoshka: `matryoshka(v, dims)` keeps the first `dims` and renormalises (MRL truncation).
Token limits are the caller's (the worker's settings); `fit_text` cuts a text to a token budget.
torch is imported only by the backend's methods: the plan rules (VideoPlan, matryoshka) stay light.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.errors import InvalidInput, MediaError
from shared.models import registry
from shared.models._loading import identity, load_transformers, precision_name
from shared.models.backend import l2_normalize

if TYPE_CHECKING:
    import torch

DEFAULT_NAME = "qwen3-vl-embedding-2b"
MAX_ASPECT = 200  # smart_resize refuses frames beyond 200:1
_MS = 1000.0  # timestamps travel to the processor as millisecond frame indices


@dataclass(frozen=True)
class VideoInput:
    """One video item: upright RGB frames uint8 [T, H, W, 3], their pts in seconds, an optional caption."""

    frames: np.ndarray
    timestamps: Sequence[float]
    caption: str | None = None


def matryoshka(vectors: Any, dims: int) -> np.ndarray:
    """MRL truncation: the first `dims` components of each (unit) vector, renormalised."""
    arr = np.asarray(vectors, dtype=np.float32)
    if not 0 < dims <= arr.shape[-1]:
        raise ValueError(f"dims {dims} outside 1..{arr.shape[-1]}")
    return l2_normalize(arr[..., :dims])


def _round(x: float, f: int) -> int:
    return round(x / f) * f


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """qwen-vl-utils `smart_resize`: sides divisible by `factor`, pixels within [min, max], aspect kept."""
    if max(height, width) / max(1, min(height, width)) > MAX_ASPECT:
        raise MediaError(f"the video's aspect ratio is beyond {MAX_ASPECT}:1")
    h_bar = max(factor, _round(height, factor))
    w_bar = max(factor, _round(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def with_period(instruction: str) -> str:
    """The card's rule: an instruction that does not end in punctuation gets a '.'."""
    text = instruction.strip()
    if text and not unicodedata.category(text[-1]).startswith("P"):
        text += "."
    return text


class VideoPlan:
    """The card's frame count and frame size rules, from the registry entry's preprocessing (pure)."""

    def __init__(self, pp: Any) -> None:
        self.fps = float(pp["fps"])
        self.min_frames = int(pp["min_frames"])
        self.max_frames = int(pp["max_frames"])
        self.factor = int(pp["patch_size"]) * int(pp["merge_size"])
        self.frame_min_pixels = int(pp["frame_min_pixels"])
        self.frame_max_pixels = int(pp["frame_max_pixels"])
        self.total_pixels = int(pp["total_pixels"])

    def frame_count(self, duration: float | None) -> int:
        """smart_nframes: duration x fps clamped to [min_frames, max_frames], floored to even."""
        n = (duration or 0.0) * self.fps
        n = min(max(n, self.min_frames), self.max_frames)
        return max(2, math.floor(n / 2) * 2)

    def frame_size(self, height: int, width: int, frames: int) -> tuple[int, int]:
        """(height, width) each frame is resized to, for `frames` frames of the given size."""
        frames = math.ceil(frames / 2) * 2
        max_pixels = max(
            min(self.frame_max_pixels, self.total_pixels / frames * 2), int(self.frame_min_pixels * 1.05)
        )
        return smart_resize(height, width, self.factor, self.frame_min_pixels, int(max_pixels))

    def max_video_tokens(self) -> int:
        """The most tokens one video can cost: per frame pair its visual tokens (sides are floored
        under the budget; only the minimum-size case rounds up) plus the "<t seconds>" text and the
        vision start/end tokens, at the worst frame count."""
        worst = 0
        for n in range(2, self.max_frames + 1, 2):
            cap = max(min(self.frame_max_pixels, self.total_pixels / n * 2), self.frame_min_pixels * 1.05)
            per_pair = max(cap, self.frame_min_pixels * 1.2) / self.factor**2 + 10
            worst = max(worst, int(n // 2 * per_pair))
        return worst


class Qwen3VLBackend:
    """A loaded Qwen3VLModel + Qwen3VLProcessor. Attributes: name, dims (hidden size: the full MRL width),
    mrl_dims, plan (VideoPlan), instruction, query_instruction, max_length, random, model_label, device,
    precision."""

    kind = "qwen3_vl"

    def __init__(
        self, model: Any, processor: Any, *, folder: Path, name: str | None, device: str, dtype: torch.dtype
    ) -> None:
        self._model = model
        self._processor = processor
        self._dtype = dtype
        self.name, self.random, self.model_label = identity(folder, name)
        entry = registry.get(name or DEFAULT_NAME)
        pp = entry.preprocessing
        self.device = device
        self.precision = precision_name(dtype)
        self.dims = int(model.config.text_config.hidden_size)
        self.mrl_dims = tuple(int(d) for d in pp["mrl_dims"] if int(d) <= self.dims)
        self.plan = VideoPlan(pp)
        self.instruction = str(pp["instruction"])
        self.query_instruction = str(pp["query_instruction"])
        self.max_length = int(pp["max_length"])

    @classmethod
    def load(
        cls, folder: Path, *, device: str = "cpu", precision: str = "fp32", name: str | None = None
    ) -> Qwen3VLBackend:
        """Load the checkpoint (config.json + model.safetensors) and its processor files. bf16/fp16 on
        CUDA only; a checkpoint that leaves any weight uninitialised is refused (ModelNotFound)."""
        from transformers import Qwen3VLModel, Qwen3VLProcessor

        folder = Path(folder)
        model, processor, dtype = load_transformers(
            Qwen3VLModel,
            Qwen3VLProcessor,
            folder,
            device=device,
            precision=precision,
            name=name,
            complete=True,
        )
        processor.tokenizer.padding_side = "right"  # the card's processor: padding_side='right'
        return cls(model, processor, folder=folder, name=name, device=device, dtype=dtype)

    @classmethod
    def from_model_dir(cls, model_dir: Path, name: str = DEFAULT_NAME, **kw: Any) -> Qwen3VLBackend:
        """`require_model(model_dir, name)` (ModelNotFound naming dir + bake command), then `load`."""
        return cls.load(registry.require_model(model_dir, name), name=name, **kw)

    # -- text budget ------------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return len(self._processor.tokenizer(text, add_special_tokens=False)["input_ids"])

    def fit_text(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """(text cut at a token boundary to at most `max_tokens` tokens, whether it was cut)."""
        enc = self._processor.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) <= max_tokens:
            return text, False
        return text[: enc["offset_mapping"][max_tokens - 1][1]] if max_tokens > 0 else "", True

    # -- embedding --------------------------------------------------------------------------------------

    def _conversation(self, instruction: str, video: bool, text: str | None) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        if video:
            content.append({"type": "video"})
        if text:
            content.append({"type": "text", "text": text})
        if not content:
            content.append({"type": "text", "text": "NULL"})  # the card's empty input
        return [
            {"role": "system", "content": [{"type": "text", "text": with_period(instruction)}]},
            {"role": "user", "content": content},
        ]

    def _frames(self, item: VideoInput, index: int) -> tuple[torch.Tensor, Any]:
        import torch
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as tvf
        from transformers.video_utils import VideoMetadata

        frames = np.asarray(item.frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise InvalidInput(
                f"video {index}: expected uint8 [T, H, W, 3] frames, got {frames.dtype} {list(frames.shape)}",
                field="frames",
            )
        times = [float(t) for t in item.timestamps]
        if len(times) != frames.shape[0]:
            raise InvalidInput(
                f"video {index}: {len(times)} timestamps for {frames.shape[0]} frames", field="frames"
            )
        if frames.shape[0] > self.plan.max_frames:
            raise InvalidInput(
                f"video {index}: {frames.shape[0]} frames; the model takes at most {self.plan.max_frames}",
                field="frames",
            )
        if frames.shape[0] % 2:  # the card's frame-list path pads to an even count with the last frame
            frames = np.concatenate([frames, frames[-1:]])
            times.append(times[-1])
        height, width = self.plan.frame_size(frames.shape[1], frames.shape[2], frames.shape[0])
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        video = tvf.resize(video, [height, width], interpolation=InterpolationMode.BICUBIC, antialias=True)
        meta = VideoMetadata(
            total_num_frames=len(times), fps=_MS, frames_indices=[round(t * _MS) for t in times]
        )
        return video, meta

    def embed_videos(self, items: Sequence[VideoInput], instruction: str | None = None) -> np.ndarray:
        """Videos (each with its caption, if any, in the same input) -> float32 [n, dims], unit rows,
        one batched forward pass."""
        if len(items) == 0:
            return np.zeros((0, self.dims), dtype=np.float32)
        prepared = [self._frames(item, i) for i, item in enumerate(items)]
        convs = [self._conversation(instruction or self.instruction, True, item.caption) for item in items]
        return self._forward(convs, videos=[v for v, _ in prepared], metadata=[m for _, m in prepared])

    def embed_texts(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        """Texts (search queries: the query instruction by default) -> float32 [n, dims], unit rows."""
        if len(texts) == 0:
            return np.zeros((0, self.dims), dtype=np.float32)
        convs = [self._conversation(instruction or self.query_instruction, False, t) for t in texts]
        return self._forward(convs)

    def _forward(self, convs: list, videos: list | None = None, metadata: list | None = None) -> np.ndarray:
        import torch

        prompts = self._processor.apply_chat_template(convs, add_generation_prompt=True, tokenize=False)
        kwargs: dict[str, Any] = {}
        if videos is not None:
            kwargs = {
                "videos": videos,
                "video_metadata": metadata,
                "do_resize": False,  # resized above, as the card's qwen-vl-utils step does
                "do_sample_frames": False,
                "cap_pixels_per_frame": True,  # no effect without resizing; silences its notice
            }
        inputs = self._processor(text=prompts, padding=True, return_tensors="pt", **kwargs)
        if inputs["input_ids"].shape[1] > self.max_length:
            raise InvalidInput(
                f"the input is {inputs['input_ids'].shape[1]} tokens; the model takes {self.max_length}"
            )
        batch = {
            k: v.to(self.device, self._dtype) if v.is_floating_point() else v.to(self.device)
            for k, v in inputs.items()
        }
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"]
            last = mask.shape[1] - 1 - mask.flip(dims=[1]).argmax(dim=1)  # _pooling_last
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
            return l2_normalize(pooled.float().cpu().numpy())
