"""moto's server as released, for the local stack and the tests (dev-only).

    python -m shared.dev.moto_server -H 127.0.0.1 -p 5000

runs moto's own WSGI app (the one `moto_server` runs) on cheroot's threaded WSGI server: HTTP/1.1
keep-alive, as AWS's endpoints answer (werkzeug's development server, which `moto_server` uses, sends
`Connection: close` with every response, so each boto3 call paid for a new TCP connection). One thing is
added around the app, none inside it: DynamoDB requests are served one at a time. DynamoDB applies each
write atomically, its condition checked against the latest item; moto's backend takes no lock, so on a
threaded server two concurrent conditional writes can both pass against the same old item (16 concurrent
claims of one item: 3 won). moto holds the GIL for a request's whole handling anyway, so one DynamoDB
request at a time costs little; S3 and SQS requests still run side by side.
tests/integration/pipeline/test_moto_server.py checks the claim race, exact S3 keys, kept connections
and an empty file's upload.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def one_dynamodb_request_at_a_time(app: WSGIApp) -> WSGIApp:
    """`app` with DynamoDB's requests (JSON protocol: an `X-Amz-Target: DynamoDB_...` header) serialised;
    the response body is read inside the lock, so a write is whole before the next request sees it."""
    lock = threading.Lock()

    def serialised(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with lock:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return serialised


def moto_app() -> WSGIApp:
    """moto's WSGI app (the one `moto_server` runs) behind the DynamoDB lock."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    app = one_dynamodb_request_at_a_time(DomainDispatcherApplication(create_backend_app))

    def served(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # moto reads the undecoded request target (S3 keys with %XX or "?" in them) from werkzeug's
        # RAW_URI; WSGI servers other than werkzeug's name it REQUEST_URI
        environ.setdefault("RAW_URI", environ.get("REQUEST_URI", ""))
        return app(environ, start_response)

    return served


def make_server(host: str, port: int, threads: int = 16) -> Any:
    """The app on cheroot's threaded HTTP/1.1 server (not started: `.safe_start()` serves, `.stop()`)."""
    from cheroot.wsgi import Server

    os.environ.setdefault("MOTO_PORT", str(port))  # moto builds some URLs (SQS queue URLs) from it
    server = Server((host, port), moto_app(), numthreads=threads, server_name="moto")
    server.prepare()  # binds now: the port is taken when this returns
    return server


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="moto's server for the local stack (see module docs)")
    ap.add_argument("-H", "--host", default="127.0.0.1")
    ap.add_argument("-p", "--port", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=16)
    args = ap.parse_args(argv if argv is not None else sys.argv[1:])
    make_server(args.host, args.port, args.threads).serve()


if __name__ == "__main__":
    main()
