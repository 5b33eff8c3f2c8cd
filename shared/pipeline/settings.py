"""Orchestration settings (on_upload, on_job_done, sweeper, the CLI), read once from a mapping.

    MEDIA_BUCKET              the one bucket (template.yaml: MediaBucket)
    LEDGER_TABLE              the ledger table (template.yaml: LedgerTable)
    RUNPOD_ENDPOINT_URL       https://api.runpod.ai/v2/{endpoint_id}, or the local worker's base URL
    RUNPOD_API_KEY_SECRET     Secrets Manager id (name or ARN) of the RunPod API key
    WEBHOOK_SECRET            Secrets Manager id of the HMAC key that signs webhook tokens
    CALLBACK_URL              on_job_done's function URL (RunPod POSTs job results there)
    PIPELINE_CHANNELS         channels to keep current (default: every spec channel that is on by default)
    MAX_ATTEMPTS              GPU dispatches of one source before it is quarantined (4)
    EXECUTION_TIMEOUT_S       RunPod policy.executionTimeout per job (900)
    JOB_TTL_S                 RunPod policy.ttl: a job's whole life, queue included (3600)
    POLL_AFTER_S              no webhook by then: /status is polled (EXECUTION_TIMEOUT_S + 60)
    POLL_INTERVAL_S           how often an unfinished job is polled again (60)
    MAX_POLL_FAILURES         /status failures in a row, past the job's deadline (its TTL), after which
                              the job is lost and its item dispatched again (3)
    BACKOFF_BASE_S / BACKOFF_MAX_S   retry delay: base * 2**(attempt-1), full jitter, capped (30 / 1800)
    MAX_SOURCE_BYTES          sources over this are refused before any GPU work (2147483648)
    MAX_META_BYTES            meta.json over this is refused (65536)
    MAX_TRANSCRIPT_BYTES      transcript artifacts over this are refused (8388608)
    RUNPOD_RUN_PER_S / RUNPOD_STATUS_PER_S   client-side rate limits, half RunPod's documented
                              1000 and 2000 requests per 10 s (50 / 100)
    RUNPOD_TIMEOUT_S          one HTTP call to RunPod (10)
    RUNPOD_RETRIES            retries of one call on 429 / 502 / 503 / 504 / connect errors (4)
    RUNPOD_BACKOFF_S          first retry delay of one call, doubling, full jitter, at most 8 s (0.5)
    SWEEP_BATCH               due rows handled per sweeper run (200)
    MANIFEST_DELAY_S          an owner's manifest is rebuilt this long after an item completes, once for a
                              burst of completions (30)
    REPROCESS_QUEUE_URL       the reprocess queue (template.yaml: ReprocessQueue): plan pages and items
    REPROCESS_PAGE_ROWS       ledger rows read per planning page, at least one whole item (1000)
    REPROCESS_READ_STREAMS    concurrent ledger reads of a dry run, 1 to 8 (botocore keeps 10
                              connections): owners, or one owner's slices of item ids, read side by
                              side; the answer as if read in order (2)
    REPROCESS_SYNC_S          a reprocess request plans pages itself for this long, then hands the rest to
                              the queue page by page, so no scope can time the call out (10)
    REPROCESS_MAX_RECEIVES    the reprocess queue's maxReceiveCount: an item message failing on its last
                              delivery is counted failed in its run (3)
    GPU_PRICE_PER_S           USD per GPU second for the dry run's estimate (0.00116: RunPod H100 flex,
                              list price stored 2026-12-01)

AWS_ENDPOINT_URL (honoured by boto3 itself) points every client at the local stack.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from shared import spec
from shared.errors import ConfigError
from shared.settings import positive, read

DEFAULT_CHANNELS = tuple(n for n, c in spec.CHANNELS.items() if c.default_on)


def _channels(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
    if not names or any(n not in spec.CHANNELS for n in names):
        raise ValueError(raw)
    return names


def _streams(raw: str) -> int:
    n = int(raw)
    if not 1 <= n <= 8:
        raise ValueError(raw)
    return n


def _url(raw: str) -> str:
    if not raw.startswith(("https://", "http://")):
        raise ValueError(raw)
    return raw.rstrip("/")


@dataclass(frozen=True)
class PipelineSettings:
    bucket: str
    table: str
    runpod_url: str = ""
    runpod_key_secret: str = ""
    webhook_secret: str = ""
    callback_url: str = ""
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    max_attempts: int = 4
    execution_timeout_s: int = 900
    job_ttl_s: int = 3600
    poll_after_s: float = 960.0
    poll_interval_s: float = 60.0
    max_poll_failures: int = 3
    backoff_base_s: float = 30.0
    backoff_max_s: float = 1800.0
    max_source_bytes: int = 2_147_483_648
    max_meta_bytes: int = 65_536
    max_transcript_bytes: int = 8_388_608
    run_per_s: float = 50.0
    status_per_s: float = 100.0
    runpod_timeout_s: float = 10.0
    runpod_retries: int = 4
    runpod_backoff_s: float = 0.5
    sweep_batch: int = 200
    manifest_delay_s: float = 30.0
    reprocess_queue_url: str = ""
    reprocess_page_rows: int = 1000
    reprocess_read_streams: int = 2
    reprocess_sync_s: float = 10.0
    reprocess_max_receives: int = 3
    gpu_price_per_s: float = 0.00116

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PipelineSettings:
        env = os.environ if env is None else env
        bucket = env.get("MEDIA_BUCKET", "")
        table = env.get("LEDGER_TABLE", "")
        if not bucket or not table:
            raise ConfigError("MEDIA_BUCKET and LEDGER_TABLE are required; example: MEDIA_BUCKET=se-media")
        timeout = read(env, "EXECUTION_TIMEOUT_S", positive(int), cls.execution_timeout_s, "900")
        ttl = read(env, "JOB_TTL_S", positive(int), cls.job_ttl_s, "3600")
        if ttl < timeout:
            raise ConfigError(
                f"JOB_TTL_S={ttl} must be >= EXECUTION_TIMEOUT_S={timeout}; example: JOB_TTL_S=3600"
            )
        return cls(
            bucket=bucket,
            table=table,
            runpod_url=read(env, "RUNPOD_ENDPOINT_URL", _url, "", "https://api.runpod.ai/v2/abc123"),
            runpod_key_secret=env.get("RUNPOD_API_KEY_SECRET", ""),
            webhook_secret=env.get("WEBHOOK_SECRET", ""),
            callback_url=read(env, "CALLBACK_URL", _url, "", "https://xyz.lambda-url.us-east-1.on.aws"),
            channels=read(env, "PIPELINE_CHANNELS", _channels, DEFAULT_CHANNELS, "video_clip,transcript"),
            max_attempts=read(env, "MAX_ATTEMPTS", positive(int), cls.max_attempts, "4"),
            execution_timeout_s=timeout,
            job_ttl_s=ttl,
            poll_after_s=read(env, "POLL_AFTER_S", positive(float), float(timeout + 60), "960"),
            poll_interval_s=read(env, "POLL_INTERVAL_S", positive(float), cls.poll_interval_s, "60"),
            max_poll_failures=read(env, "MAX_POLL_FAILURES", positive(int), cls.max_poll_failures, "3"),
            backoff_base_s=read(env, "BACKOFF_BASE_S", positive(float), cls.backoff_base_s, "30"),
            backoff_max_s=read(env, "BACKOFF_MAX_S", positive(float), cls.backoff_max_s, "1800"),
            max_source_bytes=read(env, "MAX_SOURCE_BYTES", positive(int), cls.max_source_bytes, "2147483648"),
            max_meta_bytes=read(env, "MAX_META_BYTES", positive(int), cls.max_meta_bytes, "65536"),
            max_transcript_bytes=read(
                env, "MAX_TRANSCRIPT_BYTES", positive(int), cls.max_transcript_bytes, "8388608"
            ),
            run_per_s=read(env, "RUNPOD_RUN_PER_S", positive(float), cls.run_per_s, "50"),
            status_per_s=read(env, "RUNPOD_STATUS_PER_S", positive(float), cls.status_per_s, "100"),
            runpod_timeout_s=read(env, "RUNPOD_TIMEOUT_S", positive(float), cls.runpod_timeout_s, "10"),
            runpod_retries=read(env, "RUNPOD_RETRIES", int, cls.runpod_retries, "4"),
            runpod_backoff_s=read(env, "RUNPOD_BACKOFF_S", positive(float), cls.runpod_backoff_s, "0.5"),
            sweep_batch=read(env, "SWEEP_BATCH", positive(int), cls.sweep_batch, "200"),
            manifest_delay_s=read(env, "MANIFEST_DELAY_S", float, cls.manifest_delay_s, "30"),
            reprocess_queue_url=read(env, "REPROCESS_QUEUE_URL", _url, "", "https://sqs.../reprocess"),
            reprocess_page_rows=read(
                env, "REPROCESS_PAGE_ROWS", positive(int), cls.reprocess_page_rows, "1000"
            ),
            reprocess_read_streams=read(
                env, "REPROCESS_READ_STREAMS", _streams, cls.reprocess_read_streams, "2"
            ),
            reprocess_sync_s=read(env, "REPROCESS_SYNC_S", float, cls.reprocess_sync_s, "10"),
            reprocess_max_receives=read(
                env, "REPROCESS_MAX_RECEIVES", positive(int), cls.reprocess_max_receives, "3"
            ),
            gpu_price_per_s=read(env, "GPU_PRICE_PER_S", float, cls.gpu_price_per_s, "0.00116"),
        )
