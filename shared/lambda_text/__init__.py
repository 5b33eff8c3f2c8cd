"""The Lambda text-embedding path, pure: request parsing, embedding, the handler factory.

No torch, no AWS calls. `handlers.aws_lambda.embed_text` is the thin shim that loads the model.
"""

from shared.lambda_text.app import (
    BATCH_COMPLETED,
    BATCH_REJECTED,
    BATCH_STARTED,
    ObservabilitySettings,
    build_handler,
)
from shared.lambda_text.embed import TextModel, embed_batch
from shared.lambda_text.request import Chunk, EmbedRequest, parse_request

__all__ = [
    "BATCH_COMPLETED",
    "BATCH_REJECTED",
    "BATCH_STARTED",
    "Chunk",
    "EmbedRequest",
    "ObservabilitySettings",
    "TextModel",
    "build_handler",
    "embed_batch",
    "parse_request",
]
