"""Typed RunPod job inputs and `parse_job`, a pure parser (no I/O, no models).

Accepted `job["input"]` shapes (every object refuses unknown keys; types are strict, no coercion):

    {"task": "embed_item",
     "item": {"owner_id": ID, "item_id": ID, "modality": "video" | "audio" | "image"},
     "source_url": URL,                      presigned GET of the source object
     "channels": [CHANNEL, ...],             RunPod channels of shared.spec valid for the modality
     "outputs": {CHANNEL: URL, ...},         one presigned PUT per channel, no others
     "fingerprints": {CHANNEL: HEX, ...}?,  what the dispatcher expects (shared.spec); a channel whose
                                             fingerprint differs fails instead of writing a stale artifact
     "thumbnails": [URL, ...]?}              presigned PUTs of the scenes channel's keyframe JPEGs: with
                                             scenes exactly its spec's max_scenes, without it none
    {"task": "transcribe", "source_url": URL, "language": "en"?, "vad": bool?, "word_timestamps": bool?,
     "beam_size": 1..10?}
    {"task": "clip_text", "texts": [str, ...]}
    {"task": "clip_image", "images": [{"url": URL} | {"base64": B64}, ...], "tta": bool?}
    {"task": "embed_video", "source_url": URL, "caption": str?, "dims": DIMS?, "transcribe": bool?}
    {"task": "qwen3vl_text", "texts": [str, ...], "dims": DIMS?, "instruction": str?}

DIMS is one of the Qwen3-VL-Embedding Matryoshka sizes (2048, 1536, 1024, 768, 512, 256, 128, 64);
another value is refused with the allowed ones listed. A caption, text or instruction is at most
MAX_TEXT_CHARS characters here; its token limit (QWEN3VL_MAX_TEXT_TOKENS) is checked by the job
before any download.

ID is `[A-Za-z0-9_-]{1,64}`; URL is absolute http(s). Channels valid per modality: video -> video_clip,
scenes, video_mae, audio_wav2vec2, transcript (the audio track), video_qwen3vl; audio -> audio_wav2vec2,
transcript; image -> image_clip. Errors are InvalidInput (PayloadTooLarge for an oversized base64 image) whose
`field` is the path into the job, e.g. "input.item.owner_id"; messages never echo the value sent, and
a key the schema does not know appears in the path as `*`.

Before any schema runs, the input must be describable safely: nested at most MAX_DEPTH containers
deep, at most MAX_NODES values in all, every integer within +-2**53, every key a string. Anything
else is refused with invalid_input (no recursion, no str() of a caller's value on the way).
Size limits (texts, images, bytes) come from the worker's settings (shared.worker.settings).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shared import spec, urls
from shared.errors import ForbiddenURL, InvalidInput, PayloadTooLarge
from shared.models import registry

if TYPE_CHECKING:
    from shared.worker.settings import WorkerSettings

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# The deepest legal input is input.images[i].url (3 containers); the largest, 256 texts or 32 images.
MAX_DEPTH = 8
MAX_NODES = 4096
MAX_INT = 2**53
MRL_DIMS: tuple[int, ...] = tuple(
    registry.get(spec.CHANNELS["video_qwen3vl"].model).preprocessing["mrl_dims"]
)

# The channels an item of each modality may ask for (a video's audio track feeds the audio channels).
THUMBNAIL_CHANNEL = "scenes"
MAX_THUMBNAILS = spec.CHANNELS[THUMBNAIL_CHANNEL].thumbnails
CHANNELS_BY_MODALITY: dict[str, tuple[str, ...]] = {
    "video": tuple(c for c in spec.RUNPOD_CHANNELS if spec.CHANNELS[c].modality in ("video", "audio")),
    "audio": tuple(c for c in spec.RUNPOD_CHANNELS if spec.CHANNELS[c].modality == "audio"),
    "image": tuple(c for c in spec.RUNPOD_CHANNELS if spec.CHANNELS[c].modality == "image"),
}


def _limits(info: ValidationInfo) -> WorkerSettings:
    return (info.context or {})["settings"]


def _url(value: str) -> str:
    try:
        urls.check_url(value)
    except ForbiddenURL as e:
        raise ValueError(e.message) from None
    return value


def _b64_image(value: Any, info: ValidationInfo) -> bytes:
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "Input should be a valid string")
    return _decode_b64(value, _limits(info).max_image_bytes)


def _decode_b64(text: str, max_bytes: int) -> bytes:
    if text.startswith("data:"):
        head, sep, rest = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise ValueError("a data: URL must be base64 encoded")
        text = rest
    if (len(text) // 4) * 3 > max_bytes + 2:
        raise PydanticCustomError(
            "payload_too_large", "the image is larger than {limit} bytes", {"limit": max_bytes}
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64") from None
    if not data:
        raise ValueError("the image is empty")
    if len(data) > max_bytes:
        raise PydanticCustomError(
            "payload_too_large", "the image is larger than {limit} bytes", {"limit": max_bytes}
        )
    return data


Url = Annotated[str, Field(min_length=1), AfterValidator(_url)]
Ident = Annotated[str, Field(pattern=ID_PATTERN)]
# a base64 image (str in the job) becomes its bytes at parse; bounded by MAX_IMAGE_BYTES first
B64Image = Annotated[bytes, PlainValidator(_b64_image)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ItemRef(_Strict):
    owner_id: Ident
    item_id: Ident
    modality: Literal["video", "audio", "image"]


class EmbedItemRequest(_Strict):
    task: Literal["embed_item"]
    item: ItemRef
    source_url: Url
    channels: list[str] = Field(min_length=1)
    outputs: dict[str, Url]
    fingerprints: dict[str, str] | None = None
    thumbnails: list[Url] | None = Field(default=None, max_length=MAX_THUMBNAILS)

    def check_channels(self) -> None:
        """Channels valid for the modality, each with exactly one output URL (InvalidInput with the path)."""
        allowed = CHANNELS_BY_MODALITY[self.item.modality]
        seen: set[str] = set()
        for i, ch in enumerate(self.channels):
            if ch in seen:
                raise InvalidInput("duplicate channel", field=f"input.channels[{i}]")
            if ch not in allowed:
                raise InvalidInput(
                    f"not a RunPod channel for a {self.item.modality} item; allowed: {', '.join(allowed)}",
                    field=f"input.channels[{i}]",
                )
            seen.add(ch)
        for ch in self.channels:
            if ch not in self.outputs:
                raise InvalidInput(f"no output URL for channel {ch}", field=f"input.outputs.{ch}")
        for ch in self.outputs:
            if ch not in seen:
                raise InvalidInput(
                    "an output URL for a channel that was not requested", field=f"input.outputs.{_name(ch)}"
                )
        wanted = MAX_THUMBNAILS if THUMBNAIL_CHANNEL in seen else 0
        if len(self.thumbnails or ()) != wanted:
            raise InvalidInput(
                f"expected {wanted} thumbnail URLs (one per possible scene of the {THUMBNAIL_CHANNEL} "
                "channel, none without it)",
                field="input.thumbnails",
            )
        for ch in self.fingerprints or {}:
            if ch not in seen:
                raise InvalidInput(
                    "a fingerprint for a channel that was not requested",
                    field=f"input.fingerprints.{_name(ch)}",
                )


class TranscribeRequest(_Strict):
    task: Literal["transcribe"]
    source_url: Url
    language: Annotated[str, Field(pattern=r"^[a-z]{2,3}$")] | None = None
    vad: bool | None = None
    word_timestamps: bool = False
    beam_size: Annotated[int, Field(ge=1, le=10)] | None = None


def _check_text(text: str, info: ValidationInfo) -> str:
    if not text.strip():
        raise ValueError("the text is empty")
    limit = _limits(info).max_text_chars
    if len(text) > limit:
        raise ValueError(f"the text is longer than {limit} characters")
    return text


def _at_most(items: list, limit: int, noun: str) -> list:
    if len(items) > limit:
        raise ValueError(f"at most {limit} {noun} per job")
    return items


class ClipTextRequest(_Strict):
    task: Literal["clip_text"]
    texts: list[Annotated[str, AfterValidator(_check_text)]] = Field(min_length=1)

    @field_validator("texts")
    @classmethod
    def _check_count(cls, v: list[str], info: ValidationInfo) -> list[str]:
        return _at_most(v, _limits(info).max_texts, "texts")


class ImageRef(_Strict):
    """One image: a URL to fetch, or base64 bytes (a `data:image/...;base64,` prefix is accepted),
    decoded once, while the job is parsed (`base64` holds the image's bytes after that)."""

    url: Url | None = None
    base64: B64Image | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _one_source(self) -> ImageRef:
        if (self.url is None) == (self.base64 is None):
            raise ValueError('give exactly one of "url" or "base64"')
        return self

    def data(self) -> bytes:
        """The decoded base64 bytes; only for base64 images."""
        if self.base64 is None:
            raise ValueError("not a base64 image")
        return self.base64


class ClipImageRequest(_Strict):
    task: Literal["clip_image"]
    images: list[ImageRef] = Field(min_length=1)
    tta: bool | None = None

    @field_validator("images")
    @classmethod
    def _check_count(cls, v: list[ImageRef], info: ValidationInfo) -> list[ImageRef]:
        return _at_most(v, _limits(info).max_images, "images")


def _check_dims(value: int | None) -> int | None:
    if value is not None and value not in MRL_DIMS:
        raise ValueError(f"must be one of {', '.join(map(str, MRL_DIMS))}")
    return value


Dims = Annotated[int | None, AfterValidator(_check_dims)]
Text = Annotated[str, AfterValidator(_check_text)]


class EmbedVideoRequest(_Strict):
    """Seed 000's video embedding: one Qwen3-VL vector of the frames and the caption together."""

    task: Literal["embed_video"]
    source_url: Url
    caption: Text | None = None
    dims: Dims = None
    transcribe: bool = False


class Qwen3VLTextRequest(_Strict):
    """Search queries into the video_qwen3vl space."""

    task: Literal["qwen3vl_text"]
    texts: list[Text] = Field(min_length=1)
    dims: Dims = None
    instruction: Text | None = None

    @field_validator("texts")
    @classmethod
    def _check_count(cls, v: list[str], info: ValidationInfo) -> list[str]:
        return _at_most(v, _limits(info).max_texts, "texts")


JobRequest = (
    EmbedItemRequest
    | TranscribeRequest
    | ClipTextRequest
    | ClipImageRequest
    | EmbedVideoRequest
    | Qwen3VLTextRequest
)
_REQUESTS: tuple[type[_Strict], ...] = (
    EmbedItemRequest,
    TranscribeRequest,
    ClipTextRequest,
    ClipImageRequest,
    EmbedVideoRequest,
    Qwen3VLTextRequest,
)
_ADAPTERS: dict[str, TypeAdapter] = {
    get_args(cls.model_fields["task"].annotation)[0]: TypeAdapter(cls) for cls in _REQUESTS
}
TASKS: tuple[str, ...] = tuple(_ADAPTERS)  # the one list of tasks

# Names that may appear in an error's field path: the schema's own and the spec's channels.
_KNOWN_NAMES = frozenset(
    {name for cls in (*_REQUESTS, ItemRef, ImageRef) for name in cls.model_fields} | set(spec.CHANNELS)
)


def _name(part: object) -> str:
    """A path segment that is safe to print: a name the schema knows, else `*` (never the caller's)."""
    return part if isinstance(part, str) and part in _KNOWN_NAMES else "*"


def _path(loc: tuple[Any, ...]) -> str:
    out = "input"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{_name(part)}"
    return out


def check_describable(value: Any) -> None:
    """Refuse input that cannot be validated and described safely: too deep, too many values,
    integers beyond +-2**53, non-string keys. Iterative, so no depth can overflow the stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise InvalidInput(f"the job input holds more than {MAX_NODES} values", field="input")
        if isinstance(item, bool | float | str) or item is None:
            continue
        if isinstance(item, int):
            if not -MAX_INT <= item <= MAX_INT:
                raise InvalidInput("an integer is out of range (at most 2**53 in size)", field="input")
            continue
        if not isinstance(item, dict | list):
            raise InvalidInput("the job input must be plain JSON values", field="input")
        if depth >= MAX_DEPTH:
            raise InvalidInput(f"the job input is nested more than {MAX_DEPTH} levels deep", field="input")
        if isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                raise InvalidInput("every key must be a string", field="input")
            stack.extend((v, depth + 1) for v in item.values())
        else:
            stack.extend((v, depth + 1) for v in item)


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if err.get("type") == "extra_forbidden":
        msg = "unknown field"
    elif err.get("type") == "string_pattern_mismatch" and ID_PATTERN in msg:
        msg = "must match [A-Za-z0-9_-]{1,64}"
    return msg


def parse_job(job_input: Any, settings: WorkerSettings | None = None) -> JobRequest:
    """Validate a RunPod `job["input"]` into a typed request, or raise InvalidInput naming the field.

    `settings` supplies the size limits (default: WorkerSettings' defaults)."""
    if not isinstance(job_input, dict):
        raise InvalidInput("the job input must be a JSON object", field="input")
    check_describable(job_input)
    task = job_input.get("task")
    if not isinstance(task, str) or task not in _ADAPTERS:
        got = "it is missing" if task is None else "got something else"
        raise InvalidInput(f"expected one of {', '.join(TASKS)}; {got}", field="input.task")
    if settings is None:
        from shared.worker.settings import WorkerSettings

        settings = WorkerSettings()
    try:
        request = _ADAPTERS[task].validate_python(job_input, strict=True, context={"settings": settings})
    except ValidationError as e:
        errors = e.errors(include_url=False, include_input=False)
        first = errors[0]
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        cls = PayloadTooLarge if first.get("type") == "payload_too_large" else InvalidInput
        raise cls(_message(first) + more, field=_path(tuple(first.get("loc", ())))) from None
    if isinstance(request, EmbedItemRequest):
        request.check_channels()
    return request
