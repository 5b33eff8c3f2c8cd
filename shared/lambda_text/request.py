"""The text-embedding request (seed 003) and its validation.

    {"batch_id": "b1", "chunks": [{"chunk_id": "c1", "content": "def f(): ..."}], "dims": 128,
     "truncate": true}

`dims` and `truncate` are optional. Validation is strict: no type coercion (a number is not a
chunk_id), no unknown fields, and every error names the field path (`chunks[3].chunk_id`). Strings
must be valid Unicode (a lone surrogate such as "\ud800" is a 400, not a tokenizer crash). Errors
never echo more than SHOWN_CHARS of what the caller sent (a 5,000-digit number is "a number of 5000
digits", a megabyte-long unknown key is cut).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import InvalidInput, PayloadTooLarge
from shared.settings import TextSettings

MAX_ID_CHARS = 512
SHOWN_CHARS = 64  # the most of a caller's value an error message repeats


class Chunk(BaseModel):
    """One text to embed; `content` may be empty or whitespace (embedded as sentence-transformers does)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    chunk_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    content: str


class EmbedRequest(BaseModel):
    """A validated batch. `dims=None` means the model's full width; `truncate=None` the deployment default."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    batch_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    chunks: list[Chunk]
    dims: int | None = None
    truncate: bool | None = None


_JSON_TYPES = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def shown(text: str) -> str:
    """At most SHOWN_CHARS of `text`, lone surrogates escaped: safe to put in an error or a log line."""
    cut = text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."
    return cut.encode("utf-8", "backslashreplace").decode("utf-8")


def _number(value: int | float) -> str:
    if isinstance(value, int) and abs(value) >= 10**18:  # str() of a huge int is slow, then refused
        return f"a number of about {int(value.bit_length() * 0.30103) + 1} digits"
    return repr(value)


def _describe(value: object) -> str:
    """'number 5.0', 'boolean true', 'string', 'array': scalars show their value (short, caller's own)."""
    kind = json_type(value)
    if isinstance(value, bool):
        return f"{kind} {str(value).lower()}"
    if isinstance(value, int | float):
        return f"{kind} {_number(value)}"
    return kind


def field_path(loc: tuple[str | int, ...]) -> str | None:
    """('chunks', 3, 'chunk_id') -> 'chunks[3].chunk_id' (each key shortened by `shown`)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{shown(part)}" if out else shown(str(part)))
    return out or None


def _first_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate in `text` (invalid Unicode, unencodable as UTF-8), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def _surrogate_message(text: str) -> str | None:
    at = _first_surrogate(text)
    if at is None:
        return None
    return f"has a lone surrogate (\\u{ord(text[at]):04x}) at character {at}; send valid Unicode text"


def _check_unicode(text: str, field: str) -> None:
    message = _surrogate_message(text)
    if message is not None:
        raise InvalidInput(message, field=field)


def _allowed_fields(loc: tuple[str | int, ...]) -> tuple[str, ...]:
    model = Chunk if "chunks" in loc[:-1] else EmbedRequest
    return tuple(model.model_fields)


def _message(err: dict[str, Any]) -> str:
    kind, value = err["type"], err.get("input")
    expected = {
        "string_type": "a string",
        "int_type": "an integer",
        "bool_type": "a boolean (true or false)",
        "list_type": "an array of chunks",
        "model_type": "an object",
        "dict_type": "an object",
    }
    if kind == "missing":
        return "is required"
    if kind == "string_unicode" and isinstance(value, str):
        return _surrogate_message(value) or "must be valid Unicode text"
    if kind == "extra_forbidden":
        return f"unknown field; allowed: {', '.join(_allowed_fields(err['loc']))}"
    if kind in expected:
        return f"must be {expected[kind]}, got {_describe(value)}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {err['ctx']['max_length']} characters"
    return err["msg"]


def _from_validation_error(e: ValidationError) -> InvalidInput:
    errors = e.errors(include_url=False)
    first = errors[0]
    message = _message(first)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return InvalidInput(message, field=field_path(tuple(first["loc"])))


def parse_request(payload: object, settings: TextSettings, *, model_dims: int = 384) -> EmbedRequest:
    """Validate a decoded request before any work is done.

    Raises InvalidInput (400) naming the field path, or PayloadTooLarge (413) for too many chunks or
    an oversize `content`. `model_dims` bounds the `dims` option.
    """
    if not isinstance(payload, dict):
        raise InvalidInput(f"the request must be a JSON object, got {json_type(payload)}")
    chunks = payload.get("chunks")
    # Checked before full validation so an oversized batch costs O(1) to refuse.
    if isinstance(chunks, list):
        if not chunks:
            raise InvalidInput("must contain at least one chunk", field="chunks")
        if len(chunks) > settings.max_chunks:
            raise PayloadTooLarge(
                f"has {len(chunks)} chunks; at most {settings.max_chunks} per request (split the batch)",
                field="chunks",
            )
    try:
        request = EmbedRequest.model_validate(payload)
    except ValidationError as e:
        raise _from_validation_error(e) from None

    _check_unicode(request.batch_id, "batch_id")
    seen: dict[str, int] = {}
    for i, chunk in enumerate(request.chunks):
        if len(chunk.content) > settings.max_content_chars:
            raise PayloadTooLarge(
                f"is {len(chunk.content)} characters; at most {settings.max_content_chars} per chunk",
                field=f"chunks[{i}].content",
            )
        _check_unicode(chunk.chunk_id, f"chunks[{i}].chunk_id")
        _check_unicode(chunk.content, f"chunks[{i}].content")
        first = seen.setdefault(chunk.chunk_id, i)
        if first != i:
            raise InvalidInput(
                f"duplicate chunk_id {shown(chunk.chunk_id)!r} (also at chunks[{first}])",
                field=f"chunks[{i}].chunk_id",
            )
    if request.dims is not None and not 1 <= request.dims <= model_dims:
        raise InvalidInput(f"must be between 1 and {model_dims}, got {_number(request.dims)}", field="dims")
    return request
