"""Lambda: S3 upload notifications (through SQS) -> ledger, Lambda text channels, one RunPod job per item.

Handler `handlers.aws_lambda.on_upload.handler` (SQS event source with ReportBatchItemFailures;
returns `{"batchItemFailures": [...]}`). Message bodies: shared.pipeline.events. Settings:
shared.pipeline.settings (MEDIA_BUCKET, LEDGER_TABLE, RUNPOD_*, WEBHOOK_SECRET, CALLBACK_URL, ...) and
TextSettings (MODEL_DIR, TEXT_*) for the text channels. The text model and the secrets load here, at init.
Sample events: infra/events/on_upload/.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics

from shared.aws.runtime import build_pipeline
from shared.lambda_text import ObservabilitySettings
from shared.models.minilm_onnx import MiniLMOnnx
from shared.pipeline.lambdas import build_on_upload, metric_sink
from shared.settings import TextSettings

OBSERVABILITY = ObservabilitySettings.from_env(os.environ)
logger = Logger(service=OBSERVABILITY.service)
metrics = Metrics(namespace=OBSERVABILITY.namespace, service=OBSERVABILITY.service)
MODEL = MiniLMOnnx.load(TextSettings.from_env(os.environ))
PIPELINE = build_pipeline(os.environ, dispatch=True, text_model=MODEL, metric=metric_sink(metrics))

handler = build_on_upload(PIPELINE, logger, metrics)
