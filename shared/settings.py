"""Settings read from a mapping (normally os.environ), frozen and validated once at start.

Nothing here reads the environment at import time; tests pass plain dicts:

    TextSettings.from_env({"MODEL_DIR": "/opt/models", "TEXT_THREADS": "2"})
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from shared.errors import ConfigError

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = REPO_ROOT / ".models"


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(raw)


def read(env: Mapping[str, str], name: str, parse: Callable[[str], T], default: T, example: str) -> T:
    """Read one setting; a malformed value fails fast with the name and an example."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name}={raw!r} is not valid; example: {name}={example}") from e


def read_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    return read(env, name, _bool, default, "1")


def positive(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def inner(raw: str) -> Any:
        value = parse(raw)
        if value <= 0:
            raise ValueError(raw)
        return value

    return inner


def choice(*allowed: str) -> Callable[[str], str]:
    def inner(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(raw)
        return raw

    return inner


def model_dir_from(env: Mapping[str, str]) -> Path:
    return Path(env.get("MODEL_DIR") or DEFAULT_MODEL_DIR)


TEXT_PRECISIONS = ("auto", "int8", "fp32")


@dataclass(frozen=True)
class TextSettings:
    """The Lambda text path (MiniLM on ONNX Runtime).

    precision: auto (int8 when the cold-start self-check finds it accurate on this CPU, else fp32),
      int8 or fp32 (shared.models.minilm_onnx);
    max_request_tokens: tokens one request may embed, counted after the `max_tokens` cut (the work
      bound: bench/bench_text.py --worst measures the largest allowed request against the timeout);
    max_body_bytes: a proxy event's body, checked before it is decoded or parsed.
    """

    model_dir: Path
    threads: int = 2
    max_tokens: int = 256
    max_chunks: int = 256
    max_content_chars: int = 100_000
    truncate: bool = True
    precision: str = "auto"
    batch_size: int = 32
    max_request_tokens: int = 32_768
    max_body_bytes: int = 6_291_456

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TextSettings:
        env = os.environ if env is None else env
        return cls(
            model_dir=model_dir_from(env),
            threads=read(env, "TEXT_THREADS", positive(int), cls.threads, "2"),
            max_tokens=read(env, "TEXT_MAX_TOKENS", positive(int), cls.max_tokens, "256"),
            max_chunks=read(env, "TEXT_MAX_CHUNKS", positive(int), cls.max_chunks, "256"),
            max_content_chars=read(
                env, "TEXT_MAX_CONTENT_CHARS", positive(int), cls.max_content_chars, "100000"
            ),
            truncate=read_bool(env, "TEXT_TRUNCATE", cls.truncate),
            precision=read(env, "TEXT_PRECISION", choice(*TEXT_PRECISIONS), cls.precision, "auto"),
            batch_size=read(env, "TEXT_BATCH_SIZE", positive(int), cls.batch_size, "32"),
            max_request_tokens=read(
                env, "TEXT_MAX_REQUEST_TOKENS", positive(int), cls.max_request_tokens, "32768"
            ),
            max_body_bytes=read(env, "TEXT_MAX_BODY_BYTES", positive(int), cls.max_body_bytes, "6291456"),
        )
