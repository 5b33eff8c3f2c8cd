"""Settings read from a mapping (normally os.environ), frozen and validated once at start.

Each setting is declared once, as a field of its frozen dataclass: `setting(...)` gives the field its
default and records the environment variable, the parser, an example and a one-line doc. `from_env`
reads every declared field with `read_settings`, then applies the checks that span several settings;
`python -m shared.dev.settings_doc` renders docs/configuration.md from the same declarations.

Nothing here reads the environment at import time; tests pass plain dicts:

    TextSettings.from_env({"MODEL_DIR": "/opt/models", "TEXT_THREADS": "2"})
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, TypeVar

from shared.errors import ConfigError

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = REPO_ROOT / ".models"
SETTING = "setting"  # the key of a declared field's metadata


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # a Setting with no env_default


@dataclass(frozen=True)
class Parser:
    """A parse function (raising ValueError on a bad value) and what it accepts, in the docs' words."""

    parse: Callable[[str], Any]
    kind: str

    def __call__(self, raw: str) -> Any:
        return self.parse(raw)


def parser(kind: str) -> Callable[[Callable[[str], Any]], Parser]:
    """Decorator: `@parser("int, 1 to 8")` over a parse function names what it accepts in the docs."""
    return lambda parse: Parser(parse, kind)


def kind_of(parse: Callable[[str], Any]) -> str:
    if isinstance(parse, Parser):
        return parse.kind
    return {int: "int", float: "float", str: "string", Path: "path"}.get(parse, parse.__name__)


@parser("bool: 1 or 0")
def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(raw)


BOOL = _bool
STRING = Parser(str, "string")
PATH = Parser(Path, "path")


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


def positive(parse: Callable[[str], Any]) -> Parser:
    def inner(raw: str) -> Any:
        value = parse(raw)
        if value <= 0:
            raise ValueError(raw)
        return value

    return Parser(inner, f"{kind_of(parse)} > 0")


def choice(*allowed: str) -> Parser:
    def inner(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(raw)
        return raw

    return Parser(inner, " | ".join(allowed))


def render(value: Any) -> str:
    """A value as one would write it in the environment: 1/0, 2048, 2.6, a,b,c."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return ",".join(render(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class Setting:
    """What a settings field reads: its variable, parser, example and doc (see `setting`)."""

    env: str
    parse: Callable[[str], Any]
    doc: str
    example: str | None = None
    shown_default: str | None = None
    env_default: Any = UNSET
    derived: Callable[[Mapping[str, Any]], Any] | None = None


def setting(
    env: str,
    parse: Callable[[str], Any],
    doc: str,
    *,
    default: Any = MISSING,
    example: str | None = None,
    shown_default: str | None = None,
    env_default: Any = UNSET,
    derived: Callable[[Mapping[str, Any]], Any] | None = None,
) -> Any:
    """A dataclass field read from the variable `env`.

    default: the field's default, and what an unset (or empty) variable reads as; none: required.
    example: the value a ConfigError suggests (default: the default, rendered).
    shown_default: the docs' default where the value itself would mislead (a path on this machine).
    env_default: what an unset variable reads as where the field holds a value resolved from it in
      `from_env` (DEVICE: auto, resolved to cpu or cuda).
    derived: an unset variable's value, from the settings read before it (by attribute name).
    """
    if default is MISSING and derived is None and example is None:
        raise TypeError(f"{env}: a required setting needs an example")
    meta = Setting(env, parse, doc, example, shown_default, env_default, derived)
    return dataclasses.field(default=default, metadata={SETTING: meta})


@dataclass(frozen=True)
class Declared:
    """One declared setting of a settings class, resolved: its attribute, variable and defaults."""

    attr: str
    setting: Setting
    default: Any  # what an unset variable reads as; MISSING when it is required

    @property
    def env(self) -> str:
        return self.setting.env

    @property
    def required(self) -> bool:
        return self.default is MISSING and self.setting.derived is None

    @property
    def example(self) -> str:
        s = self.setting
        return s.example if s.example is not None else render(self.default)

    @property
    def shown_default(self) -> str:
        if self.setting.shown_default is not None:
            return self.setting.shown_default
        return "(required)" if self.required else render(self.default)

    @property
    def kind(self) -> str:
        return kind_of(self.setting.parse)


def declared(cls: type) -> Iterator[Declared]:
    """The settings `cls` declares, in field order."""
    for f in dataclasses.fields(cls):
        s = f.metadata.get(SETTING)
        if s is None:
            continue
        default = f.default if s.env_default is UNSET else s.env_default
        yield Declared(f.name, s, default)


def read_settings(cls: type, env: Mapping[str, str]) -> dict[str, Any]:
    """Every setting `cls` declares, read from `env` and parsed: attribute name -> value.

    Required ones are checked first (one ConfigError naming all that are missing); a malformed value
    fails with its name and an example; an unset derived one is computed from those read before it.
    """
    decls = list(declared(cls))
    missing = [d for d in decls if d.required and not env.get(d.env)]
    if missing:
        names = " and ".join(d.env for d in missing)
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(f"{names} {verb} required; example: {missing[0].env}={missing[0].example}")
    values: dict[str, Any] = {}
    for d in decls:
        derived = d.setting.derived
        default = derived(values) if derived is not None and not env.get(d.env) else d.default
        values[d.attr] = read(env, d.env, d.setting.parse, default, d.example)
    return values


_MODEL_DIR = Setting(
    "MODEL_DIR",
    PATH,
    "baked model folder (the CPU image sets /opt/models, the GPU image /models)",
    example="/opt/models",
    shown_default="<repo>/.models",
)


def model_dir_setting() -> Any:
    """MODEL_DIR: one declaration, shared by the text and the worker settings."""
    return dataclasses.field(default=DEFAULT_MODEL_DIR, metadata={SETTING: _MODEL_DIR})


def model_dir_from(env: Mapping[str, str]) -> Path:
    return read(env, _MODEL_DIR.env, _MODEL_DIR.parse, DEFAULT_MODEL_DIR, str(_MODEL_DIR.example))


TEXT_PRECISIONS = ("auto", "int8", "fp32")


@dataclass(frozen=True)
class TextSettings:
    """The Lambda text path (MiniLM on ONNX Runtime)."""

    model_dir: Path = model_dir_setting()  # noqa: RUF009 (a field specifier, as dataclasses.field)
    threads: int = setting("TEXT_THREADS", positive(int), "ONNX Runtime intra-op threads", default=2)
    max_tokens: int = setting(
        "TEXT_MAX_TOKENS",
        positive(int),
        "tokens the model reads per chunk, [CLS] and [SEP] included (2 to 512)",
        default=256,
    )
    max_chunks: int = setting("TEXT_MAX_CHUNKS", positive(int), "chunks one request may carry", default=256)
    max_content_chars: int = setting(
        "TEXT_MAX_CONTENT_CHARS", positive(int), "characters of one chunk's content", default=100_000
    )
    truncate: bool = setting(
        "TEXT_TRUNCATE",
        BOOL,
        "a longer chunk is cut at TEXT_MAX_TOKENS (0: refused) when the request does not say",
        default=True,
    )
    precision: str = setting(
        "TEXT_PRECISION",
        choice(*TEXT_PRECISIONS),
        "auto: int8 when the cold-start self-check finds it accurate on this CPU, else fp32 "
        "(shared.models.minilm_onnx)",
        default="auto",
    )
    batch_size: int = setting("TEXT_BATCH_SIZE", positive(int), "chunks per forward pass", default=32)
    max_request_tokens: int = setting(
        "TEXT_MAX_REQUEST_TOKENS",
        positive(int),
        "tokens one request may embed, counted after the TEXT_MAX_TOKENS cut (the work bound: "
        "bench/bench_text.py --worst measures the largest allowed request against the timeout)",
        default=32_768,
    )
    max_body_bytes: int = setting(
        "TEXT_MAX_BODY_BYTES",
        positive(int),
        "a proxy event's body, checked before it is decoded or parsed",
        default=6_291_456,
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TextSettings:
        return cls(**read_settings(cls, os.environ if env is None else env))
