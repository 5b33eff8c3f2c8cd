"""SigV4 for calls to an `AWS_IAM` function URL: botocore signs them (`se reprocess`, `se runs`,
`se admin` sign with the operator's credentials), and the local stack's function-URL server checks
them the way Lambda does before a request reaches the function.

In AWS, IAM checks the signature and `lambda:InvokeFunctionUrl`; a call without a valid signature
never reaches the code. `verify` re-derives the signature with botocore's own canonicalisation from
the headers the caller says it signed, so the local check and the real one agree on what is signed.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SERVICE = "lambda"  # function URLs are signed for the lambda service
MAX_SKEW_S = 300  # AWS refuses a signature more than 5 minutes from its own clock

_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[A-Za-z0-9]{1,128})/(?P<date>\d{8})/(?P<region>[a-z0-9-]{1,32})/"
    r"(?P<service>[a-z0-9-]{1,32})/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]{1,1024}), ?"
    r"Signature=(?P<sig>[0-9a-f]{64})$"
)


class SignatureError(Exception):
    """The request is unsigned or its signature does not check out (the caller gets 403)."""


def sign(
    method: str,
    url: str,
    body: bytes,
    credentials: Any,
    region: str,
    headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The headers to send (Authorization, X-Amz-Date, X-Amz-Security-Token where the credentials have a
    session token) for one request, signed with botocore."""
    req = AWSRequest(method=method.upper(), url=url, data=body or b"", headers=dict(headers or {}))
    SigV4Auth(credentials, SERVICE, region).add_auth(req)
    return dict(req.headers.items())


def verify(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Mapping[str, str],
    region: str,
    now: dt.datetime | None = None,
) -> str:
    """The access key id of a correctly signed request (signed for `region` and the lambda service,
    within MAX_SKEW_S, by a key in `secrets`: access key id -> secret key); SignatureError otherwise."""
    h = {k.lower(): v for k, v in headers.items()}
    h.setdefault("host", urllib.parse.urlsplit(url).netloc)
    m = _AUTH.match(h.get("authorization", ""))
    if m is None:
        raise SignatureError("the request is not signed (SigV4)")
    amz_date = h.get("x-amz-date", "")
    try:
        when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise SignatureError("the request has no valid X-Amz-Date") from None
    now = now or dt.datetime.now(dt.UTC)
    if abs((now - when).total_seconds()) > MAX_SKEW_S:
        raise SignatureError("the signature is too old or from the future")
    if m["date"] != amz_date[:8] or m["region"] != region or m["service"] != SERVICE:
        raise SignatureError("the signature's scope is not this function's")
    signed = m["signed"].split(";")
    if "host" not in signed or any(name not in h for name in signed):
        raise SignatureError("a signed header is missing")
    secret = secrets.get(m["akid"])
    if secret is None:
        raise SignatureError("the access key is not known")
    req = AWSRequest(method=method.upper(), url=url, data=body or b"", headers={n: h[n] for n in signed})
    req.context["timestamp"] = amz_date
    auth = SigV4Auth(Credentials(m["akid"], secret, h.get("x-amz-security-token")), SERVICE, region)
    expected = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
    if not hmac.compare_digest(expected, m["sig"]):
        raise SignatureError("the signature does not match")
    return m["akid"]


__all__ = ["MAX_SKEW_S", "SERVICE", "SignatureError", "sign", "verify"]
