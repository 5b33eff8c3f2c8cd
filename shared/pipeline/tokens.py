"""The webhook token: an HMAC-SHA256 over (owner, item, dispatch, expiry), carried in the webhook
URL's query string (`?token=...`). RunPod cannot sign requests, so this token is on_job_done's
authentication: it is bound to one dispatch, expires, and is checked in constant time.

    token = base64url(json({"o", "i", "d", "e"})) + "." + base64url(hmac_sha256(key, that first part))
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

from shared.errors import EmbeddingError
from shared.pipeline.keys import ID_RE, is_item_id

MAX_TOKEN_CHARS = 512
_B64 = re.compile(r"[A-Za-z0-9_-]+")


class BadToken(EmbeddingError):
    """Missing, malformed, forged or expired: the request is refused and changes nothing."""

    status = 401
    code = "unauthorized"


@dataclass(frozen=True)
class Claim:
    owner_id: str
    item_id: str
    dispatch_id: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, owner_id: str, item_id: str, dispatch_id: str, expires: int) -> str:
    body = _b64(
        json.dumps(
            {"o": owner_id, "i": item_id, "d": dispatch_id, "e": int(expires)}, separators=(",", ":")
        ).encode()
    )
    mac = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify(key: bytes, token: object, now: float) -> Claim:
    """The token's claim, or BadToken. The MAC is compared with hmac.compare_digest before the body is
    parsed, so a forged token learns nothing from timing or from the parser."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise BadToken("missing or malformed token")
    body, mac = token.split(".")
    if not body or not mac or not _B64.fullmatch(body) or not _B64.fullmatch(mac):
        raise BadToken("missing or malformed token")
    # Compared as text: the MAC's last base64 character carries two unused bits, so decoding would
    # accept several spellings of one MAC; only the one sign() writes is valid.
    expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected.encode(), mac.encode()):
        raise BadToken("token signature does not match")
    try:
        claim = json.loads(_unb64(body))
        c = Claim(str(claim["o"]), str(claim["i"]), str(claim["d"]), int(claim["e"]))
    except (ValueError, KeyError, TypeError):
        raise BadToken("missing or malformed token") from None
    if not (ID_RE.match(c.owner_id) and is_item_id(c.item_id) and ID_RE.match(c.dispatch_id)):
        raise BadToken("missing or malformed token")
    if c.expires < now:
        raise BadToken("token expired")
    return c
