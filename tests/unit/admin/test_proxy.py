"""`se admin`'s proxy: what it forwards to the function URL (signed, cleaned) and what it refuses.
Against a stand-in function URL that checks SigV4 as the local stack's does (loopback only)."""

from __future__ import annotations

import http.client
import http.server
import json
import signal
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from botocore.credentials import Credentials

from handlers import cli
from shared.admin import server as admin
from shared.aws import sigv4
from tests.unit.admin.fake_api import REGION, SECRETS, FakeApi

pytestmark = pytest.mark.unit  # loopback servers only

CREDS = Credentials(*next(iter(SECRETS.items())))


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi().start()
    yield fake
    fake.stop()


@pytest.fixture
def console(api: FakeApi) -> Iterator[admin.AdminServer]:
    with admin.AdminServer(api.url, CREDS, REGION) as srv:
        yield srv


def call(
    srv: admin.AdminServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    hdrs.update(headers or {})
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    out = resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    conn.close()
    return out


def test_forwards_known_routes_signed_and_nothing_of_the_browser(console: admin.AdminServer, api: FakeApi):
    status, headers, body = call(
        console,
        "GET",
        "/api/items?owner_id=o1",
        headers={"Cookie": "session=secret", "Authorization": "Bearer browser", "X-Forwarded-For": "1.2.3.4"},
    )
    assert status == 200 and [i["item_id"] for i in json.loads(body)["items"]] == ["a", "b"]
    assert "set-cookie" not in headers  # the upstream's own headers stay upstream
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    rec = api.requests[-1]
    assert rec["akid"] == CREDS.access_key and rec["path"] == "/reprocess/items?owner_id=o1"
    sent = {k.lower() for k in rec["headers"]}
    assert "cookie" not in sent and "x-forwarded-for" not in sent
    assert rec["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTESTADMIN/")

    status, _, body = call(
        console, "POST", "/api/reprocess", b'{"scope": "owner", "owner_id": "o1", "dry_run": true}'
    )
    assert status == 200 and json.loads(body)["status"] == "dry_run"
    assert api.requests[-1]["body"] == b'{"scope":"owner","owner_id":"o1","dry_run":true}'
    status, _, body = call(console, "POST", "/api/reprocess", b'{"scope": "owner", "owner_id": "o1"}')
    run_id = json.loads(body)["run_id"]
    assert status == 202
    status, _, body = call(console, "GET", f"/api/runs/{run_id}")
    assert status == 200 and json.loads(body)["run_id"] == run_id
    status, _, body = call(console, "POST", "/api/reprocess", b'{"scope": "owner"}')
    assert status == 400 and json.loads(body)["error"]["field"] == "owner_id"  # the API's errors pass through


def test_direct_call_without_a_valid_signature_is_refused(api: FakeApi):
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(api.url + "/owners", timeout=10)
    assert e.value.code == 403 and "not signed" in api.requests[-1]["refused"]
    forged = sigv4.sign("GET", api.url + "/owners", b"", Credentials(CREDS.access_key, "wrong"), REGION)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(api.url + "/owners", headers=forged), timeout=10)
    assert e.value.code == 403 and "does not match" in api.requests[-1]["refused"]
    # a signature for one request does not carry over to another
    good = sigv4.sign("GET", api.url + "/owners", b"", CREDS, REGION)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(api.url + "/runs", headers=good), timeout=10)
    assert e.value.code == 403


def test_a_console_with_wrong_credentials_shows_the_refusal(api: FakeApi):
    with admin.AdminServer(api.url, Credentials(CREDS.access_key, "wrong"), REGION) as srv:
        status, _, body = call(srv, "GET", "/api/owners")
    assert status == 403 and json.loads(body)["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/secrets", 404),
        ("GET", "/api/../reprocess", 404),
        ("GET", "/api/runs/../../owners", 404),
        ("GET", "/api/runs/a%2Fb", 404),
        ("DELETE", "/api/runs", 405),
        ("PUT", "/api/reprocess", 405),
        ("GET", "/api/reprocess", 405),
        ("OPTIONS", "/api/reprocess", 405),
        ("GET", "/api/items?owner_id=o1&admin=1", 400),
        ("GET", "/api/items?owner_id=o1&owner_id=o2", 400),
        ("GET", "/api/owners?x=1", 400),
        ("GET", "/etc/passwd", 404),
        ("GET", "/static/../server.py", 404),
        ("GET", "/static/server.py", 404),
    ],
)
def test_unknown_routes_methods_and_parameters_never_reach_the_api(
    console: admin.AdminServer, api: FakeApi, method: str, path: str, status: int
):
    got, _, body = call(console, method, path)
    assert got == status, body
    assert api.requests == []


def test_bodies_are_bounded_json_objects(console: admin.AdminServer, api: FakeApi):
    big = json.dumps({"scope": "all", "pad": "x" * admin.MAX_BODY}).encode()
    assert call(console, "POST", "/api/reprocess", big)[0] == 413
    assert call(console, "POST", "/api/reprocess", b"[1, 2]")[0] == 400
    assert call(console, "POST", "/api/reprocess", b"scope=all")[0] == 400
    assert call(console, "POST", "/api/reprocess", b"\xff\xfe")[0] == 400
    # a form post (what a cross-site page can send without a preflight) is refused
    assert (
        call(console, "POST", "/api/reprocess", b'{"scope":"all"}', {"Content-Type": "text/plain"})[0] == 415
    )
    # chunked: no Content-Length to check against the cap
    conn = http.client.HTTPConnection("127.0.0.1", console.port, timeout=10)
    conn.request(
        "POST",
        "/api/reprocess",
        body=iter([b'{"scope":', b'"all"}']),
        headers={"Content-Type": "application/json"},
    )
    assert conn.getresponse().status == 411
    conn.close()
    assert api.requests == []


def test_cross_origin_and_rebound_hosts_are_refused(console: admin.AdminServer, api: FakeApi):
    body = b'{"scope": "all"}'
    assert call(console, "POST", "/api/reprocess", body, {"Origin": "https://evil.example"})[0] == 403
    assert call(console, "GET", "/api/owners", headers={"Sec-Fetch-Site": "cross-site"})[0] == 403
    assert call(console, "GET", "/api/owners", headers={"Host": "evil.example:80"})[0] == 403  # DNS rebinding
    assert call(console, "GET", "/", headers={"Host": "evil.example"})[0] == 403
    assert api.requests == []
    ok = call(console, "GET", "/api/owners", headers={"Origin": f"http://127.0.0.1:{console.port}"})
    assert ok[0] == 200


def test_serves_only_its_own_files(console: admin.AdminServer):
    status, headers, page = call(console, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script src="/static/app.js"' in page
    assert b"http://" not in page and b"https://" not in page  # nothing loaded from elsewhere
    status, _, js = call(console, "GET", "/static/app.js")
    assert status == 200 and b"innerHTML" not in js and b"eval(" not in js
    status, _, cfg = call(console, "GET", "/config.json")
    assert json.loads(cfg) == {"api": console.function_url, "region": REGION, "search": False}
    assert CREDS.secret_key.encode() not in cfg + page + js


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "localhost", "192.168.1.10", "127.0.0.2"])
def test_binds_127_0_0_1_only(api: FakeApi, host: str):
    with pytest.raises(ValueError, match=r"127\.0\.0\.1 only"):
        admin.AdminServer(api.url, CREDS, REGION, host=host)


def test_listens_on_loopback_only_and_the_cli_has_no_host_flag(api: FakeApi):
    with admin.AdminServer(api.url, CREDS, REGION) as srv:
        assert srv.server.server_address[0] == "127.0.0.1"
        addrs = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
        for addr in addrs - {"127.0.0.1"}:
            with pytest.raises(OSError):
                socket.create_connection((addr, srv.port), timeout=2).close()
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["admin", "--host", "0.0.0.0"])
    args = cli.build_parser().parse_args(
        ["admin", "--url", "https://x.lambda-url.us-east-1.on.aws/", "--port", "0"]
    )
    assert args.port == 0 and args.url.startswith("https://")


def test_refuses_a_plain_http_function_url_off_this_machine_and_missing_credentials():
    with pytest.raises(ValueError, match="https"):
        admin.AdminServer("http://example.com/", CREDS, REGION)
    with pytest.raises(ValueError, match="credentials"):
        admin.AdminServer("https://x.lambda-url.us-east-1.on.aws/", None, REGION)
    with pytest.raises(ValueError, match="region"):
        admin.AdminServer("https://x.lambda-url.us-east-1.on.aws/", CREDS, "")


def test_upstream_down_is_a_clear_502():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with admin.AdminServer(f"http://127.0.0.1:{port}/reprocess", CREDS, REGION, timeout_s=2) as srv:
        status, _, body = call(srv, "GET", "/api/owners")
    assert status == 502 and json.loads(body)["error"]["code"] == "upstream_unreachable"


def test_a_redirect_is_not_followed_with_the_signature():
    hits: list[str] = []

    class Redirect(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

    up = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=up.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with admin.AdminServer(f"http://127.0.0.1:{up.server_address[1]}/fn", CREDS, REGION) as srv:
            status, _, body = call(srv, "GET", "/api/owners")
    finally:
        up.shutdown()
        up.server_close()
    assert (
        hits == ["/fn/owners"] and status == 502 and json.loads(body)["error"]["code"] == "upstream_redirect"
    )


def test_refreshable_credentials_are_frozen_per_request(api: FakeApi):
    from botocore.credentials import RefreshableCredentials

    calls = []

    def refresh() -> dict[str, str]:
        calls.append(1)
        return {
            "access_key": CREDS.access_key,
            "secret_key": CREDS.secret_key,
            "token": "session-token",
            "expiry_time": "2999-01-01T00:00:00Z",
        }

    creds = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    with admin.AdminServer(api.url, creds, REGION) as srv:
        assert call(srv, "GET", "/api/owners")[0] == 200
    assert api.requests[-1]["headers"]["X-Amz-Security-Token"] == "session-token"


def test_se_admin_signs_with_the_operators_credential_chain(api: FakeApi, tmp_path):
    """`se admin --url ...` as an operator runs it: credentials and region from the environment."""
    import os
    import subprocess
    import sys

    from shared.settings import REPO_ROOT

    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in ("HOME", "PYTHONPATH")
    }
    env.update(
        HOME=str(tmp_path),  # no ~/.aws of this machine's
        PYTHONPATH=str(REPO_ROOT),
        AWS_ACCESS_KEY_ID=CREDS.access_key,
        AWS_SECRET_ACCESS_KEY=CREDS.secret_key,
        AWS_DEFAULT_REGION=REGION,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "handlers.cli", "admin", "--url", api.url, "--port", "0"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("admin console: http://127.0.0.1:"), line
        url = line.split()[2]
        with urllib.request.urlopen(url + "api/owners", timeout=10) as resp:
            assert [o["owner_id"] for o in json.loads(resp.read())["owners"]] == ["o1"]
        assert api.requests[-1]["akid"] == CREDS.access_key
        assert CREDS.secret_key not in line
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "admin console stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_se_admin_finds_the_local_stack_and_signs_with_its_keys(api: FakeApi, tmp_path, monkeypatch):
    monkeypatch.delenv("REPROCESS_FUNCTION_URL", raising=False)
    ep = tmp_path / "endpoints.json"
    with pytest.raises(ValueError, match="se stack up"):
        admin.console(None, endpoints=ep)
    ep.write_text(json.dumps({"AWS_DEFAULT_REGION": REGION}))
    with pytest.raises(ValueError, match="ReprocessFunctionUrl"):
        admin.console(None, endpoints=ep)
    ep.write_text(
        json.dumps(
            {
                "ReprocessFunctionUrl": api.url,
                "AWS_ACCESS_KEY_ID": CREDS.access_key,
                "AWS_SECRET_ACCESS_KEY": CREDS.secret_key,
                "AWS_DEFAULT_REGION": REGION,
            }
        )
    )
    with admin.console(None, endpoints=ep) as srv:
        assert srv.region == REGION and srv.function_url == api.url
        assert call(srv, "GET", "/api/runs")[0] == 200
    assert api.requests[-1]["akid"] == CREDS.access_key
    assert admin.region_of("https://abc123.lambda-url.eu-west-1.on.aws/") == "eu-west-1"
    assert admin.region_of("http://127.0.0.1:1/reprocess") is None


def test_through_the_local_stacks_function_url_server():
    """Against the local stack's own function-URL server (the SigV4 check Lambda makes for AWS_IAM):
    the console's signed calls reach the function, unsigned or forged ones never do."""
    from shared.dev.stack import FunctionUrls

    events: list[dict] = []

    def fn(event: dict, context: object) -> dict:
        events.append(event)
        return {"statusCode": 200, "body": json.dumps({"runs": [], "path": event["rawPath"]})}

    urls = FunctionUrls({"reprocess": fn}, iam={"reprocess": dict(SECRETS)}).start()
    try:
        url = urls.url("reprocess")
        assert status_of(url + "/runs") == 403
        forged = sigv4.sign("GET", url + "/runs", b"", Credentials(CREDS.access_key, "wrong"), REGION)
        assert status_of(url + "/runs", forged) == 403
        assert events == []  # never reached the function
        with admin.AdminServer(url, CREDS, REGION) as srv:
            status, _, body = call(srv, "GET", "/api/runs?limit=5", headers={"Cookie": "c=1"})
            assert status == 200 and json.loads(body)["path"] == "/runs"
            status, _, body = call(srv, "POST", "/api/reprocess", b'{"scope":"all","dry_run":true}')
            assert status == 200
        assert [e["requestContext"]["http"]["method"] for e in events] == ["GET", "POST"]
        assert events[0]["rawQueryString"] == "limit=5" and "cookie" not in events[0]["headers"]
        assert json.loads(events[1]["body"]) == {"scope": "all", "dry_run": True}
    finally:
        urls.stop()


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_a_function_url_server_that_never_started_stops_at_once():
    """A local stack that fails before its function-URL server starts stops its parts on the way out;
    socketserver's shutdown() waits for a serve_forever that never ran, so that hung the stack."""
    import threading

    from shared.dev.stack import FunctionUrls

    urls = FunctionUrls({})
    done = threading.Event()
    threading.Thread(target=lambda: (urls.stop(), done.set()), daemon=True).start()
    assert done.wait(5)


# ---------------------------------------------------------------------- the Search panel's route


class Backend:
    """Records what the console hands its search backend; answers like the search API."""

    def __init__(self) -> None:
        self.requests: list[dict] = []

    def __call__(self, request: dict) -> tuple[int, bytes]:
        self.requests.append(request)
        if request.get("k") == 0:
            return 400, admin.error_body("invalid_input", "k: must be an integer within 1..50", "k")
        return 200, json.dumps({"hits": [], "took_ms": 1.0, "spec_version": "v", "skipped": []}).encode()


def test_search_goes_to_its_backend_checked_like_every_call(api: FakeApi):
    backend = Backend()
    origin = "http://127.0.0.1:5000"
    with admin.AdminServer(api.url, CREDS, REGION, search=backend, media_origins=(origin,)) as srv:
        req = {"owner_id": "o1", "text": "ferry", "k": 3}
        status, headers, body = call(srv, "POST", "/api/search", json.dumps(req).encode())
        assert status == 200 and json.loads(body)["spec_version"] == "v"
        assert backend.requests == [req]  # parsed and re-serialised: the object, nothing else
        status, _, body = call(srv, "POST", "/api/search", json.dumps({**req, "k": 0}).encode())
        assert status == 400 and json.loads(body)["error"]["field"] == "k"
        # refused before the backend: method, origin, content type, size, JSON, query string
        assert call(srv, "GET", "/api/search")[0] == 405
        assert call(srv, "POST", "/api/search", b"{}", {"Origin": "https://evil.example"})[0] == 403
        assert call(srv, "POST", "/api/search", b"{}", {"Content-Type": "text/plain"})[0] == 415
        assert call(srv, "POST", "/api/search", b"x" * (admin.MAX_BODY + 1))[0] == 413
        assert call(srv, "POST", "/api/search", b"[1]")[0] == 400
        assert call(srv, "POST", "/api/search?owner_id=o1", b"{}")[0] == 400
        assert len(backend.requests) == 2 and api.requests == []  # never forwarded to the admin API
        # the page may show images and play media from the presigned URLs' origin, and nothing more
        csp = headers["content-security-policy"]
        assert f"img-src 'self' {origin};" in csp and f"media-src {origin};" in csp
        assert "script-src 'self';" in csp and "connect-src 'self';" in csp
        assert json.loads(call(srv, "GET", "/config.json")[2])["search"] is True


def test_without_a_backend_search_is_503_and_the_page_plays_nothing(console: admin.AdminServer):
    status, headers, body = call(console, "POST", "/api/search", b'{"owner_id": "o1", "text": "x"}')
    assert status == 503 and json.loads(body)["error"]["code"] == "search_unavailable"
    assert "media-src 'none';" in headers["content-security-policy"]


def test_a_deployed_stacks_search_function_url_is_called_signed(api: FakeApi):
    search_url = api.url.replace("/reprocess", "/search-fn")
    with admin.AdminServer(api.url, CREDS, REGION, search_url=search_url) as srv:
        status, headers, _ = call(srv, "POST", "/api/search", b'{"owner_id": "o1", "text": "ferry"}')
        assert status == 404  # the stand-in has no search: its answer is passed on
        assert "https://*.amazonaws.com" in headers["content-security-policy"]
    (rec,) = api.requests
    assert rec["akid"] == CREDS.access_key and rec["path"] == "/search-fn/search"
    assert json.loads(rec["body"]) == {"owner_id": "o1", "text": "ferry"}
    with pytest.raises(ValueError, match="https"):
        admin.AdminServer(api.url, CREDS, REGION, search_url="http://search.example/")
    with pytest.raises(ValueError, match="one search backend"):
        admin.AdminServer(api.url, CREDS, REGION, search=Backend(), search_url=search_url)
