"""Refused uploads, made visible: what the ledger keeps of one (shared.pipeline.ledger's refusal rows),
in which words, and why, from a fixed set of reasons.

An upload is refused where it is parsed: its key (shared.pipeline.keys.InvalidKey, whose `reason` is
one of BAD_KEY, BAD_ID, NOT_MEDIA), its bucket (shared.pipeline.events) or its size (shared.pipeline.
ingest). Each refusal becomes one row under the key's owner when the key names a valid owner id, else
under the pseudo-owner UNOWNED, in a ring of REFUSALS_PER_OWNER (REFUSALS_UNOWNED) rows that expire
after REFUSALS_DAYS (the table's TTL); an EMF metric UploadsRefused with the reason as its dimension.

What a row holds: the reason code, our own message, and the key as text for people: cut to
MAX_SHOWN_KEY characters, with control and format characters (a bidi override, a newline) and the
backslash escaped. Never the object's content.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote_plus

from shared.pipeline.keys import BAD_ID, BAD_KEY, MAX_KEY_CHARS, NOT_MEDIA
from shared.pipeline.ledger import UNOWNED

TOO_BIG, WRONG_BUCKET, OTHER = "too_big", "wrong_bucket", "other"
REASONS = {
    BAD_KEY: "the key is outside uploads/{owner_id}/{item_id}/{file} (or persons/...), or not a valid key",
    BAD_ID: "an owner, item or person id outside [A-Za-z0-9_-]{1,64}",
    NOT_MEDIA: "the file is not video, audio, an image or meta.json",
    TOO_BIG: "the source is larger than MAX_SOURCE_BYTES",
    WRONG_BUCKET: "an event of another bucket than this stack's",
    OTHER: "any other refusal",
}
MAX_SHOWN_KEY = 300
MAX_MESSAGE = 300


def reason_code(reason: object) -> str:
    """`reason` when it is one of REASONS, else OTHER: a dimension value never comes from input."""
    return reason if isinstance(reason, str) and reason in REASONS else OTHER


def _escaped(c: str) -> str:
    if c == "\\":
        return "\\\\"
    if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
        n = ord(c)
        return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"
    return c


def shown(text: str, limit: int) -> str:
    """`text` for a terminal or a page: control and format characters escaped, cut to `limit`."""
    out = "".join(_escaped(c) for c in text[: limit + 1])
    return out if len(out) <= limit else out[: limit - 1] + "…"


def event_key(raw: object) -> str:
    """An S3 event's key (URL-encoded, as it arrives), decoded for a refusal row whatever it holds
    (shared.pipeline.keys.decode_event_key refuses what cannot be a key; this never does)."""
    return unquote_plus(raw[: 3 * MAX_KEY_CHARS]) if isinstance(raw, str) else ""


__all__ = ["OTHER", "REASONS", "TOO_BIG", "UNOWNED", "WRONG_BUCKET", "event_key", "reason_code", "shown"]
