"""S3 keys (DESIGN.md, "S3 keys"): parse and validate what arrives, build what we write.

    uploads/{owner_id}/{item_id}/{file}                            sources (+ meta.json)
    persons/{owner_id}/{person_id}/{photo}                         person reference photos
    embeddings/{spec_version}/{channel}/{owner_id}/{item_id}.npy   float32, L2-normalised
    embeddings/{spec_version}/{channel}/{owner_id}/persons/{person_id}[/{photo}].npy   persons
    transcripts/{spec_version}/{owner_id}/{item_id}.json
    thumbnails/{spec_version}/{channel}/{owner_id}/{item_id}/{index}.jpg   scene keyframes
    manifests/{spec_version}/{owner_id}/manifest.parquet
    manifests/current/{owner_id}.json                              the version readers use now
    search/{spec_version}/{owner_id}/                              the owner's search tables (LanceDB)
    search/current/{owner_id}.json                                 the version search reads now

Ids are `[A-Za-z0-9_-]{1,64}`. S3 event keys arrive URL-encoded (`+` for a space, `%2F` for `/` in
moto's notifications): `decode_event_key` undoes that once, for every record. A key that is not
ours raises `InvalidKey` (never retryable) with a reason that does not repeat the key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote_plus

from shared.errors import InvalidInput

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Ledger ids of persons: "@{person_id}" (the person: its query vector) and "@{person_id}~{12 hex}" (one
# reference photo). "@" and "~" are outside ID_RE, so they never meet an upload's item id.
PERSON_ITEM_RE = re.compile(r"^@([A-Za-z0-9_-]{1,64})(?:~([0-9a-f]{12}))?$")


def is_item_id(value: object) -> bool:
    """A ledger item id: an upload's item id, or a person's / a reference photo's."""
    return isinstance(value, str) and bool(ID_RE.fullmatch(value) or PERSON_ITEM_RE.fullmatch(value))


MAX_KEY_CHARS = 1024  # S3's own limit on a key, in bytes of UTF-8
MAX_FILE_CHARS = 255
META_FILE = "meta.json"

# What a file in an item folder is, by extension (lower case).
MODALITY_BY_SUFFIX = {
    **dict.fromkeys((".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg"), "video"),
    **dict.fromkeys((".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus"), "audio"),
    **dict.fromkeys((".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"), "image"),
}


# Why a key is refused, as a fixed set (the UploadsRefused metric's dimension, the ledger's refusal
# rows): whatever a key holds, it names one of these.
BAD_KEY, BAD_ID, NOT_MEDIA = "bad_key", "bad_id", "not_media"


class InvalidKey(InvalidInput):
    """An S3 key outside our layout, with a bad id, traversal, or a file we do not process. `reason`:
    BAD_KEY (layout, encoding, file name), BAD_ID (an owner, item or person id) or NOT_MEDIA."""

    code = "invalid_key"

    def __init__(self, message: str, *, field: str | None = None, reason: str = BAD_KEY) -> None:
        super().__init__(message, field=field)
        self.reason = reason


@dataclass(frozen=True)
class SourceKey:
    """One parsed key: `kind` is "upload" or "person"; `role` is "media" (with a modality) or "meta"."""

    key: str
    kind: str
    owner_id: str
    item_id: str  # the person_id for kind "person"
    file: str
    role: str
    modality: str | None


def decode_event_key(raw: object) -> str:
    """An S3 event's `object.key`, URL-decoded (`unquote_plus`), refusing what cannot be a key."""
    if not isinstance(raw, str) or not raw:
        raise InvalidKey("the record has no object key")
    if len(raw) > 3 * MAX_KEY_CHARS:
        raise InvalidKey("the object key is longer than S3 allows")
    return unquote_plus(raw)


SEQUENCER_RE = re.compile(r"^[0-9A-Fa-f]{1,64}$")
SEQUENCER_CHARS = 64


def sequencer(raw: object) -> str | None:
    """An S3 event's sequencer in a form whose string order is S3's order of events on one key: S3
    compares sequencers as hex strings after right-padding the shorter with zeros, so every one is
    right-padded to one width (and upper-cased). None for what is not a sequencer."""
    if not isinstance(raw, str) or not SEQUENCER_RE.fullmatch(raw):
        return None
    return raw.upper().ljust(SEQUENCER_CHARS, "0")


def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise InvalidKey(f"{what} must match [A-Za-z0-9_-]{{1,64}}", field=what, reason=BAD_ID)
    return value


def parse_key(key: str) -> SourceKey:
    """`uploads/{owner}/{item}/{file}` or `persons/{owner}/{person}/{photo}`, validated."""
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no S3 key can hold it
        raise InvalidKey("the object key is not valid UTF-8") from None
    if len(encoded) > MAX_KEY_CHARS:
        raise InvalidKey("the object key is longer than S3 allows")
    if any(ord(c) < 0x20 or c == "\x7f" or c == "\\" for c in key):
        raise InvalidKey("the object key contains control characters or a backslash")
    parts = key.split("/")
    if len(parts) != 4:
        raise InvalidKey(
            "expected uploads/{owner_id}/{item_id}/{file} or persons/{owner_id}/{person_id}/{photo}"
        )
    prefix, owner, item, file = parts
    if prefix not in ("uploads", "persons"):
        raise InvalidKey("the key is outside the uploads/ and persons/ prefixes")
    check_id(owner, "owner_id")
    check_id(item, "person_id" if prefix == "persons" else "item_id")
    if file in ("", ".", "..") or len(file) > MAX_FILE_CHARS or file.startswith("."):
        raise InvalidKey("the file name is empty, hidden, a traversal or too long")
    suffix = PurePosixPath(file).suffix.lower()
    if prefix == "uploads" and file == META_FILE:
        return SourceKey(key, "upload", owner, item, file, "meta", None)
    modality = MODALITY_BY_SUFFIX.get(suffix)
    if modality is None:
        raise InvalidKey(
            "the file type is not one we embed (video, audio, image, or meta.json)", reason=NOT_MEDIA
        )
    if prefix == "persons":
        if modality != "image":
            raise InvalidKey("a person reference must be an image", reason=NOT_MEDIA)
        return SourceKey(key, "person", owner, item, file, "media", "image")
    return SourceKey(key, "upload", owner, item, file, "media", modality)


def owner_part(key: str) -> str | None:
    """The owner id a key names (`uploads/{owner_id}/...`, `persons/{owner_id}/...`) when that part is a
    valid id, whatever the rest of the key holds; else None."""
    prefix, _, rest = key.partition("/")
    owner = rest.partition("/")[0]
    return owner if prefix in ("uploads", "persons") and ID_RE.fullmatch(owner) else None


def person_item_id(person_id: str) -> str:
    return f"@{person_id}"


def photo_item_id(person_id: str, file: str) -> str:
    return f"@{person_id}~{hashlib.sha256(file.encode('utf-8')).hexdigest()[:12]}"


def _artifact_stem(item_id: str) -> str:
    """An item's file stem under its channel: the item id, or persons/{person}[/{photo}] for persons."""
    m = PERSON_ITEM_RE.fullmatch(item_id)
    if m is None:
        return item_id
    return f"persons/{m[1]}" + (f"/{m[2]}" if m[2] else "")


def embedding_key(spec_version: str, channel: str, owner_id: str, item_id: str) -> str:
    return f"embeddings/{spec_version}/{channel}/{owner_id}/{_artifact_stem(item_id)}.npy"


def thumbnail_key(spec_version: str, channel: str, owner_id: str, item_id: str, index: int) -> str:
    """A channel's thumbnail `index` (a scene's keyframe) of one item, beside the version's artifacts."""
    return f"thumbnails/{spec_version}/{channel}/{owner_id}/{item_id}/{index}.jpg"


def transcript_key(spec_version: str, owner_id: str, item_id: str) -> str:
    return f"transcripts/{spec_version}/{owner_id}/{item_id}.json"


def manifest_key(spec_version: str, owner_id: str) -> str:
    return f"manifests/{spec_version}/{owner_id}/manifest.parquet"


def current_key(owner_id: str) -> str:
    """The owner's reader pointer: which spec version (and manifest) to read now. "current" can never be a
    spec version (those start with their date label)."""
    return f"manifests/current/{owner_id}.json"


def search_current_key(owner_id: str) -> str:
    """The owner's search pointer: the spec version whose search tables queries read now (beside the
    tables, so a reader of the search/ prefix needs nothing else)."""
    return f"search/current/{owner_id}.json"


def meta_key(owner_id: str, item_id: str) -> str:
    return f"uploads/{owner_id}/{item_id}/{META_FILE}"
