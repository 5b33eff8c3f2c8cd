"""Lambda: the sweeper (EventBridge schedule, every minute).

Handler `handlers.aws_lambda.sweeper.handler`. Reads the ledger's sweep-index (never scans): polls
/status for jobs past their deadline (a lost webhook completes this way), re-dispatches claims that
were never submitted and retries whose backoff has passed, quarantines after MAX_ATTEMPTS. Returns
`{"counts": {action: n}}`. Sample event: infra/events/sweeper/schedule.json.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics

from shared.aws.runtime import build_pipeline
from shared.lambda_text import ObservabilitySettings
from shared.models.minilm_onnx import MiniLMOnnx
from shared.pipeline.lambdas import build_sweeper, metric_sink
from shared.settings import TextSettings

OBSERVABILITY = ObservabilitySettings.from_env(os.environ)
logger = Logger(service=OBSERVABILITY.service)
metrics = Metrics(namespace=OBSERVABILITY.namespace, service=OBSERVABILITY.service)
MODEL = MiniLMOnnx.load(TextSettings.from_env(os.environ))
PIPELINE = build_pipeline(os.environ, dispatch=True, text_model=MODEL, metric=metric_sink(metrics))

handler = build_sweeper(PIPELINE, logger, metrics)
