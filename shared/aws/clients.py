"""One boto3 client per service per process (STYLE.md 7), built on first use and then reused.

boto3 honours AWS_ENDPOINT_URL itself, so the same code reaches AWS or the local stack; against a
local endpoint S3 uses path-style addressing (moto on 127.0.0.1 has no virtual hosts).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import StoreError

THROTTLING = {
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "SlowDown",
    "InternalError",
    "TransactionConflictException",
}


def translate(exc: Exception, what: str) -> StoreError:
    """ClientError / BotoCoreError -> StoreError with `retryable` set from the error code."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        err = StoreError(f"{what} failed: {code or status}")
        err.retryable = code in THROTTLING or status >= 500
        return err
    err = StoreError(f"{what} failed: {type(exc).__name__}")
    err.retryable = isinstance(exc, BotoCoreError)
    return err


def client(service: str, env: Mapping[str, str] | None = None) -> Any:
    """The process's client for `service`, configured from `env` (default os.environ): AWS_ENDPOINT_URL,
    AWS_REGION / AWS_DEFAULT_REGION and, when given, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."""
    env = os.environ if env is None else env
    return _client(
        service,
        env.get("AWS_ENDPOINT_URL") or None,
        env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        env.get("AWS_ACCESS_KEY_ID") or None,
        env.get("AWS_SECRET_ACCESS_KEY") or None,
    )


@functools.cache
def _client(
    service: str, endpoint: str | None, region: str | None, key: str | None, secret: str | None
) -> Any:
    import boto3
    import botocore
    from botocore.config import Config

    extra: dict[str, Any] = {}
    if endpoint:
        extra["s3"] = {"addressing_style": "path"}
    # parameter_validation off: the service validates anyway, and client-side validation is a third of
    # botocore's CPU per call (the orchestration makes ~20 calls per item)
    # user_agent fixed: botocore otherwise builds its User-Agent twice per request (once more "right
    # before it is sent", to list the features used), ~10% of its CPU per call here
    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        signature_version="s3v4",
        parameter_validation=False,
        user_agent=f"serverless-embeddings Boto3/{boto3.__version__} Botocore/{botocore.__version__}",
        **extra,
    )
    session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name=region)
    return session.client(service, endpoint_url=endpoint, config=config)
