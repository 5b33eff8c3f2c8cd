"""Lambda: S3 upload notifications (through SQS) -> ledger, Lambda text channels, one RunPod job per item.

Handler `handlers.aws_lambda.on_upload.handler` (SQS event source with ReportBatchItemFailures;
returns `{"batchItemFailures": [...]}`). Message bodies: shared.pipeline.events. Settings:
shared.pipeline.settings (MEDIA_BUCKET, LEDGER_TABLE, RUNPOD_*, WEBHOOK_SECRET, CALLBACK_URL, ...) and
TextSettings (MODEL_DIR, TEXT_*) for the text channels. The text model and the secrets load here, at init.
Sample events: infra/events/on_upload/.
"""

from __future__ import annotations

import os

from shared.pipeline.lambdas import build

handler = build("on_upload", os.environ)
