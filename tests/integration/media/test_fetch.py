"""download()/upload() against a local HTTP server on 127.0.0.1 (allow_private=True), and the SSRF
guard refusing private targets before any connection is made."""

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from shared.errors import FetchError, ForbiddenURL, PayloadTooLarge
from shared.media import download, upload
from shared.media import fetch as fetch_module
from shared.media.fetch import HTTPStatusError

pytestmark = pytest.mark.integration

BODY = bytes(range(256)) * 40  # 10240 bytes


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, str, dict[str, str]]]] = []
    uploads: ClassVar[dict[str, tuple[str, bytes]]] = {}

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, dict(self.headers)))
        path = self.path.split("?", 1)[0]
        if path.startswith("/ok"):
            self._send(200, BODY)
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(0, len(BODY), 1000):
                piece = BODY[i : i + 1000]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/big-declared":
            self._send(200, b"", {"Content-Length": str(10**9)})
        elif path == "/big-undeclared":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(20):
                self.wfile.write(BODY)
        elif path == "/short":
            self._send(200, BODY[:500], {"Content-Length": str(len(BODY))})
        elif path == "/slow-headers":
            time.sleep(2)
            self._send(200, BODY)
        elif path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(30):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        elif path.startswith("/redirect/"):
            n = int(path.rsplit("/", 1)[1])
            self._send(302, b"", {"Location": "/ok/final.mp4" if n == 0 else f"/redirect/{n - 1}"})
        elif path == "/to-file":
            self._send(301, b"", {"Location": "file:///etc/passwd"})
        elif path == "/to-other-host":
            port = self.server.server_address[1]
            self._send(307, b"", {"Location": f"http://127.0.0.2:{port}/ok"})
        elif path == "/host":
            self._send(200, self.headers["Host"].encode())
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), b"nope")
        else:
            self._send(404, b"not found")

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(("PUT", self.path, dict(self.headers)))
        if self.path.startswith("/put/"):
            self.uploads[self.path] = (self.headers["Content-Type"], body)
            self._send(200)
        elif self.path == "/put-redirect":
            self._send(307, b"", {"Location": "/put/elsewhere"})
        else:
            self._send(403, b"denied")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "dest"
    d.mkdir()
    return d


def get(url: str, dest: Path, **kw: object) -> Path:
    args = {"max_bytes": 1_000_000, "timeout_s": 5.0, "allow_private": True, **kw}
    return download(url, dest, **args)  # type: ignore[arg-type]


def test_download_ok(server: str, dest: Path) -> None:
    path = get(f"{server}/ok/clip.MP4?X-Amz-Signature=abc", dest)
    assert path.parent == dest and path.suffix == ".mp4"
    assert path.read_bytes() == BODY
    assert list(dest.iterdir()) == [path]


def test_download_chunked(server: str, dest: Path) -> None:
    assert get(f"{server}/chunked", dest).read_bytes() == BODY


@pytest.mark.parametrize(("status", "retryable"), [(404, False), (403, False), (429, True), (503, True)])
def test_http_errors(server: str, dest: Path, status: int, retryable: bool) -> None:
    with pytest.raises(HTTPStatusError) as err:
        get(f"{server}/status/{status}", dest)
    assert err.value.http_status == status and err.value.retryable is retryable
    assert f"HTTP {status}" in err.value.public_message
    assert list(dest.iterdir()) == []


def test_declared_oversize_is_refused_before_reading(server: str, dest: Path) -> None:
    with pytest.raises(PayloadTooLarge, match="1000000000 bytes"):
        get(f"{server}/big-declared", dest)
    assert list(dest.iterdir()) == []


def test_undeclared_oversize_is_cut_while_streaming(server: str, dest: Path) -> None:
    with pytest.raises(PayloadTooLarge, match="over the limit of 50000 bytes"):
        get(f"{server}/big-undeclared", dest, max_bytes=50_000)
    assert list(dest.iterdir()) == []
    assert get(f"{server}/ok", dest, max_bytes=len(BODY)).stat().st_size == len(BODY)  # exactly at the cap


def test_short_body_is_a_retryable_failure(server: str, dest: Path) -> None:
    with pytest.raises(FetchError) as err:
        get(f"{server}/short", dest)
    assert err.value.retryable
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("path", ["/slow-headers", "/drip"])
def test_timeouts_are_retryable_and_bounded(server: str, dest: Path, path: str) -> None:
    start = time.monotonic()
    with pytest.raises(FetchError, match="timed out") as err:
        get(f"{server}{path}", dest, timeout_s=0.5)
    assert time.monotonic() - start < 1.5
    assert err.value.retryable and not isinstance(err.value, HTTPStatusError)
    assert list(dest.iterdir()) == []


def test_redirects_are_followed_a_few_times(server: str, dest: Path) -> None:
    path = get(f"{server}/redirect/2", dest)  # 3 redirects
    assert path.read_bytes() == BODY and path.suffix == ".mp4"
    with pytest.raises(HTTPStatusError, match="more than 3 redirects") as err:
        get(f"{server}/redirect/3", dest)
    assert not err.value.retryable
    assert list(dest.iterdir()) == [path]


def test_redirect_to_file_scheme_is_refused(server: str, dest: Path) -> None:
    with pytest.raises(ForbiddenURL, match=r"absolute http\(s\) URL"):
        get(f"{server}/to-file", dest)
    assert list(dest.iterdir()) == []


def test_redirect_target_address_is_rechecked(
    server: str, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fetch_module.check_ip_allowed

    def only_first_loopback(ip: str, *, allow_private: bool) -> None:
        # Treat 127.0.0.1 as "the public origin"; everything else gets the real, strict rule.
        if ip != "127.0.0.1":
            real(ip, allow_private=False)

    monkeypatch.setattr(fetch_module, "check_ip_allowed", only_first_loopback)
    Handler.seen.clear()
    with pytest.raises(ForbiddenURL, match=r"127\.0\.0\.2 is not a public address"):
        get(f"{server}/to-other-host", dest, allow_private=False)
    assert [p for _, p, _ in Handler.seen] == ["/to-other-host"]  # 127.0.0.2 was never contacted
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    [
        "{server}/ok",
        "http://localhost:{port}/ok",
        "http://[::1]:{port}/ok",
        "http://10.0.0.1/ok",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]:{port}/ok",
        "file:///etc/passwd",
    ],
)
def test_private_targets_are_refused_without_connecting(server: str, dest: Path, url: str) -> None:
    port = server.rsplit(":", 1)[1]
    Handler.seen.clear()
    with pytest.raises(ForbiddenURL):
        download(url.format(server=server, port=port), dest, max_bytes=1000, timeout_s=2)
    with pytest.raises(ForbiddenURL):
        upload(url.format(server=server, port=port), b"x", content_type="text/plain", timeout_s=2)
    assert Handler.seen == []
    assert list(dest.iterdir()) == []


def test_resolves_once_and_connects_to_that_address(
    server: str, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second DNS answer (rebinding) is never used: the checked address is the one connected to."""
    port = int(server.rsplit(":", 1)[1])
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1", "10.9.9.9"])
    lookups: list[str] = []

    def fake_getaddrinfo(host: str, *args: object, **kwargs: object) -> list:
        if host == "media.example.test":
            lookups.append(host)
            ip = next(answers)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    path = get(f"http://media.example.test:{port}/host", dest)
    assert path.read_bytes() == f"media.example.test:{port}".encode()  # Host header kept
    assert lookups == ["media.example.test"]


def test_upload_puts_the_bytes(server: str) -> None:
    upload(
        f"{server}/put/a.npy?sig=1",
        b"\x93NUMPY",
        content_type="application/octet-stream",
        timeout_s=5,
        allow_private=True,
    )
    assert Handler.uploads["/put/a.npy?sig=1"] == ("application/octet-stream", b"\x93NUMPY")


@pytest.mark.parametrize(("path", "status"), [("/denied", 403), ("/put-redirect", 307)])
def test_upload_failures(server: str, path: str, status: int) -> None:
    with pytest.raises(HTTPStatusError) as err:
        upload(f"{server}{path}", b"x", content_type="text/plain", timeout_s=5, allow_private=True)
    assert err.value.http_status == status and not err.value.retryable
    assert "/put/elsewhere" not in Handler.uploads


def test_connection_refused_is_retryable(dest: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    with pytest.raises(FetchError, match="could not connect") as err:
        get(f"http://127.0.0.1:{port}/x", dest)
    assert err.value.retryable
    assert list(dest.iterdir()) == []
