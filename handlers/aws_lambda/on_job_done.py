"""Lambda: RunPod's webhook (function URL, AuthType NONE: the HMAC token in the URL authenticates).

Handler `handlers.aws_lambda.on_job_done.handler`; request and responses: shared.pipeline.lambdas.
Checks each reported artifact (exists, size, sha256, vector checks) before the ledger says SUCCEEDED,
runs the dependent text channels (transcript -> text_transcript -> text_fused) and writes the owner's
manifest when the item completes. Sample events: infra/events/on_job_done/.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics

from shared.aws.runtime import build_pipeline
from shared.lambda_text import ObservabilitySettings
from shared.models.minilm_onnx import MiniLMOnnx
from shared.pipeline.lambdas import build_on_job_done, metric_sink
from shared.settings import TextSettings

OBSERVABILITY = ObservabilitySettings.from_env(os.environ)
logger = Logger(service=OBSERVABILITY.service)
metrics = Metrics(namespace=OBSERVABILITY.namespace, service=OBSERVABILITY.service)
MODEL = MiniLMOnnx.load(TextSettings.from_env(os.environ))
PIPELINE = build_pipeline(os.environ, dispatch=False, text_model=MODEL, metric=metric_sink(metrics))

handler = build_on_job_done(PIPELINE, logger, metrics)
