"""One error hierarchy for the whole product.

`retryable` tells the caller whether trying again can help (a network blip, a throttled table)
or not (bad input, a missing model). `public_message` is safe to return to a client: no
tracebacks, no secrets, no internal paths beyond what the caller sent.
"""

from __future__ import annotations


class EmbeddingError(Exception):
    """Base class. Subclasses set `retryable` and `status` (HTTP-ish status for API surfaces)."""

    retryable: bool = False
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    @property
    def public_message(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def to_dict(self) -> dict:
        out = {"code": self.code, "message": self.public_message}
        if self.field:
            out["field"] = self.field
        return out


class InvalidInput(EmbeddingError):
    """The caller sent something we will never accept; retrying the same input cannot help."""

    status = 400
    code = "invalid_input"


class PayloadTooLarge(InvalidInput):
    status = 413
    code = "payload_too_large"


class ModelNotFound(EmbeddingError):
    """A model directory is missing or incomplete. Raised at process start, never lazily."""

    code = "model_not_found"


class ModelUnhealthy(EmbeddingError):
    """A canary inference returned NaN/inf or the wrong shape: refuse to serve."""

    code = "model_unhealthy"


class MediaError(InvalidInput):
    """The media could not be decoded (corrupt, truncated, no such stream, too large)."""

    status = 422
    code = "media_error"


class FetchError(EmbeddingError):
    """Downloading or uploading an object failed. Retryable unless the URL itself is refused."""

    retryable = True
    status = 502
    code = "fetch_error"


class ForbiddenURL(InvalidInput):
    """A URL that points at a private/loopback address (SSRF guard) or uses a refused scheme."""

    status = 400
    code = "forbidden_url"


class ConfigError(EmbeddingError):
    """A setting is missing or malformed. Raised at start with an example value."""

    code = "config_error"


class StoreError(EmbeddingError):
    """A storage call (S3, DynamoDB, SQS) failed; retryable for throttling, 5xx and network errors."""

    code = "store_error"
    status = 503
