"""The text-embedding Lambda handler, built from an injected model and settings.

`handlers.aws_lambda.embed_text` loads the real model once at init and calls `build_handler`; tests
call it with a fake model and their own Logger/Metrics, without touching the environment.

Routes: `GET /health` (proxy events) runs the model's deep check (`model.health()`: a probe text
embedded and compared with its baked reference) and answers 200 or 503; everything else is the
embedding contract (POST). At build time (the cold start) the model's self-check (which precision
serves, the measured int8 probe cosine, the CPU's ISA) is logged once and emitted as metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from shared.errors import EmbeddingError, InvalidInput
from shared.lambda_text.embed import TextModel, embed_batch
from shared.lambda_text.proxy import (
    error_body,
    http_method,
    http_path,
    is_proxy_event,
    proxy_response,
    read_json_body,
)
from shared.lambda_text.request import parse_request
from shared.settings import STRING, TextSettings, read_settings, setting

BATCH_STARTED = "embedding.batch_started.v1"
BATCH_COMPLETED = "embedding.batch_completed.v1"
BATCH_REJECTED = "embedding.batch_rejected.v1"
BATCH_FAILED = "embedding.batch_failed.v1"
MODEL_SELECTED = "embedding.model_selected.v1"
HEALTH_FAILED = "embedding.health_failed.v1"
HEALTH_PATH = "/health"

Handler = Callable[[Any, Any], dict]


@dataclass(frozen=True)
class ObservabilitySettings:
    """Powertools' own variables, read here too so the defaults hold outside Lambda (CLI, tests)."""

    service: str = setting(
        "POWERTOOLS_SERVICE_NAME",
        STRING,
        "the service named in every log line and metric",
        default="embed-text",
    )
    namespace: str = setting(
        "POWERTOOLS_METRICS_NAMESPACE",
        STRING,
        "the CloudWatch namespace of the metrics",
        default="ServerlessEmbeddings",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ObservabilitySettings:
        return cls(**read_settings(cls, env))


def build_handler(
    model: TextModel,
    settings: TextSettings,
    *,
    logger: Logger | None = None,
    metrics: Metrics | None = None,
    observability: ObservabilitySettings | None = None,
) -> Handler:
    """Return `handler(event, context)` serving `model` (see handlers/aws_lambda/embed_text.py for shapes).

    Direct invocations get the response dict or `{"error": {...}}`; proxy events get a proxy
    response with the same JSON as body and the error's HTTP status. Metrics (EMF, to stdout):
    ChunksEmbedded, BatchDurationMs, ValidationErrors, InternalErrors, HealthCheckFailures,
    ColdStart; once at build: TextInt8Serving (1/0) and TextInt8ProbeMinCosine (when measured).
    """
    obs = observability or ObservabilitySettings()
    logger = logger or Logger(service=obs.service)
    metrics = metrics or Metrics(namespace=obs.namespace, service=obs.service)
    report_self_check(model, logger, metrics.namespace or obs.namespace, obs.service)

    def health_body(error: EmbeddingError | None) -> dict:
        body = {
            "status": "healthy" if error is None else "unhealthy",
            "model_loaded": True,
            "embedding_dim": model.dims,
            "model": model.model_label,
            "precision": model.precision,
        }
        return body if error is None else {**body, **error_body(error)}

    def health() -> dict:
        try:
            model.health()
        except Exception as e:  # any failure of the deep check is a 503, with its reason logged
            error = e if isinstance(e, EmbeddingError) else EmbeddingError("health check failed")
            metrics.add_metric(name="HealthCheckFailures", unit=MetricUnit.Count, value=1)
            logger.exception(HEALTH_FAILED, extra={"event": HEALTH_FAILED, "code": error.code})
            return proxy_response(503, health_body(error))
        return proxy_response(200, health_body(None))

    def reply(status: int, body: dict, proxy: bool, headers: Mapping[str, str] | None = None) -> dict:
        return proxy_response(status, body, headers) if proxy else body

    def refuse(error: InvalidInput, proxy: bool, batch_id: str | None) -> dict:
        metrics.add_metric(name="ValidationErrors", unit=MetricUnit.Count, value=1)
        logger.warning(
            BATCH_REJECTED,
            extra={
                "event": BATCH_REJECTED,
                "batch_id": batch_id,
                "status": error.status,
                "code": error.code,
                "field": error.field,
                "reason": error.public_message,
            },
        )
        headers = {"allow": "POST"} if error.status == 405 else None
        return reply(error.status, error_body(error), proxy, headers)

    def fail(error: EmbeddingError, proxy: bool, batch_id: str | None) -> dict:
        metrics.add_metric(name="InternalErrors", unit=MetricUnit.Count, value=1)
        logger.exception(
            BATCH_FAILED, extra={"event": BATCH_FAILED, "batch_id": batch_id, "code": error.code}
        )
        return reply(error.status, error_body(error), proxy)

    def handle(event: Any, context: Any) -> dict:
        proxy = is_proxy_event(event)
        if proxy and http_method(event) == "GET" and http_path(event) == HEALTH_PATH:
            return health()
        batch_id = None
        try:
            payload = read_json_body(event, max_bytes=settings.max_body_bytes) if proxy else event
            request = parse_request(payload, settings, model_dims=model.dims)
            batch_id = request.batch_id
            n = len(request.chunks)
            logger.info(BATCH_STARTED, extra={"event": BATCH_STARTED, "batch_id": batch_id, "chunk_count": n})
            start = time.perf_counter()
            body = embed_batch(model, request, settings)
        except InvalidInput as e:
            return refuse(e, proxy, batch_id)
        except EmbeddingError as e:
            return fail(e, proxy, batch_id)
        except Exception:  # the API boundary: a bug is logged with its traceback, never returned
            internal = EmbeddingError(
                f"internal error; request id {getattr(context, 'aws_request_id', 'unknown')}"
            )
            return fail(internal, proxy, batch_id)
        duration_ms = (time.perf_counter() - start) * 1000.0
        metrics.add_metric(name="ChunksEmbedded", unit=MetricUnit.Count, value=n)
        metrics.add_metric(name="BatchDurationMs", unit=MetricUnit.Milliseconds, value=duration_ms)
        logger.info(
            BATCH_COMPLETED,
            extra={
                "event": BATCH_COMPLETED,
                "batch_id": batch_id,
                "chunk_count": n,
                "duration_ms": round(duration_ms, 3),
                "dims": body["dims"],
                "model": body["model"],
            },
        )
        return reply(200, body, proxy)

    return metrics.log_metrics(capture_cold_start_metric=True)(
        logger.inject_lambda_context(clear_state=True)(handle)
    )


def handler_from_env(env: Mapping[str, str], *, adopt_loggers: bool = False) -> Handler:
    """The embed-text handler as the function builds it at init: settings from `env`, the model loaded
    and warmed up once from MODEL_DIR, Powertools Logger/Metrics. handlers.aws_lambda.embed_text calls it
    with os.environ and `adopt_loggers` (the project's stdlib loggers write through the Logger, as in
    shared.logs.lambda_logger); `se invoke embed_text` and the CLI with the environment template.yaml
    gives the function, keeping their own logging."""
    from shared.logs import lambda_logger
    from shared.models.minilm_onnx import MiniLMOnnx

    settings = TextSettings.from_env(env)
    obs = ObservabilitySettings.from_env(env)
    logger = lambda_logger(obs.service, env.get("POWERTOOLS_LOG_LEVEL") or "INFO", adopt=adopt_loggers)
    metrics = Metrics(namespace=obs.namespace, service=obs.service)
    model = MiniLMOnnx.load(settings)
    model.warmup()
    return build_handler(model, settings, logger=logger, metrics=metrics, observability=obs)


def report_self_check(model: TextModel, logger: Logger, namespace: str, service: str) -> None:
    """Log the model's load-time self-check once and emit it as metrics (flushed now, not per request)."""
    check = getattr(model, "self_check", None)
    if check is None:
        return
    fields = check.as_log()
    logger.info(MODEL_SELECTED, extra={"event": MODEL_SELECTED, "model": model.model_label, **fields})
    dimensions = {"service": service, "precision": fields["precision"], "isa": fields["isa"]}
    values = {"TextInt8Serving": (1.0 if fields["precision"] == "int8" else 0.0, MetricUnit.Count)}
    if fields["int8_min_cosine"] is not None:
        values["TextInt8ProbeMinCosine"] = (fields["int8_min_cosine"], MetricUnit.NoUnit)
    for name, (value, unit) in values.items():
        with single_metric(
            name=name, unit=unit, value=value, namespace=namespace, default_dimensions=dimensions
        ):
            pass
