"""URL and address checks of the SSRF guard: literal IPs and parsing only, no sockets."""

import ipaddress

import pytest

from shared.errors import FetchError, ForbiddenURL
from shared.media.fetch import HTTPStatusError, check_ip_allowed, parse_url, temp_workdir

pytestmark = pytest.mark.unit

REFUSED = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:169.254.169.254",
    "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
    "2001:db8::1",  # documentation
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "52.95.110.1", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e"]


@pytest.mark.parametrize("ip", REFUSED)
def test_non_public_addresses_are_refused(ip: str) -> None:
    with pytest.raises(ForbiddenURL, match="not a public address"):
        check_ip_allowed(ip, allow_private=False)


@pytest.mark.parametrize("ip", ALLOWED)
def test_public_addresses_pass(ip: str) -> None:
    check_ip_allowed(ip, allow_private=False)
    check_ip_allowed(ipaddress.ip_address(ip), allow_private=False)


@pytest.mark.parametrize("ip", ["127.0.0.1", "10.1.2.3", "::1"])
def test_allow_private_is_the_local_stack_switch(ip: str) -> None:
    check_ip_allowed(ip, allow_private=True)


def test_garbage_address_is_refused() -> None:
    with pytest.raises(ForbiddenURL, match="not an IP address"):
        check_ip_allowed("localhost", allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/x",
        "gopher://example.com/",
        "data:text/plain,hi",
        "javascript:alert(1)",
        "example.com/no-scheme",
        "",
    ],
)
def test_only_http_and_https_schemes(url: str) -> None:
    with pytest.raises(ForbiddenURL, match=r"absolute http|empty") as info:
        parse_url(url)
    assert not url or url not in info.value.public_message  # never repeats the URL


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http:///path-only", "absolute http"),
        ("https://user:pw@example.com/x", "credentials"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://[::1/", "not a valid URL"),
    ],
)
def test_malformed_urls(url: str, match: str) -> None:
    with pytest.raises(ForbiddenURL, match=match):
        parse_url(url)


def test_parse_keeps_path_and_query_and_defaults_ports() -> None:
    p = parse_url("HTTPS://Bucket.S3.Amazonaws.com/a/b.mp4?X-Amz-Signature=abc&x=1#frag")
    assert (p.scheme, p.host, p.port, p.target) == (
        "https",
        "bucket.s3.amazonaws.com",
        443,
        "/a/b.mp4?X-Amz-Signature=abc&x=1",
    )
    assert p.host_header == "bucket.s3.amazonaws.com"
    q = parse_url("http://[::1]:8080")
    assert (q.host, q.port, q.target, q.host_header) == ("::1", 8080, "/", "[::1]:8080")
    assert parse_url("http://example.com").port == 80


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(404, False), (403, False), (400, False), (408, True), (429, True), (500, True), (503, True)],
)
def test_status_errors_say_whether_retrying_helps(status: int, retryable: bool) -> None:
    err = HTTPStatusError("x", http_status=status)
    assert isinstance(err, FetchError)
    assert err.retryable is retryable
    assert err.http_status == status
    assert FetchError.retryable is True  # the instance flag does not leak into the class


def test_temp_workdir_is_removed_even_on_error(tmp_path) -> None:
    seen = None
    with pytest.raises(RuntimeError), temp_workdir("media-test-", base=tmp_path) as d:
        seen = d
        (d / "sub").mkdir()
        (d / "sub" / "f.bin").write_bytes(b"x" * 10)
        raise RuntimeError("boom")
    assert seen is not None and seen.parent == tmp_path and seen.name.startswith("media-test-")
    assert not seen.exists()
    with temp_workdir("ok-", base=tmp_path) as d2:
        assert d2.is_dir()
    assert not d2.exists()
