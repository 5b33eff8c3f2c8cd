"""Orchestration settings (on_upload, on_job_done, sweeper, reprocess, the CLI), read once from a mapping.

Each setting is declared once below (variable, parser, default, doc); docs/configuration.md is
rendered from the declarations (`python -m shared.dev.settings_doc`). AWS_ENDPOINT_URL (honoured by
boto3 itself) points every client at the local stack.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from shared import spec
from shared.errors import ConfigError
from shared.settings import BOOL, STRING, parser, positive, read_settings, setting

DEFAULT_CHANNELS = tuple(n for n, c in spec.CHANNELS.items() if c.default_on)


@parser(f"comma list of: {', '.join(spec.CHANNELS)}")
def _channels(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
    if not names or any(n not in spec.CHANNELS for n in names):
        raise ValueError(raw)
    return names


@parser("int, 1 to 8")
def _streams(raw: str) -> int:
    n = int(raw)
    if not 1 <= n <= 8:
        raise ValueError(raw)
    return n


MAX_REFUSALS_KEPT = 10_000


@parser(f"int, 1 to {MAX_REFUSALS_KEPT}")
def _kept(raw: str) -> int:
    n = int(raw)
    if not 1 <= n <= MAX_REFUSALS_KEPT:
        raise ValueError(raw)
    return n


@parser("http(s) URL")
def _url(raw: str) -> str:
    if not raw.startswith(("https://", "http://")):
        raise ValueError(raw)
    return raw.rstrip("/")


@dataclass(frozen=True)
class PipelineSettings:
    bucket: str = setting(
        "MEDIA_BUCKET", STRING, "the one bucket (template.yaml: MediaBucket)", example="se-media"
    )
    table: str = setting(
        "LEDGER_TABLE", STRING, "the ledger table (template.yaml: LedgerTable)", example="se-ledger"
    )
    runpod_url: str = setting(
        "RUNPOD_ENDPOINT_URL",
        _url,
        "https://api.runpod.ai/v2/{endpoint_id}, or the local worker's base URL",
        default="",
        example="https://api.runpod.ai/v2/abc123",
    )
    runpod_key_secret: str = setting(
        "RUNPOD_API_KEY_SECRET",
        STRING,
        "Secrets Manager id (name or ARN) of the RunPod API key",
        default="",
        example="se/runpod-api-key",
    )
    webhook_secret: str = setting(
        "WEBHOOK_SECRET",
        STRING,
        "Secrets Manager id of the HMAC key that signs webhook tokens",
        default="",
        example="se/webhook-key",
    )
    callback_url: str = setting(
        "CALLBACK_URL",
        _url,
        "on_job_done's function URL (RunPod POSTs job results there)",
        default="",
        example="https://xyz.lambda-url.us-east-1.on.aws",
    )
    channels: tuple[str, ...] = setting(
        "PIPELINE_CHANNELS",
        _channels,
        "channels to keep current (default: every spec channel that is on by default)",
        default=DEFAULT_CHANNELS,
        example="video_clip,transcript",
    )
    max_attempts: int = setting(
        "MAX_ATTEMPTS", positive(int), "GPU dispatches of one source before it is quarantined", default=4
    )
    execution_timeout_s: int = setting(
        "EXECUTION_TIMEOUT_S", positive(int), "RunPod policy.executionTimeout per job, seconds", default=900
    )
    job_ttl_s: int = setting(
        "JOB_TTL_S",
        positive(int),
        "RunPod policy.ttl: a job's whole life, queue included, seconds (at least EXECUTION_TIMEOUT_S)",
        default=3600,
    )
    poll_after_s: float = setting(
        "POLL_AFTER_S",
        positive(float),
        "no webhook by then: /status is polled",
        default=960.0,  # EXECUTION_TIMEOUT_S + 60 at its default; from_env derives it
        derived=lambda v: float(v["execution_timeout_s"] + 60),
        shown_default="EXECUTION_TIMEOUT_S + 60",
    )
    poll_interval_s: float = setting(
        "POLL_INTERVAL_S", positive(float), "how often an unfinished job is polled again", default=60.0
    )
    max_poll_failures: int = setting(
        "MAX_POLL_FAILURES",
        positive(int),
        "/status failures in a row, past the job's deadline (its TTL), after which the job is lost and "
        "its item dispatched again",
        default=3,
    )
    backoff_base_s: float = setting(
        "BACKOFF_BASE_S",
        positive(float),
        "retry delay of a failed dispatch: base * 2**(attempt-1), full jitter, capped at BACKOFF_MAX_S",
        default=30.0,
    )
    backoff_max_s: float = setting(
        "BACKOFF_MAX_S", positive(float), "the cap of BACKOFF_BASE_S's retry delay", default=1800.0
    )
    max_source_bytes: int = setting(
        "MAX_SOURCE_BYTES",
        positive(int),
        "sources over this are refused before any GPU work",
        default=2_147_483_648,
    )
    refusals_per_owner: int = setting(
        "REFUSALS_PER_OWNER",
        _kept,
        "refused uploads kept per owner in the ledger (the newest; `se status`, the admin console)",
        default=50,
    )
    refusals_unowned: int = setting(
        "REFUSALS_UNOWNED",
        _kept,
        "refused uploads kept whose key names no valid owner, all together (the newest)",
        default=200,
    )
    refusals_days: float = setting(
        "REFUSALS_DAYS",
        positive(float),
        "a refused upload's ledger row expires after this many days (the table's TTL attribute)",
        default=14.0,
    )
    max_meta_bytes: int = setting(
        "MAX_META_BYTES", positive(int), "meta.json over this is refused", default=65_536
    )
    max_transcript_bytes: int = setting(
        "MAX_TRANSCRIPT_BYTES", positive(int), "transcript artifacts over this are refused", default=8_388_608
    )
    run_per_s: float = setting(
        "RUNPOD_RUN_PER_S",
        positive(float),
        "/run requests per second from one container (its token bucket; /cancel gets a tenth). "
        "template.yaml gives each function its per-container share of the endpoint's limit; "
        "the default suits one process alone on an endpoint (docs/runpod-limits.md)",
        default=50.0,
    )
    status_per_s: float = setting(
        "RUNPOD_STATUS_PER_S",
        positive(float),
        "/status requests per second from one container, a per-container share like RUNPOD_RUN_PER_S "
        "(docs/runpod-limits.md)",
        default=100.0,
    )
    runpod_timeout_s: float = setting(
        "RUNPOD_TIMEOUT_S", positive(float), "one HTTP call to RunPod, seconds", default=10.0
    )
    runpod_retries: int = setting(
        "RUNPOD_RETRIES",
        int,
        "retries of one call on 429 and connect errors, and on 502 / 503 / 504 for /status and /cancel "
        "(never for /run: docs/runpod-limits.md)",
        default=4,
    )
    runpod_backoff_s: float = setting(
        "RUNPOD_BACKOFF_S",
        positive(float),
        "first retry delay of one call, doubling, full jitter, at most 8 s",
        default=0.5,
    )
    sweep_batch: int = setting("SWEEP_BATCH", positive(int), "due rows handled per sweeper run", default=200)
    manifest_delay_s: float = setting(
        "MANIFEST_DELAY_S",
        float,
        "an owner's manifest is rebuilt this long after an item completes, once for a burst of completions",
        default=30.0,
    )
    max_frame_timestamps: int = setting(
        "MAX_FRAME_TIMESTAMPS",
        positive(int),
        "frame times a per-frame channel's report (video_clip) may carry; a report with more, or with "
        "times that are not finite, negative or out of order, is the channel's bad_output",
        default=4096,
    )
    search_index: bool = setting(
        "SEARCH_INDEX",
        BOOL,
        "keep the owners' search tables (search/{spec_version}/{owner}/ in MEDIA_BUCKET, LanceDB) "
        "current as items settle; the sweeper writes them with the manifests",
        default=True,
    )
    search_batch_items: int = setting(
        "SEARCH_BATCH_ITEMS",
        positive(int),
        "items one manifest rebuild indexes at most (one write per table); the rest wait for the next "
        "sweep, and the owner's version switch waits for them",
        default=100,
    )
    search_retry_s: float = setting(
        "SEARCH_RETRY_S",
        positive(float),
        "a failed index write is tried again this long after (the items stay settled meanwhile)",
        default=60.0,
    )
    search_optimize_every_s: float = setting(
        "SEARCH_OPTIMIZE_EVERY_S",
        positive(float),
        "an owner's search tables are optimized (compaction, index upkeep) at most this often ...",
        default=600.0,
    )
    search_optimize_writes: int = setting(
        "SEARCH_OPTIMIZE_WRITES",
        positive(int),
        "... or as soon as this many index writes piled up since the last optimize",
        default=20,
    )
    reprocess_queue_url: str = setting(
        "REPROCESS_QUEUE_URL",
        _url,
        "the reprocess queue (template.yaml: ReprocessQueue): plan pages and items",
        default="",
        example="https://sqs.../reprocess",
    )
    reprocess_page_rows: int = setting(
        "REPROCESS_PAGE_ROWS",
        positive(int),
        "ledger rows read per planning page, at least one whole item",
        default=1000,
    )
    reprocess_read_streams: int = setting(
        "REPROCESS_READ_STREAMS",
        _streams,
        "concurrent ledger reads of a dry run (botocore keeps 10 connections): owners, or one owner's "
        "slices of item ids, read side by side; the answer as if read in order",
        default=2,
    )
    reprocess_sync_s: float = setting(
        "REPROCESS_SYNC_S",
        float,
        "a reprocess request plans pages itself for this long, then hands the rest to the queue page by "
        "page, so no scope can time the call out",
        default=10.0,
    )
    reprocess_max_receives: int = setting(
        "REPROCESS_MAX_RECEIVES",
        positive(int),
        "the reprocess queue's maxReceiveCount: an item message failing on its last delivery is counted "
        "failed in its run",
        default=3,
    )
    gpu_price_per_s: float = setting(
        "GPU_PRICE_PER_S",
        float,
        "USD per GPU second for the dry run's estimate (RunPod H100 flex, list price stored 2026-12-01)",
        default=0.00116,
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PipelineSettings:
        values = read_settings(cls, os.environ if env is None else env)
        timeout, ttl = values["execution_timeout_s"], values["job_ttl_s"]
        if ttl < timeout:
            raise ConfigError(
                f"JOB_TTL_S={ttl} must be >= EXECUTION_TIMEOUT_S={timeout}; "
                f"example: JOB_TTL_S={max(cls.job_ttl_s, 4 * timeout)}"
            )
        return cls(**values)
