"""Opening media with PyAV and translating its errors into MediaError."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import av
import av.container

from shared.errors import MediaError


def check_file(path: Path | str) -> Path:
    """Refuse a missing path loudly (a caller bug) and a zero-byte file as bad media."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    if path.stat().st_size == 0:
        raise MediaError("the file is empty (zero bytes)")
    return path


@contextlib.contextmanager
def open_input(path: Path | str) -> Iterator[av.container.InputContainer]:
    """Open a container for reading; a file FFmpeg cannot parse raises MediaError."""
    path = check_file(path)
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as e:
        raise MediaError(f"not a readable media file ({_reason(e)})") from e
    try:
        yield container
    finally:
        container.close()


def _reason(e: av.FFmpegError) -> str:
    # FFmpeg messages name the file path; keep only the error text.
    return getattr(e, "strerror", None) or type(e).__name__


def decode_error(what: str, e: av.FFmpegError) -> MediaError:
    return MediaError(f"{what} could not be decoded ({_reason(e)})")
