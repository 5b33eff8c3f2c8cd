"""Lambda: RunPod's webhook (function URL, AuthType NONE: the HMAC token in the URL authenticates).

Handler `handlers.aws_lambda.on_job_done.handler`; request and responses: shared.pipeline.lambdas.
Checks each reported artifact (exists, size, sha256, vector checks) before the ledger says SUCCEEDED,
runs the dependent text channels (transcript -> text_transcript -> text_fused) and writes the owner's
manifest when the item completes. Sample events: infra/events/on_job_done/.
"""

from __future__ import annotations

import os

from shared.pipeline.lambdas import build

handler = build("on_job_done", os.environ)
