"""moto's server with one emulator cost removed: DynamoDB attribute values encoded directly.

moto 5.2 encodes every response through a generic, botocore-model-driven serializer. For DynamoDB that
walks each attribute value as a 10-member structure (S, N, B, SS, NS, BS, M, L, NULL, BOOL), looking
each member up through alias providers: about 0.5 ms per attribute, so a 2,000-row index query spends
~9 s of its ~11 s encoding (cProfile: `moto/core/serialize.py` get_possible_keys/get_value), and every
ledger read of the local stack is bound by it. An attribute value already is its wire form once its
binary members are base64-encoded (DynamoDB's JSON protocol), so `install()` encodes the
`AttributeValue` shape in one recursive pass and leaves every other shape, every error and every
other service to moto's serializer. tests/unit/pipeline/test_moto_fast.py checks that responses parse to
the same values with and without it.

    python -m shared.dev.moto_fast -H 127.0.0.1 -p 5000     # moto.server's own arguments
"""

from __future__ import annotations

import base64
import os
import sys
import threading
from typing import Any

_installed = False
_DYNAMODB = ("dynamodb", "dynamodbstreams")  # other services have shapes named AttributeValue too


def _b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode("utf-8") if isinstance(value, str) else value).decode("ascii")


def encode_attribute(value: Any) -> Any:
    """One DynamoDB attribute value ({"S": ...}, {"M": {...}}, ...) as DynamoDB's JSON protocol sends it."""
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError("an attribute value has exactly one type member")
    ((kind, inner),) = value.items()
    if kind == "M":
        return {"M": {k: encode_attribute(v) for k, v in inner.items()}}
    if kind == "L":
        return {"L": [encode_attribute(v) for v in inner]}
    if kind == "B":
        return {"B": _b64(inner)}
    if kind == "BS":
        return {"BS": [_b64(v) for v in inner]}
    return {kind: inner}


def install() -> None:
    """Encode DynamoDB's AttributeValue shape directly in moto's JSON serializer (idempotent)."""
    global _installed
    if _installed:
        return
    from moto.core.serialize import BaseJSONSerializer

    generic = BaseJSONSerializer._serialize_type_structure

    def _serialize_type_structure(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if (
            shape.name == "AttributeValue"
            and key
            and isinstance(value, dict)
            and len(value) == 1
            and self.operation_model.service_model.service_name in _DYNAMODB
        ):
            self._default_serialize(serialized, encode_attribute(value), shape, key)
            return
        generic(self, serialized, value, shape, key)

    BaseJSONSerializer._serialize_type_structure = _serialize_type_structure  # type: ignore[method-assign]
    _installed = True


def serve(host: str, port: int, threads: int = 16) -> None:
    """moto's WSGI app (the one `moto.server` runs) under waitress: HTTP/1.1 keep-alive, as AWS's
    endpoints answer. werkzeug's development server, which `moto.server` uses, closes every connection
    (it drains the socket after each response), so each boto3 call paid for a new TCP connection: about
    a third of botocore's CPU per call here. One difference, stated: like werkzeug's server without
    moto's request handler, waitress drops request headers whose names contain an underscore (S3
    user metadata such as `x-amz-meta-my_key`; nothing here sends one)."""
    import waitress
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    os.environ.setdefault("MOTO_PORT", str(port))
    moto_app = DomainDispatcherApplication(create_backend_app)
    moto_app.debug = True  # type: ignore[attr-defined]

    dynamodb = threading.Lock()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        # moto reads the undecoded request target from werkzeug's RAW_URI (S3 keys with %XX or "?"
        # in them); waitress names it REQUEST_URI
        environ.setdefault("RAW_URI", environ.get("REQUEST_URI", ""))
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            # DynamoDB applies each write atomically (its condition is checked against the latest
            # item); moto does not lock, so two concurrent conditional writes can both pass on the
            # same old item. One DynamoDB request at a time restores that (moto holds the GIL anyway).
            with dynamodb:
                return list(moto_app(environ, start_response))
        return moto_app(environ, start_response)

    waitress.serve(app, host=host, port=port, threads=threads, connection_limit=1000, ident=None, _quiet=True)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="moto's server for the local stack (see module docs)")
    ap.add_argument("-H", "--host", default="127.0.0.1")
    ap.add_argument("-p", "--port", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=16)
    args = ap.parse_args(argv if argv is not None else sys.argv[1:])
    install()
    serve(args.host, args.port, args.threads)


if __name__ == "__main__":
    main()
