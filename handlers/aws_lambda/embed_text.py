"""Lambda: embed text chunks with all-MiniLM-L6-v2 on ONNX Runtime (seed 003).

Handler: `handlers.aws_lambda.embed_text.handler`. The request (`shared.lambda_text.request`):

    {"batch_id": "b1", "chunks": [{"chunk_id": "c1", "content": "text"}], "dims": 384, "truncate": true}

Accepted input shapes (samples in infra/events/):
1. Direct invocation (`aws lambda invoke`, SDK, `sam local invoke`): the event is the request
   object. Returns the response object, or `{"error": {"code", "message", "field"}}`.
2. Function URL / API Gateway HTTP API proxy event (payload format 2.0) with the request as a JSON
   `body`, plain or base64 (`isBase64Encoded: true`).
3. API Gateway REST API proxy event (payload format 1.0), same body rules.
4. `GET /health` as a function URL / API Gateway proxy event: the deep health check, 200
   `{"status": "healthy", "model_loaded": true, "embedding_dim": 384, "model", "precision"}`, or
   503 with `"status": "unhealthy"` and the error.
Proxy events get `{"statusCode", "headers": {"content-type": "application/json"}, "body"}`; errors
carry the same `{"error": ...}` JSON with status 400 (invalid input), 413 (too many chunks, an
oversize content or body, too many tokens in the request), 405 (not POST), 415 (Content-Type not
JSON) or 500 (internal fault). Hostile input is always a 4xx (tests/unit/lambda_text/test_hostile.py).

Response: `{"batch_id", "model", "dims", "vectors": [{"chunk_id", "vector"}]}`; `model` ends in
`onnx-int8` or `onnx-fp32`, the graph that answered.

The model loads once, here at init (the cold start), from MODEL_DIR; a missing model fails the init
with a message naming the directory and the command that builds it. With TEXT_PRECISION=auto (the
default) the init also runs the int8 self-check (shared.models.minilm_onnx) and logs/emits its result.
Settings: shared.settings.TextSettings (MODEL_DIR, TEXT_*) and POWERTOOLS_SERVICE_NAME /
POWERTOOLS_METRICS_NAMESPACE.
"""

from __future__ import annotations

import os

from shared.lambda_text.app import handler_from_env

handler = handler_from_env(os.environ, adopt_loggers=True)
