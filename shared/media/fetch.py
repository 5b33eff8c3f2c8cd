"""HTTP(S) transfer of presigned URLs with an SSRF guard.

Each hop parses the URL, resolves the host once, refuses it unless every resolved address is public
unicast (`allow_private=True` is the explicit local-stack switch), then connects to one of those
resolved IPs itself; the Host header and TLS SNI/certificate check keep the original name. So a DNS
answer cannot change between the check and the connect (no rebinding). Redirects are re-checked.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import certifi
import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from shared import urls
from shared.errors import FetchError, ForbiddenURL, PayloadTooLarge

MAX_REDIRECTS = 3
_CHUNK = 1 << 16
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}$")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class HTTPStatusError(FetchError):
    """The server answered with a status we cannot use. Retryable only for 408, 425, 429 and 5xx."""

    def __init__(self, message: str, *, http_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.retryable = http_status in (408, 425, 429) or http_status >= 500


@dataclass(frozen=True)
class ParsedURL:
    scheme: str  # "http" or "https"
    host: str  # lower-case hostname or IP literal, without brackets
    port: int
    target: str  # path + query, as sent in the request line

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(url: str) -> ParsedURL:
    """`shared.urls.check_url` (ForbiddenURL for anything but a plain http(s) URL with a host and no
    credentials), as the parts a request needs."""
    parts = urls.check_url(url)
    scheme = parts.scheme.lower()
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return ParsedURL(scheme, parts.hostname.lower(), parts.port or (443 if scheme == "https" else 80), target)


def check_ip_allowed(ip: str | IPAddress, *, allow_private: bool) -> None:
    """Raise ForbiddenURL unless `ip` is a public unicast address (anything goes with allow_private).

    Refused: private, loopback, link-local (cloud metadata 169.254.169.254), multicast, reserved,
    unspecified, shared (100.64/10), and IPv6 forms that embed such an IPv4 address.
    """
    try:
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    except ValueError as e:
        raise ForbiddenURL(f"not an IP address: {ip!r}", field="url") from e
    if allow_private:
        return
    candidates: list[IPAddress] = [addr]
    if isinstance(addr, ipaddress.IPv6Address):
        candidates += [a for a in (addr.ipv4_mapped, addr.sixtofour) if a is not None]
        if addr.teredo:
            candidates.append(addr.teredo[1])
    for a in candidates:
        if (
            not a.is_global
            or a.is_private
            or a.is_loopback
            or a.is_link_local
            or a.is_multicast
            or a.is_reserved
            or a.is_unspecified
        ):
            raise ForbiddenURL(f"address {addr} is not a public address", field="url")


def _resolve(parsed: ParsedURL, allow_private: bool) -> list[str]:
    """All addresses of the host, each checked; refusing if any one is not allowed."""
    try:
        infos = socket.getaddrinfo(parsed.host, parsed.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise FetchError(f"could not resolve host {parsed.host!r}") from e
    addrs = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addrs:
        raise FetchError(f"could not resolve host {parsed.host!r}")
    for a in addrs:
        check_ip_allowed(a.split("%", 1)[0], allow_private=allow_private)
    return addrs


class _Deadline:
    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("timeout_s must be positive")
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise FetchError(f"transfer timed out after {self.seconds:g} s")
        return left


_SSL_CONTEXT: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = ssl.create_default_context(cafile=certifi.where())
    return _SSL_CONTEXT


@contextlib.contextmanager
def _request(
    method: str,
    parsed: ParsedURL,
    *,
    allow_private: bool,
    deadline: _Deadline,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Iterator[urllib3.BaseHTTPResponse]:
    """Send one request to a checked, resolved address; yields the response with its body unread,
    and closes the connection afterwards."""
    addrs = _resolve(parsed, allow_private)
    all_headers = {"Host": parsed.host_header, "Accept-Encoding": "identity", **(headers or {})}
    last: Exception | None = None
    for ip in addrs:
        left = deadline.remaining()
        timeout = urllib3.Timeout(connect=left, read=left)
        if parsed.scheme == "https":
            pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
                ip,
                parsed.port,
                timeout=timeout,
                retries=False,
                maxsize=1,
                server_hostname=parsed.host,
                assert_hostname=parsed.host,
                ssl_context=_ssl_context(),
            )
        else:
            pool = urllib3.HTTPConnectionPool(ip, parsed.port, timeout=timeout, retries=False, maxsize=1)
        try:
            resp = pool.urlopen(
                method,
                parsed.target,
                body=body,
                headers=all_headers,
                redirect=False,
                retries=False,
                preload_content=False,
                assert_same_host=False,
            )
        except NewConnectionError as e:
            pool.close()
            last = e  # try the next address
            continue
        except Urllib3Timeout as e:
            raise FetchError(f"{method} {parsed.host}: timed out after {deadline.seconds:g} s") from e
        except SSLError as e:
            err = FetchError(f"{method} {parsed.host}: TLS failure")
            err.retryable = False
            raise err from e
        except Urllib3Error as e:
            raise FetchError(f"{method} {parsed.host}: connection failed ({type(e).__name__})") from e
        try:
            yield resp
        finally:
            resp.close()
            pool.close()
        return
    raise FetchError(f"{method} {parsed.host}: could not connect") from last


def _status_error(method: str, parsed: ParsedURL, status: int) -> HTTPStatusError:
    return HTTPStatusError(f"{method} {parsed.host}: HTTP {status}", http_status=status)


def _suffix(parsed: ParsedURL) -> str:
    name = parsed.target.split("?", 1)[0].rsplit("/", 1)[-1]
    match = _SUFFIX.search(name)
    return match.group(0).lower() if match else ""


def download(
    url: str, dest_dir: Path, *, max_bytes: int, timeout_s: float, allow_private: bool = False
) -> Path:
    """GET `url` into a new file in `dest_dir` and return its path (suffix kept from the URL path).

    Follows up to MAX_REDIRECTS redirects, re-checking each target. `timeout_s` bounds the whole
    transfer (connect, every read, and the total, give or take one read). Errors: ForbiddenURL
    (scheme or address), PayloadTooLarge (Content-Length, or streamed bytes, over max_bytes),
    HTTPStatusError (a FetchError; retryable only for 408/425/429/5xx), FetchError (timeouts,
    connection errors, short bodies: retryable). The partial file is removed on any failure.
    """
    deadline = _Deadline(timeout_s)
    parsed = parse_url(url)
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        with _request("GET", parsed, allow_private=allow_private, deadline=deadline) as resp:
            status, location = resp.status, resp.headers.get("Location")
            if status not in _REDIRECTS or not location:
                if not 200 <= status < 300:
                    raise _status_error("GET", parsed, status)
                return _save(resp, parsed, Path(dest_dir), max_bytes, deadline)
        current = urljoin(current, location)
        parsed = parse_url(current)
    raise HTTPStatusError(f"GET: more than {MAX_REDIRECTS} redirects", http_status=status)


def _save(
    resp: urllib3.BaseHTTPResponse, parsed: ParsedURL, dest_dir: Path, max_bytes: int, deadline: _Deadline
) -> Path:
    length = resp.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLarge(f"object is {int(length)} bytes, limit {max_bytes}")
    fd, name = tempfile.mkstemp(dir=dest_dir, prefix="download-", suffix=_suffix(parsed))
    path = Path(name)
    try:
        with open(fd, "wb") as out:
            total = 0
            while True:
                deadline.remaining()
                chunk = resp.read1(_CHUNK, decode_content=False)
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise PayloadTooLarge(f"object is over the limit of {max_bytes} bytes")
                out.write(chunk)
        return path
    except Urllib3Timeout as e:
        path.unlink(missing_ok=True)
        raise FetchError(f"GET {parsed.host}: timed out after {deadline.seconds:g} s") from e
    except Urllib3Error as e:
        path.unlink(missing_ok=True)
        raise FetchError(f"GET {parsed.host}: body not received in full ({type(e).__name__})") from e
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def upload(
    url: str, data: bytes, *, content_type: str, timeout_s: float, allow_private: bool = False
) -> None:
    """PUT `data` to a presigned `url` (redirects are not followed). Raises ForbiddenURL for a
    refused URL, HTTPStatusError on a non-2xx status, FetchError on timeouts/connection errors."""
    deadline = _Deadline(timeout_s)
    parsed = parse_url(url)
    headers = {"Content-Type": content_type, "Content-Length": str(len(data))}
    with _request(
        "PUT", parsed, allow_private=allow_private, deadline=deadline, body=data, headers=headers
    ) as resp:
        if not 200 <= resp.status < 300:
            raise _status_error("PUT", parsed, resp.status)


@contextlib.contextmanager
def temp_workdir(prefix: str, *, base: Path | None = None) -> Iterator[Path]:
    """A fresh temporary directory (under `base`, default the system temp dir), removed with
    everything in it however the block exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
