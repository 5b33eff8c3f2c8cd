"""HTTP proxy events in, proxy responses out (Lambda function URLs and API Gateway).

Accepted event shapes:
- function URL / API Gateway HTTP API, payload format 2.0: `version: "2.0"`,
  `requestContext.http.method`, lower-case `headers`, `body`, `isBase64Encoded`;
- API Gateway REST API proxy (payload format 1.0): `httpMethod`, `headers` in any case, `body`,
  `isBase64Encoded`.

Anything without a `requestContext` is a direct invocation, whose event *is* the payload. The
response shape (`statusCode`, `headers`, `body`, `isBase64Encoded`) is the same for both formats.
Nothing here is specific to text embedding.

Hostile events get a 4xx, never a 500: a body over the size limit is refused before it is decoded
or parsed (413), `isBase64Encoded` must be a JSON boolean, header values must be strings, and JSON
nested too deeply or with integers of more digits than Python converts is a 400.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from shared.errors import EmbeddingError, InvalidInput, PayloadTooLarge

JSON_CONTENT_TYPE = "application/json"


class MethodNotAllowed(InvalidInput):
    status = 405
    code = "method_not_allowed"


class UnsupportedMediaType(InvalidInput):
    status = 415
    code = "unsupported_media_type"


def is_proxy_event(event: object) -> bool:
    """True for a function-URL / API Gateway proxy event, False for a direct invocation payload."""
    return isinstance(event, Mapping) and isinstance(event.get("requestContext"), Mapping)


def http_method(event: Mapping[str, Any]) -> str:
    """The request method of a v1 or v2 proxy event ('' when absent or not a string)."""
    http = event["requestContext"].get("http")
    method = http.get("method") if isinstance(http, Mapping) else event.get("httpMethod")
    return method.upper() if isinstance(method, str) else ""


def http_path(event: Mapping[str, Any]) -> str:
    """The request path of a v2 (`rawPath`) or v1 (`path`) proxy event, without a trailing slash."""
    path = event.get("rawPath", event.get("path"))
    return path.rstrip("/") if isinstance(path, str) else ""


def _header(event: Mapping[str, Any], name: str) -> str | None:
    headers = event.get("headers")
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        raise InvalidInput("must be an object of strings", field="headers")
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name:
            if not isinstance(value, str):
                raise InvalidInput("must be a string", field=f"headers.{name}")
            return value
    return None


def read_json_body(
    event: Mapping[str, Any], *, max_bytes: int, methods: tuple[str, ...] = ("POST",)
) -> object:
    """Check the method, content type and body size, then decode the (possibly base64) JSON body.

    Raises MethodNotAllowed (405), UnsupportedMediaType (415), PayloadTooLarge (413, a body over
    `max_bytes`, checked before decoding) or InvalidInput (400, field `body` or `isBase64Encoded`).
    A missing Content-Type is accepted (`sam local generate-event` and some clients send none).
    """
    method = http_method(event)
    if method not in methods:
        raise MethodNotAllowed(f"method {method or '(none)'} is not allowed; use {' or '.join(methods)}")
    content_type = _header(event, "content-type")
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != JSON_CONTENT_TYPE and not media.endswith("+json"):
            raise UnsupportedMediaType(
                f"Content-Type {media[:64] or '(empty)'!r} is not supported; send {JSON_CONTENT_TYPE}"
            )
    body = event.get("body")
    if body is None or body == "":
        raise InvalidInput("is empty; send a JSON object", field="body")
    if not isinstance(body, str):
        raise InvalidInput("must be a string", field="body")
    # Characters first (O(1)); bytes only when non-ASCII text could make them differ.
    if len(body) > max_bytes or (
        len(body) * 4 > max_bytes and len(body.encode("utf-8", "surrogatepass")) > max_bytes
    ):
        raise PayloadTooLarge(f"is over {max_bytes} bytes (split the batch)", field="body")
    b64 = event.get("isBase64Encoded", False)
    if not isinstance(b64, bool) and b64 is not None:
        raise InvalidInput("must be true or false (a JSON boolean)", field="isBase64Encoded")
    if b64:
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as e:  # ValueError: non-ASCII characters in the body
            raise InvalidInput("is not valid base64 (isBase64Encoded is true)", field="body") from e
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidInput(f"is not UTF-8 text (byte {e.start})", field="body") from e
    try:
        return json.loads(body)
    except json.JSONDecodeError as e:
        raise InvalidInput(
            f"is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}", field="body"
        ) from e
    except RecursionError as e:
        raise InvalidInput("is nested too deeply", field="body") from e
    except ValueError as e:  # an integer over sys.get_int_max_str_digits() digits
        raise InvalidInput("holds a number with too many digits", field="body") from e


def error_body(error: EmbeddingError) -> dict:
    """`{"error": {"code", "message", "field"}}`; `field` is null when the error is not about one field."""
    return {"error": {"code": error.code, "message": error.public_message, "field": error.field}}


def proxy_response(status: int, body: dict, headers: Mapping[str, str] | None = None) -> dict:
    """A proxy integration response with a JSON body (valid for payload formats 1.0 and 2.0)."""
    return {
        "statusCode": status,
        "headers": {"content-type": JSON_CONTENT_TYPE, **(headers or {})},
        "body": json.dumps(body, separators=(",", ":"), allow_nan=False),
        "isBase64Encoded": False,
    }
