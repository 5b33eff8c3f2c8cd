"""The one URL check (job parsing and every transfer use it): no I/O, no heavy imports.

Messages never repeat the URL or any part of it: presigned URLs are credentials.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from shared.errors import ForbiddenURL

MAX_URL_CHARS = 8192


def check_url(url: str) -> SplitResult:
    """An absolute http(s) URL with a host, a valid port and no credentials; ForbiddenURL otherwise."""
    if not isinstance(url, str) or not url:
        raise ForbiddenURL("the URL is empty or not a string", field="url")
    if len(url) > MAX_URL_CHARS:
        raise ForbiddenURL(f"the URL is longer than {MAX_URL_CHARS} characters", field="url")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ForbiddenURL("the URL contains whitespace or control characters", field="url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a malformed port)
    except ValueError:
        raise ForbiddenURL("not a valid URL", field="url") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ForbiddenURL("must be an absolute http(s) URL", field="url")
    if parts.username is not None or parts.password is not None:
        raise ForbiddenURL("credentials in URLs are not allowed", field="url")
    return parts
