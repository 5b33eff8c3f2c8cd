"""`se admin`: the operator's console on 127.0.0.1, and the signing proxy behind it.

The page (static/index.html, app.js, app.css: no build step, nothing fetched from elsewhere) calls
`/api/...` on this server; the server forwards each call to the `reprocess` function URL (auth
`AWS_IAM`), signed with SigV4 with the operator's AWS credentials (`shared.aws.sigv4.sign`). The page
never sees a credential, and there is no public admin surface: without a valid signature the function
URL refuses the call before it reaches the code.

What the proxy forwards, and nothing else:

* only the API's routes and methods (ROUTES), with only their known query parameters;
* a POST body only when it is a JSON object of at most MAX_BODY bytes, re-serialised;
* none of the browser's headers: the upstream request carries Content-Type/Accept and the signature.

What it accepts: requests whose Host is this server's own (127.0.0.1 or localhost at its port, so a
DNS-rebinding page cannot reach it) and, where the browser says where a request comes from (Origin,
Sec-Fetch-Site), only same-origin ones; a POST must be `application/json` (a cross-site form cannot send
that without a CORS preflight, which this server never grants). It binds 127.0.0.1 and nothing else.

The Search panel's `POST /api/search` is the one route not forwarded to the admin API: it goes to a
`search` backend (a JSON object in, `(status, JSON body)` out). `console()` gives it one of two: for the
local stack, the search API's own SearchService run in this process (shared.search.api.service_from_env:
the owner's index, the ledger and presigning on the stack's moto, the query encoders from MODEL_DIR);
for a deployed stack, the search function URL (SEARCH_FUNCTION_URL), signed like every other call. The
answer's media and thumbnail URLs point at S3 (presigned): the page's Content-Security-Policy allows
images and media from that origin only (`media_origins`), and still no script or connection elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BIND_HOST = "127.0.0.1"  # the only address this server listens on
STATIC_DIR = Path(__file__).with_name("static")
STATIC_FILES = {  # URL path -> (file, content type); nothing else is served from disk
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}
MAX_BODY = 16 * 1024  # the API's bodies are a few hundred bytes
DRAIN_MAX = 1024 * 1024  # a refused body up to this size is read and dropped, a larger one cut off
MAX_RESPONSE = 8 * 1024 * 1024  # an owner's items with every channel
MAX_QUERY_VALUE = 256
UPSTREAM_TIMEOUT_S = 60.0
SEARCH_PATH = "/search"  # served by the search backend, not forwarded to the admin API
AWS_MEDIA_ORIGIN = "https://*.amazonaws.com"  # presigned S3 URLs of a deployed stack
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'{media}; media-src{media_only}; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def content_security_policy(media_origins: tuple[str, ...] = ()) -> str:
    """The page's CSP: scripts, styles and calls from this server only; images also, and media only, from
    `media_origins` (where the search answer's presigned URLs point)."""
    media = "".join(f" {o}" for o in media_origins)
    return CSP.format(media=media, media_only=media or " 'none'")


SECURITY_HEADERS = {
    "Content-Security-Policy": content_security_policy(),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@dataclass(frozen=True)
class Route:
    method: str
    path: re.Pattern[str]
    query: tuple[str, ...] = ()
    body: bool = False


ROUTES = (
    Route("GET", re.compile(r"/owners")),
    Route("GET", re.compile(r"/items"), query=("owner_id", "status", "limit")),
    Route("GET", re.compile(r"/quarantined"), query=("owner_id", "limit")),
    Route("GET", re.compile(r"/refusals"), query=("owner_id", "limit")),
    Route("GET", re.compile(r"/runs"), query=("limit",)),
    Route("GET", re.compile(r"/runs/[A-Za-z0-9_-]{1,128}")),
    Route("POST", re.compile(r"/reprocess"), body=True),
    Route("POST", re.compile(r"/replay"), body=True),
)


class Refused(Exception):
    """A request the proxy does not forward: (HTTP status, error code, message)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field


def error_body(code: str, message: str, field: str | None = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if field:
        err["field"] = field
    return json.dumps({"error": err}).encode()


def match_route(method: str, path: str) -> Route:
    known_path = False
    for r in ROUTES:
        if r.path.fullmatch(path):
            known_path = True
            if r.method == method:
                return r
    if known_path:
        raise Refused(405, "method_not_allowed", f"{method} is not allowed on this route")
    raise Refused(404, "unknown_route", "not a route of the admin API")


def clean_query(route: Route, raw_query: str) -> str:
    """The query string to forward: only the route's parameters, once each, bounded."""
    try:
        pairs = urllib.parse.parse_qsl(raw_query, keep_blank_values=True, strict_parsing=bool(raw_query))
    except ValueError:
        raise Refused(400, "bad_query", "the query string does not parse") from None
    seen: dict[str, str] = {}
    for k, v in pairs:
        if k not in route.query:
            raise Refused(400, "bad_query", f"unknown query parameter {k[:40]!r}", field=k[:40])
        if k in seen:
            raise Refused(400, "bad_query", f"{k} given twice", field=k)
        if len(v) > MAX_QUERY_VALUE:
            raise Refused(400, "bad_query", f"{k} is too long", field=k)
        seen[k] = v
    return urllib.parse.urlencode(seen)


def clean_body(raw: bytes) -> bytes:
    """A JSON object, re-serialised (what is forwarded is what was parsed)."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "bad_body", "the body is not JSON") from None
    if not isinstance(doc, dict):
        raise Refused(400, "bad_body", "the body must be a JSON object")
    return json.dumps(doc, separators=(",", ":")).encode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as it is: a signed request is never re-sent somewhere else."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)

Credentials = Any  # botocore Credentials / RefreshableCredentials (SigV4Auth freezes them per request)
SearchBackend = Callable[[dict[str, Any]], tuple[int, bytes]]  # a request object -> (status, JSON body)


def in_process_search(service: Any) -> SearchBackend:
    """A SearchService (shared.search.service) as the console's search backend: its answer, or the
    search API's error body and status (the field named, nothing echoed)."""
    from shared.errors import EmbeddingError, InvalidInput

    def run(request: dict[str, Any]) -> tuple[int, bytes]:
        try:
            return 200, json.dumps(service.search(request)).encode()
        except InvalidInput as e:
            return e.status, error_body(e.code, e.public_message, e.field)
        except EmbeddingError as e:
            log.warning("search failed: %s", e.code)
            return (503 if e.retryable else 500), error_body(e.code, e.public_message)
        except Exception:  # the console's boundary: logged with its traceback here, never sent to the page
            log.exception("search failed")
            return 500, error_body("internal_error", "the search failed; se admin's log has the details")

    return run


class AdminServer:
    """`AdminServer(function_url, credentials, region).start()`; `.url` is the page's address."""

    def __init__(
        self,
        function_url: str,
        credentials: Credentials,
        region: str,
        *,
        host: str = BIND_HOST,
        port: int = 0,
        timeout_s: float = UPSTREAM_TIMEOUT_S,
        sign: Callable[..., dict[str, str]] | None = None,
        search: SearchBackend | None = None,
        search_url: str | None = None,
        media_origins: tuple[str, ...] = (),
    ) -> None:
        """`search` (in process) or `search_url` (a search function URL, signed): the Search panel's
        backend; neither: the panel says search is not configured. `media_origins`: see the CSP."""
        if host != BIND_HOST:
            raise ValueError(f"the admin console binds {BIND_HOST} only (asked for {host!r})")
        parts = urllib.parse.urlsplit(function_url)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("the function URL must be an http(s) URL without a query")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError("a function URL outside this machine must be https")
        if credentials is None:
            raise ValueError(
                "no AWS credentials: configure a profile or AWS_ACCESS_KEY_ID (botocore's chain)"
            )
        if not region:
            raise ValueError("no AWS region: set AWS_DEFAULT_REGION or pass --region")
        if sign is None:
            from shared.aws.sigv4 import sign as sigv4_sign

            sign = sigv4_sign
        if search is not None and search_url is not None:
            raise ValueError("one search backend: in process or a function URL, not both")
        if search_url is not None:
            sparts = urllib.parse.urlsplit(search_url)
            if sparts.scheme != "https" and sparts.hostname not in ("127.0.0.1", "localhost"):
                raise ValueError("a search function URL outside this machine must be https")
            search = self._forwarding(search_url.rstrip("/"))
            media_origins = media_origins or (AWS_MEDIA_ORIGIN,)
        self.search = search
        self.headers = {**SECURITY_HEADERS, "Content-Security-Policy": content_security_policy(media_origins)}
        self.function_url = function_url.rstrip("/")
        self.credentials = credentials
        self.region = region
        self.timeout_s = timeout_s
        self._sign = sign
        self.server = ThreadingHTTPServer((host, port), self._handler_class())
        self.server.daemon_threads = True
        self.host, self.port = self.server.server_address[:2]
        self.url = f"http://{self.host}:{self.port}/"
        self._allowed_hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        self._allowed_origins = {f"http://{h}" for h in self._allowed_hosts}
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.1,), name="se-admin", daemon=True
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> AdminServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def serve_forever(self) -> None:
        try:
            self.server.serve_forever(0.2)
        finally:
            self.server.server_close()

    def __enter__(self) -> AdminServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ checks

    def check_caller(self, method: str, headers: Mapping[str, str]) -> None:
        h = {k.lower(): v for k, v in headers.items()}
        if h.get("host", "") not in self._allowed_hosts:
            raise Refused(403, "bad_host", "the Host header is not this console's")
        origin = h.get("origin")
        if origin is not None and origin not in self._allowed_origins:
            raise Refused(403, "cross_origin", "cross-origin requests are refused")
        site = h.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise Refused(403, "cross_origin", "cross-site requests are refused")
        if method == "POST":
            ctype = h.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                raise Refused(415, "bad_content_type", "a POST must be application/json")

    @staticmethod
    def read_body(headers: Mapping[str, str], rfile: Any) -> bytes:
        h = {k.lower(): v for k, v in headers.items()}
        if "transfer-encoding" in h:
            raise Refused(411, "length_required", "chunked bodies are not accepted")
        raw = h.get("content-length")
        if raw is None:
            raise Refused(411, "length_required", "a POST needs a Content-Length")
        try:
            length = int(raw)
        except ValueError:
            raise Refused(400, "bad_length", "Content-Length is not a number") from None
        if length < 0:
            raise Refused(400, "bad_length", "Content-Length is negative")
        if length > MAX_BODY:
            raise Refused(413, "body_too_large", f"the body is over {MAX_BODY} bytes")
        return rfile.read(length) if length else b""

    @staticmethod
    def drain(headers: Mapping[str, str], rfile: Any) -> bool:
        """Read and drop an unread request body of at most DRAIN_MAX bytes (Content-Length or chunked), so
        that a refused client is answered rather than reset mid-send; False when it is larger or malformed
        (the connection is then just closed)."""
        h = {k.lower(): v for k, v in headers.items()}
        if "chunked" in h.get("transfer-encoding", "").lower():
            total = 0
            while True:
                line = rfile.readline(64)
                try:
                    size = int(line.split(b";", 1)[0].strip() or b"x", 16)
                except ValueError:
                    return False
                total += size
                if total > DRAIN_MAX:
                    return False
                if size == 0:
                    while rfile.readline(1024) not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return True
                rfile.read(size + 2)
        raw = h.get("content-length", "0")
        if not raw.isdigit() or int(raw) > DRAIN_MAX:
            return False
        if int(raw):
            rfile.read(int(raw))
        return True

    # ------------------------------------------------------------------ forwarding

    def forward(
        self, method: str, path: str, query: str, body: bytes, *, base: str | None = None
    ) -> tuple[int, bytes]:
        """Sign and send one cleaned request; (status, JSON body) from the function URL (`base`: another
        function URL of the same stack, the search function's)."""
        url = (base or self.function_url) + path + (f"?{query}" if query else "")
        headers = {"Accept": "application/json"}
        if method == "POST":
            headers["Content-Type"] = "application/json"
        creds = self.credentials
        if hasattr(creds, "get_frozen_credentials"):  # one consistent key set per request, as botocore does
            creds = creds.get_frozen_credentials()
        signed = self._sign(method, url, body, creds, self.region, headers)
        # only what was signed goes out (urllib adds Host from the URL, as botocore signed it)
        out = {k: v for k, v in signed.items() if k.lower() != "host"}
        req = urllib.request.Request(url, data=body if method == "POST" else None, headers=out, method=method)
        try:
            with _OPENER.open(req, timeout=self.timeout_s) as resp:
                status, data = resp.status, resp.read(MAX_RESPONSE + 1)
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read(MAX_RESPONSE + 1)
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            return 502, error_body("upstream_unreachable", f"the admin API did not answer: {reason}")
        if not 200 <= status < 600 or 300 <= status < 400:  # a redirect is never followed nor passed on
            return 502, error_body("upstream_redirect", f"the admin API answered {status}")
        if len(data) > MAX_RESPONSE:
            return 502, error_body("upstream_too_large", "the admin API's answer is too large")
        try:
            json.loads(data.decode("utf-8") if data else "null")
        except (UnicodeDecodeError, ValueError):
            return 502, error_body("upstream_not_json", f"the admin API answered {status} without JSON")
        if status == 403 and b'"error"' not in data:  # IAM's own refusal: {"Message": "Forbidden"}
            return 403, error_body("forbidden", "the function URL refused the signature (IAM)")
        return status, data or b"null"

    def _forwarding(self, url: str) -> SearchBackend:
        def run(request: dict[str, Any]) -> tuple[int, bytes]:
            body = json.dumps(request, separators=(",", ":")).encode()
            return self.forward("POST", SEARCH_PATH, "", body, base=url)

        return run

    def config(self) -> bytes:
        """What the page may know about its backend (never a credential)."""
        return json.dumps(
            {"api": self.function_url, "region": self.region, "search": self.search is not None}
        ).encode()

    # ------------------------------------------------------------------ HTTP

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        admin = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "se-admin"
            sys_version = ""
            protocol_version = "HTTP/1.1"
            timeout = 30  # a connection that stalls mid-request is dropped

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("%s " + fmt, self.address_string(), *args)

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in admin.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _serve(self) -> None:
                self._body_read = False
                parts = urllib.parse.urlsplit(self.path)
                path = parts.path
                try:
                    if path.startswith("/api/"):
                        self._api(path[len("/api") :], parts.query)
                        return
                    admin.check_caller("GET", dict(self.headers))  # also for the page itself
                    if self.command not in ("GET", "HEAD"):
                        raise Refused(405, "method_not_allowed", "the console's files are GET only")
                    if path == "/favicon.ico":  # none; answered so the browser's console stays clean
                        self._send(204, b"", "image/x-icon")
                        return
                    if path == "/config.json":
                        self._send(200, admin.config())
                        return
                    entry = STATIC_FILES.get(path)
                    if entry is None:
                        raise Refused(404, "not_found", "no such page")
                    self._send(200, (STATIC_DIR / entry[0]).read_bytes(), entry[1])
                except Refused as r:
                    self.close_connection = True
                    if not self._body_read:
                        admin.drain(dict(self.headers), self.rfile)
                    self._send(r.status, error_body(r.code, str(r), r.field))

            def _api(self, path: str, query: str) -> None:
                if path == SEARCH_PATH:
                    self._search(query)
                    return
                route = match_route(self.command, path)
                admin.check_caller(self.command, dict(self.headers))
                body = b""
                if route.body:
                    raw = admin.read_body(dict(self.headers), self.rfile)
                    self._body_read = True
                    body = clean_body(raw)
                elif self.headers.get("Content-Length", "0") not in ("", "0"):
                    raise Refused(400, "bad_body", "a GET has no body")
                status, data = admin.forward(route.method, path, clean_query(route, query), body)
                self._send(status, data)

            def _search(self, query: str) -> None:
                if self.command != "POST":
                    raise Refused(405, "method_not_allowed", f"{self.command} is not allowed on this route")
                admin.check_caller("POST", dict(self.headers))
                if query:
                    raise Refused(400, "bad_query", "search takes no query parameters")
                raw = admin.read_body(dict(self.headers), self.rfile)
                self._body_read = True
                body = clean_body(raw)
                if admin.search is None:
                    why = "no search backend: run it on the local stack, or set SEARCH_FUNCTION_URL"
                    raise Refused(503, "search_unavailable", why)
                status, data = admin.search(json.loads(body))
                self._send(status, data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

        return Handler


_URL_REGION = re.compile(r"^[a-z0-9]+\.lambda-url\.([a-z0-9-]+)\.on\.aws$")


def region_of(function_url: str) -> str | None:
    """The region in a function URL's host (`<id>.lambda-url.<region>.on.aws`), if it is one."""
    m = _URL_REGION.match(urllib.parse.urlsplit(function_url).hostname or "")
    return m.group(1) if m else None


def console(
    url: str | None,
    *,
    port: int = 0,
    region: str | None = None,
    profile: str | None = None,
    endpoints: Path | None = None,
) -> AdminServer:
    """The console `se admin` serves: for `url` (a deployed stack's function URL; default
    REPROCESS_FUNCTION_URL, as `se reprocess` finds it) with the operator's credentials from botocore's
    chain (`profile`, env, SSO, instance role), or, without either, for the local stack's
    `ReprocessFunctionUrl` in `endpoints` with the stack's placeholder keys. ValueError says what is
    missing. Search: SEARCH_FUNCTION_URL when set, else on the local stack its index searched in this
    process (`local_search`)."""
    import botocore.exceptions

    keys = None
    search: SearchBackend | None = None
    origins: tuple[str, ...] = ()
    search_url = os.environ.get("SEARCH_FUNCTION_URL") or None
    url = url or os.environ.get("REPROCESS_FUNCTION_URL") or None
    if url is None:
        if endpoints is None or not endpoints.is_file():
            raise ValueError(f"no --url and no local stack ({endpoints}): `se stack up` first, or pass --url")
        ep = json.loads(endpoints.read_text())
        url = ep.get("ReprocessFunctionUrl") or (ep.get("function_urls") or {}).get("reprocess")
        if not url:
            raise ValueError(f"the local stack's {endpoints.name} has no ReprocessFunctionUrl")
        if ep.get("AWS_ACCESS_KEY_ID") and ep.get("AWS_SECRET_ACCESS_KEY"):
            keys = {
                k: ep[k]
                for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
                if k in ep
            }
        if search_url is None:
            search, origins = local_search(ep)
    try:
        credentials, session_region = credentials_from_session(profile, keys)
    except botocore.exceptions.BotoCoreError as e:
        raise ValueError(f"AWS credentials: {e}") from None
    return AdminServer(
        url,
        credentials,
        region or session_region or region_of(url) or "",
        port=port,
        search=search,
        search_url=search_url,
        media_origins=origins,
    )


def local_search(endpoints: Mapping[str, Any]) -> tuple[SearchBackend | None, tuple[str, ...]]:
    """The local stack's search, in this process: (backend, the origin its media URLs point at). A stack
    whose models or settings do not let the search service start gives (None, ()) and a warning: the
    rest of the console works without it."""
    from shared.errors import EmbeddingError

    env = {k: str(v) for k, v in endpoints.items() if isinstance(v, str)}
    try:
        from shared.search.api import service_from_env

        service = service_from_env(env)
    except (EmbeddingError, ImportError) as e:
        log.warning("the Search panel is off: %s", e)
        return None, ()
    endpoint = urllib.parse.urlsplit(env.get("AWS_ENDPOINT_URL", ""))
    origin = f"{endpoint.scheme}://{endpoint.netloc}" if endpoint.netloc else AWS_MEDIA_ORIGIN
    return in_process_search(service), (origin,)


def credentials_from_session(
    profile: str | None = None, keys: Mapping[str, str] | None = None
) -> tuple[Any, str | None]:
    """The operator's credentials and region through boto3's chain (or explicit placeholder keys, for the
    local stack)."""
    import boto3

    if keys:
        session = boto3.Session(
            aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
            region_name=keys.get("AWS_DEFAULT_REGION"),
        )
    else:
        session = boto3.Session(profile_name=profile) if profile else boto3.Session()
    return session.get_credentials(), session.region_name


__all__ = [
    "BIND_HOST",
    "MAX_BODY",
    "ROUTES",
    "AdminServer",
    "Refused",
    "clean_body",
    "clean_query",
    "console",
    "content_security_policy",
    "credentials_from_session",
    "in_process_search",
    "local_search",
    "match_route",
    "region_of",
]
