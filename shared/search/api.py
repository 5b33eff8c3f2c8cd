"""The search API: its settings, the SearchService built from an environment, and the Lambda handler.

`handlers.aws_lambda.search` calls `handler_from_env(os.environ)` at init (the cold start): MiniLM and
CLIP's text tower load from MODEL_DIR (ONNX Runtime, no torch), the boto3 clients are built once, and
each spec version's LanceDB engine opens on first use. `se admin` builds the same service with
`service_from_env` for its Search panel (shared.admin.server).

Request (function URL, AuthType AWS_IAM; payload 2.0), `POST /` or `POST /search`, a JSON object:

    {"owner_id": "o1", "text": "when does the ferry leave", "k": 10, "mode": "hybrid",
     "item_id": null, "person": null}

Answer 200: `{"hits": [{"owner_id", "item_id", "score", "start_s", "end_s", "channels", "text",
"highlights", "media_url", "thumbnail_url"?}], "took_ms", "spec_version", "skipped"}`
(shared.search.service; `highlights`: [start, end) spans of `text` matching the query's terms).
Errors: `{"error": {"code", "message", "field"}}` with 400 (a field is wrong: the message names the field
and the rule, never the value), 404 (an owner with no index, an unknown person, another path), 405 (not
POST), 413 (a body over SEARCH_MAX_BODY_BYTES, refused before it is decoded), 415 (not JSON), 503 (the
ledger or the index could not be read: retry), 500 (a fault; its request id). A direct invocation's
event is the request itself and gets the answer or the error object.

Logged per query: owner, mode, k, hits, took_ms, spec version; never the query's text nor a URL.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from shared.errors import EmbeddingError, InvalidInput
from shared.lambda_text.proxy import (
    error_body,
    http_path,
    is_proxy_event,
    proxy_response,
    read_json_body,
)
from shared.pipeline.settings import PipelineSettings
from shared.search.query import MODES, Encoder
from shared.search.service import Searchers, SearchService
from shared.search.settings import DEFAULTS, SearchSettings
from shared.settings import Parser, TextSettings, read_settings, setting

Handler = Callable[[Any, Any], dict]
PATHS = ("", "/search")
QUERY_DONE = "search.query.v1"
QUERY_REFUSED = "search.refused.v1"
QUERY_FAILED = "search.failed.v1"


def _bounded(kind: type, low: float, high: float) -> Parser:
    def inner(raw: str) -> Any:
        value = kind(raw)
        if not low <= value <= high:
            raise ValueError(raw)
        return value

    return Parser(inner, f"{kind.__name__}, {low:g} to {high:g}")


def _index_uri(raw: str) -> str:
    return raw.rstrip("/")


def _same(cls: type, attr: str) -> Any:
    """The field `attr` of `cls`, declared once there: the same variable, doc and example here."""
    f = next(f for f in dataclasses.fields(cls) if f.name == attr)
    return dataclasses.field(default=f.default, metadata=f.metadata)


@dataclass(frozen=True)
class SearchApiSettings:
    """The search function (and `se admin`'s Search panel). MODEL_DIR and TEXT_* are TextSettings'."""

    bucket: str = _same(PipelineSettings, "bucket")
    table: str = _same(PipelineSettings, "table")
    index_uri: str = setting(
        "SEARCH_INDEX_URI",
        Parser(_index_uri, "s3:// URI or folder"),
        "where the owners' search tables live: the bucket (their search/ prefix) or a local folder",
        derived=lambda v: f"s3://{v['bucket']}",
        shown_default="s3://{MEDIA_BUCKET}",
        example="s3://se-media",
    )
    url_expires_s: int = setting(
        "SEARCH_URL_EXPIRES_S",
        _bounded(int, 60, 43_200),
        "lifetime of the presigned media and thumbnail URLs in an answer, seconds",
        default=3600,
    )
    cache_s: float = setting(
        "SEARCH_CACHE_S",
        _bounded(float, 0, 3600),
        "how long a warm container trusts what it read from the ledger: an owner's current spec "
        "version, an item's source (a switch or a new upload reaches queries this late)",
        default=30.0,
    )
    max_body_bytes: int = setting(
        "SEARCH_MAX_BODY_BYTES",
        _bounded(int, 256, 65_536),
        "a request body, checked before it is decoded (a query is at most 512 characters)",
        default=16_384,
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SearchApiSettings:
        return cls(**read_settings(cls, os.environ if env is None else env))


def service_from_env(env: Mapping[str, str]) -> SearchService:
    """The SearchService a process serves (the function's init, `se admin`): settings, both query
    encoders loaded and checked once from MODEL_DIR, one boto3 client per service, LanceDB engines
    opened per spec version on first use."""
    settings = SearchApiSettings.from_env(env)  # a bad setting fails before the heavy imports
    text = TextSettings.from_env(env)

    from shared.aws.clients import client
    from shared.aws.search_directory import LedgerDirectory
    from shared.aws.storage import Storage

    # LanceDB takes seconds to import (most of the cold start: its REST client's pydantic models, which
    # a folder or S3 never uses) and is imported here on purpose, at init, not by the first query; on a
    # thread, beside the encoders' loading (ONNX Runtime builds its sessions without the GIL)
    lance = _import_beside("shared.search.lance")
    minilm, clip = encoders(text)
    lance.join()
    searchers = query_side(settings, env, embed_text=minilm.embed, clip_text=clip.embed)
    storage = Storage(client("s3", env), settings.bucket)
    return SearchService(
        searchers,
        LedgerDirectory(client("dynamodb", env), settings.table, storage),
        storage.presign_get,
        url_expires_s=settings.url_expires_s,
        cache_s=settings.cache_s,
    )


def encoders(text: TextSettings) -> tuple[Any, Any]:
    """(MiniLM, CLIP's text tower) from MODEL_DIR on ONNX Runtime, each checked against its baked
    probes and warmed up: the query encoders of the search function (and of bench_search.py)."""
    from shared.models.clip_text_onnx import ClipTextOnnx
    from shared.models.minilm_onnx import MiniLMOnnx

    minilm = MiniLMOnnx.load(text)
    minilm.warmup()
    clip = ClipTextOnnx.load(text.model_dir, threads=text.threads)
    clip.warmup()
    return minilm, clip


def query_side(
    settings: SearchApiSettings,
    env: Mapping[str, str],
    *,
    embed_text: Encoder,
    clip_text: Encoder,
    search: SearchSettings = DEFAULTS,
) -> Searchers:
    """One Searcher per spec version over the index (SEARCH_INDEX_URI: S3 with LanceDB's options from
    the environment, or a folder): what SearchService queries. bench_search.py times this very path."""
    from shared.search.indexes import Indexes, storage_options
    from shared.search.service import Searchers

    options = storage_options(env) if settings.index_uri.startswith("s3://") else {}
    indexes = Indexes(settings.index_uri, storage_options=options, settings=search)
    return Searchers(indexes.engine, embed_text=embed_text, clip_text=clip_text, settings=search)


class _Beside:
    """An import on a daemon thread; join() waits for it and raises what it raised."""

    def __init__(self, module: str) -> None:
        self.module, self.error = module, None
        self.thread = threading.Thread(target=self._run, name=f"import {module}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            importlib.import_module(self.module)
        except BaseException as e:  # re-raised by join(), in the caller's thread
            self.error = e

    def join(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


def _import_beside(module: str) -> _Beside:
    return _Beside(module)


class NoRoute(InvalidInput):
    status = 404
    code = "not_found"


def build_handler(
    service: SearchService, settings: SearchApiSettings, *, logger: Logger, metrics: Metrics
) -> Handler:
    """`handler(event, context)` over `service` (shapes: the module docstring). Metrics (EMF): Queries,
    QueryDurationMs, Hits, ValidationErrors, StoreErrors, InternalErrors, ColdStart."""

    def count(name: str, value: float = 1, unit: str = MetricUnit.Count) -> None:
        metrics.add_metric(name=name, unit=unit, value=value)

    def handle(event: Any, context: Any) -> dict:
        proxy = is_proxy_event(event)
        owner = None
        try:
            if proxy:
                if http_path(event) not in PATHS:
                    raise NoRoute("no such route (POST / or /search)", field="path")
                payload = read_json_body(event, max_bytes=settings.max_body_bytes)
            else:
                payload = event
            owner = payload.get("owner_id") if isinstance(payload, dict) else None
            start = time.perf_counter()
            answer = service.search(payload)  # a body that is not an object: 400, field "request"
        except InvalidInput as e:
            count("ValidationErrors")
            logger.info(
                QUERY_REFUSED,
                extra={"event": QUERY_REFUSED, "status": e.status, "code": e.code, "field": e.field},
            )
            return _reply(proxy, e.status, error_body(e))
        except EmbeddingError as e:
            count("StoreErrors" if e.retryable else "InternalErrors")
            logger.exception(QUERY_FAILED, extra={"event": QUERY_FAILED, "code": e.code})
            return _reply(proxy, 503 if e.retryable else 500, error_body(e))
        except Exception:  # the API boundary: logged with its traceback, never returned
            count("InternalErrors")
            logger.exception(QUERY_FAILED, extra={"event": QUERY_FAILED, "code": "internal_error"})
            request_id = getattr(context, "aws_request_id", "unknown")
            err = EmbeddingError(f"internal error; request id {request_id}")
            return _reply(proxy, 500, error_body(err))
        ms = (time.perf_counter() - start) * 1000.0
        count("Queries")
        count("Hits", len(answer["hits"]))
        count("QueryDurationMs", ms, MetricUnit.Milliseconds)
        logger.info(
            QUERY_DONE,
            extra={
                "event": QUERY_DONE,
                "owner_id": owner,
                "mode": payload.get("mode") if payload.get("mode") in MODES else "hybrid",
                "k": payload.get("k"),
                "hits": len(answer["hits"]),
                "took_ms": answer["took_ms"],
                "spec_version": answer["spec_version"],
                "skipped": len(answer["skipped"]),
            },
        )
        return _reply(proxy, 200, answer)

    return metrics.log_metrics(capture_cold_start_metric=True)(
        logger.inject_lambda_context(clear_state=True)(handle)
    )


def _reply(proxy: bool, status: int, body: dict) -> dict:
    return proxy_response(status, body) if proxy else body


def handler_from_env(env: Mapping[str, str], *, adopt_loggers: bool = False) -> Handler:
    """The search function as its init builds it (handlers.aws_lambda.search, with os.environ)."""
    from shared.lambda_text import ObservabilitySettings
    from shared.logs import lambda_logger

    settings = SearchApiSettings.from_env(env)
    obs = ObservabilitySettings.from_env(env)
    logger = lambda_logger(obs.service, env.get("POWERTOOLS_LOG_LEVEL") or "INFO", adopt=adopt_loggers)
    metrics = Metrics(namespace=obs.namespace, service=obs.service)
    return build_handler(service_from_env(env), settings, logger=logger, metrics=metrics)
