"""The orchestration Lambda handlers, built from an injected Pipeline (handlers/aws_lambda/* build
the real one at init; tests build theirs on moto).

on_upload (SQS event source, ReportBatchItemFailures): Powertools' BatchProcessor; each message is
one S3 notification (shared.pipeline.events). A retryable failure fails that message only. A failed
message is always returned in `batchItemFailures`, also when it is the whole batch (Powertools would
raise BatchProcessingError then: an invocation error, the Errors alarm, for one poison message), and its
reason is logged (code, message id, receive count; never its body). SQS delivers it again and, after
the queue's maxReceiveCount, moves it to the dead-letter queue (template.yaml's RedrivePolicy).

on_job_done (function URL, payload 2.0; RunPod's webhook):

    POST {callback_url}/?token=<HMAC token> with RunPod's job body {"id", "status", "output"|"error", ...}
    (the SDK's local API posts {"output": ...}).
    -> 200 {"outcome": "applied" | "pending"}    the result was applied (or the job is not final)
    -> 401 missing, malformed, forged or expired token (checked in constant time before the body is read)
    -> 403 a valid token of a dispatch that is no longer open (replayed or superseded): nothing changes
    -> 400 / 405 / 413 / 415 a body that is not a JSON object, another method, too large, not JSON
    -> 500 a retryable fault (RunPod delivers the webhook again; the sweeper polls if it gives up)

sweeper (schedule): `Pipeline.sweep()`; returns the counts of what it did.

reprocess (function URL with AWS_IAM auth: the admin API of shared.pipeline.admin; and the reprocess
queue's SQS event source: planning pages and items of shared.pipeline.reprocess).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

from shared.errors import EmbeddingError, InvalidInput
from shared.lambda_text.proxy import (
    error_body,
    http_method,
    http_path,
    is_proxy_event,
    proxy_response,
    read_json_body,
)
from shared.logs import lambda_logger
from shared.pipeline.events import handle_message
from shared.pipeline.refusals import reason_code
from shared.pipeline.service import Pipeline
from shared.pipeline.tokens import BadToken

Handler = Callable[[Any, Any], dict]
MAX_WEBHOOK_BODY_BYTES = 1024 * 1024  # an embed_item result is a few KB


def metric_sink(metrics: Metrics) -> Callable[[str, float], None]:
    def emit(name: str, value: float) -> None:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)

    return emit


def refused_metric(metrics: Metrics, reason: Any) -> None:
    """UploadsRefused, one EMF document of its own with the reason as a dimension (one of REASONS:
    whatever an upload's key holds, the metric's dimensions stay a fixed set)."""
    dims = {"service": str(metrics.service), "reason": reason_code(reason)}
    with single_metric(
        name="UploadsRefused",
        unit=MetricUnit.Count,
        value=1,
        namespace=metrics.namespace,
        default_dimensions=dims,
    ):
        pass


def sqs_processor() -> BatchProcessor:
    """Powertools' SQS BatchProcessor that reports every failed message in `batchItemFailures`, also
    when every message of the batch failed (not BatchProcessingError: see the module's docstring)."""
    return BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def logging_failures(
    record_handler: Callable[[Any], Any], logger: Logger, metrics: Metrics, what: str
) -> Callable[[Any], Any]:
    """`record_handler`, with each failure logged before it fails its message: the error's code (its
    class for an unexpected one, with the traceback), the message id and receive count. Never the
    message body (an EmbeddingError's public_message names no more than the failure)."""

    def handle(record: Any) -> Any:
        try:
            return record_handler(record)
        except Exception as e:
            attrs = getattr(record, "attributes", None)
            extra = {
                "message_id": record.message_id,
                "receive_count": getattr(attrs, "approximate_receive_count", None) if attrs else None,
            }
            metrics.add_metric(name="MessagesFailed", unit=MetricUnit.Count, value=1)
            if isinstance(e, EmbeddingError):
                extra.update(code=e.code, retryable=e.retryable, reason=e.public_message)
                logger.warning(f"{what} message failed", extra=extra)
            else:
                logger.exception(
                    f"{what} message failed: internal fault", extra={**extra, "code": type(e).__name__}
                )
            raise

    return handle


def build_on_upload(
    pipeline: Pipeline, logger: Logger, metrics: Metrics, *, cold_start: bool = True
) -> Handler:
    processor = sqs_processor()

    def handle_record(record: Any) -> list[str]:
        outcomes = handle_message(pipeline, record.body)
        for out in outcomes:
            metrics.add_metric(name=f"Records_{out.action}", unit=MetricUnit.Count, value=1)
            if out.action == "refused":
                refused_metric(metrics, out.detail.get("reason"))
        return [o.action for o in outcomes]

    record_handler = logging_failures(handle_record, logger, metrics, "upload")

    def handle(event: Any, context: Any) -> dict:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )

    return metrics.log_metrics(capture_cold_start_metric=cold_start)(
        logger.inject_lambda_context(clear_state=True)(handle)
    )


class Stale(InvalidInput):
    status = 403
    code = "stale_dispatch"


def build_on_job_done(
    pipeline: Pipeline, logger: Logger, metrics: Metrics, *, cold_start: bool = True
) -> Handler:
    def reply(status: int, body: dict) -> dict:
        return proxy_response(status, body)

    def handle(event: Any, context: Any) -> dict:
        try:
            if not is_proxy_event(event):
                raise InvalidInput("expected a function URL event", field="event")
            query = event.get("queryStringParameters") or {}
            claim = pipeline.verify_token(query.get("token") if isinstance(query, dict) else None)
            payload = read_json_body(event, max_bytes=MAX_WEBHOOK_BODY_BYTES)
            if not isinstance(payload, dict):
                raise InvalidInput("must be a JSON object", field="body")
            out = pipeline.apply_result(claim.owner_id, claim.item_id, claim.dispatch_id, payload)
            if out.action == "stale":
                raise Stale(out.reason)
        except BadToken as e:
            metrics.add_metric(name="WebhookRefused", unit=MetricUnit.Count, value=1)
            logger.warning("webhook refused", extra={"code": e.code, "reason": e.public_message})
            return reply(401, error_body(e))
        except InvalidInput as e:
            logger.warning("webhook not applied", extra={"code": e.code, "reason": e.public_message})
            return reply(e.status, error_body(e))
        except EmbeddingError as e:
            logger.exception("webhook failed", extra={"code": e.code})
            return reply(500, error_body(e))
        except Exception:  # the API boundary: logged with its traceback, never returned
            logger.exception("webhook failed: internal fault")
            err = EmbeddingError(
                f"internal error; request id {getattr(context, 'aws_request_id', 'unknown')}"
            )
            return reply(500, error_body(err))
        logger.info(
            "webhook applied",
            extra={
                "owner_id": claim.owner_id,
                "item_id": claim.item_id,
                "outcome": out.action,
                "channels": out.detail.get("channels"),
            },
        )
        return reply(200, {"outcome": out.action, "channels": out.detail.get("channels", {})})

    return metrics.log_metrics(capture_cold_start_metric=cold_start)(
        logger.inject_lambda_context(clear_state=True)(handle)
    )


def build_sweeper(
    pipeline: Pipeline, logger: Logger, metrics: Metrics, *, cold_start: bool = True
) -> Handler:
    def handle(event: Any, context: Any) -> dict:
        counts = pipeline.sweep()
        logger.info("sweep done", extra={"counts": counts})
        return {"counts": counts}

    return metrics.log_metrics(capture_cold_start_metric=cold_start)(
        logger.inject_lambda_context(clear_state=True)(handle)
    )


def build_reprocess(
    pipeline: Pipeline, logger: Logger, metrics: Metrics, *, cold_start: bool = True, sqs: Any = None
) -> Handler:
    """The admin API on the function URL (shared.pipeline.admin), and the reprocess queue's messages
    (planning pages and items; Powertools' BatchProcessor, one failed message fails alone)."""
    from shared.pipeline.admin import MAX_BODY_BYTES, Admin
    from shared.pipeline.reprocess import Reprocessor

    if sqs is None:
        from shared.aws.clients import client

        sqs = client("sqs")
    reprocessor = Reprocessor(pipeline, sqs)
    admin = Admin(reprocessor)
    processor = sqs_processor()

    def handle_record(record: Any) -> str:
        try:
            body = json.loads(record.body)
        except ValueError:
            raise InvalidInput("the message is not JSON", field="body") from None
        if not isinstance(body, dict):
            raise InvalidInput("the message is not a JSON object", field="body")
        receives = int((record.attributes.approximate_receive_count or 1) if record.attributes else 1)
        try:
            return reprocessor.on_message(body, receives)
        except InvalidInput as e:  # not retryable: consumed with its reason, never retried forever
            logger.warning("reprocess message refused", extra={"code": e.code, "reason": e.public_message})
            return "refused"

    record_handler = logging_failures(handle_record, logger, metrics, "reprocess")

    def api(event: Any, context: Any) -> dict:
        try:
            method = http_method(event)
            body = None
            if method == "POST":
                body = read_json_body(event, max_bytes=MAX_BODY_BYTES)
            query = event.get("queryStringParameters") or {}
            status, out = admin.route(
                method, http_path(event), query if isinstance(query, dict) else {}, body
            )
        except InvalidInput as e:
            logger.info("admin call refused", extra={"code": e.code, "field": e.field})
            return proxy_response(e.status, error_body(e))
        except EmbeddingError as e:
            logger.exception("admin call failed", extra={"code": e.code})
            return proxy_response(500 if e.retryable else e.status, error_body(e))
        except Exception:  # the API boundary: logged with its traceback, never returned
            logger.exception("admin call failed: internal fault")
            err = EmbeddingError(
                f"internal error; request id {getattr(context, 'aws_request_id', 'unknown')}"
            )
            return proxy_response(500, error_body(err))
        return proxy_response(status, out)

    def handle(event: Any, context: Any) -> dict:
        if is_proxy_event(event):
            return api(event, context)
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )

    return metrics.log_metrics(capture_cold_start_metric=cold_start)(
        logger.inject_lambda_context(clear_state=True)(handle)
    )


_BUILDERS = {
    "on_upload": (build_on_upload, True),
    "on_job_done": (build_on_job_done, False),
    "sweeper": (build_sweeper, True),
    "reprocess": (build_reprocess, True),
}
FUNCTIONS = tuple(_BUILDERS)


def build(
    function: str,
    env: Mapping[str, str] | None = None,
    *,
    log_stream: Any = None,
    adopt_loggers: bool = True,
    ledger: Any = None,
) -> Handler:
    """One orchestration function's handler from its environment (the handler modules call this at
    init with os.environ; the local stack and `se invoke` with the environment template.yaml gives it):
    Powertools Logger/Metrics, the text model (MODEL_DIR, TEXT_*), the secrets, the Pipeline.

    Logging (shared.logs): the function's JSON lines go to `log_stream` (stdout, as in Lambda, by
    default); `adopt_loggers` gives the pipeline's own loggers the same handler, as in Lambda. A process
    that hosts several functions (the local stack, `se invoke`) passes False and keeps its logging.
    `ledger`: build_pipeline's (the local stack's in-memory ledger)."""
    from shared.aws.clients import client
    from shared.aws.runtime import build_pipeline
    from shared.lambda_text import ObservabilitySettings
    from shared.models.minilm_onnx import MiniLMOnnx
    from shared.settings import TextSettings

    env = os.environ if env is None else env
    builder, dispatch = _BUILDERS[function]
    obs = ObservabilitySettings.from_env(env)
    level = env.get("POWERTOOLS_LOG_LEVEL") or "INFO"
    logger = lambda_logger(obs.service, level, log_stream, adopt=adopt_loggers)
    metrics = Metrics(namespace=obs.namespace, service=obs.service)
    model = MiniLMOnnx.load(TextSettings.from_env(env))
    pipeline = build_pipeline(
        env, dispatch=dispatch, text_model=model, metric=metric_sink(metrics), ledger=ledger
    )
    quiet = env.get("POWERTOOLS_METRICS_DISABLED", "").lower() in ("1", "true")
    extra = {"sqs": client("sqs", env)} if function == "reprocess" else {}
    handler = builder(pipeline, logger, metrics, cold_start=not quiet, **extra)
    handler.pipeline = pipeline  # type: ignore[attr-defined]  # for the local stack's benches
    return handler
