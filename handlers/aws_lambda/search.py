"""Lambda: search an owner's media for the moment (issue 21). Function URL, AuthType AWS_IAM.

Handler `handlers.aws_lambda.search.handler`. Request, answer and errors: shared.search.api (a JSON
object `{"owner_id", "text", "k"?, "mode"?, "item_id"?, "person"?}` -> hits with presigned `media_url`s
ending in `#t=start`). Sample events: infra/events/search/.

At init (the cold start): MiniLM and CLIP's text tower from MODEL_DIR on ONNX Runtime (no torch; each
checked against its baked probes), the S3 and DynamoDB clients. Settings: shared.search.api
(MEDIA_BUCKET, LEDGER_TABLE, SEARCH_*), TextSettings (MODEL_DIR, TEXT_*), POWERTOOLS_*.
"""

from __future__ import annotations

import os

# pydantic (LanceDB's REST client, the request models) scans every installed distribution's entry
# points for plugins at its first model, ~0.1 s of the cold start; this function uses none
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from shared.search.api import handler_from_env  # after the setting above

handler = handler_from_env(os.environ, adopt_loggers=True)
