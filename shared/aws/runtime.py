"""Build the Pipeline a Lambda function (or the CLI) runs, from its environment: one boto3 client per
service, the secrets from Secrets Manager (Powertools' cached provider), the text model from MODEL_DIR.
Called once per process at init; tests build Pipeline themselves."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from shared.aws.clients import client
from shared.aws.ledger import Ledger
from shared.aws.storage import Storage
from shared.errors import ConfigError
from shared.pipeline.runpod_client import RunPodClient
from shared.pipeline.service import Pipeline
from shared.pipeline.settings import PipelineSettings


def secret(secret_id: str, what: str, env: Mapping[str, str]) -> str:
    """A secret's string value; ConfigError (naming the setting, never the value) when unreadable."""
    from aws_lambda_powertools.utilities import parameters

    if not secret_id:
        raise ConfigError(f"{what} is not set; example: {what}=arn:aws:secretsmanager:...:secret:name")
    try:
        value = parameters.SecretsProvider(boto3_client=client("secretsmanager", env)).get(
            secret_id, max_age=300
        )
    except parameters.exceptions.GetParameterError as e:
        raise ConfigError(f"{what}: the secret cannot be read") from e
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what}: the secret is empty")
    return value


def build_pipeline(
    env: Mapping[str, str] | None = None,
    *,
    dispatch: bool,
    text_model: Any = None,
    metric: Callable[[str, float], None] = lambda name, value: None,
    webhook: bool = True,
    ledger: Any = None,
) -> Pipeline:
    """`webhook` False: no webhook key (a pipeline that neither dispatches nor applies results, e.g.
    `se reindex`). `ledger`: another adapter of the Ledger port than the DynamoDB table (the local
    stack's in-memory ledger, for a load bench whose emulator cannot keep up)."""
    env = os.environ if env is None else env
    settings = PipelineSettings.from_env(env)
    runpod = None
    if dispatch:
        if not settings.runpod_url or not settings.callback_url:
            raise ConfigError("RUNPOD_ENDPOINT_URL and CALLBACK_URL are required to dispatch")
        runpod = RunPodClient(
            settings.runpod_url,
            secret(settings.runpod_key_secret, "RUNPOD_API_KEY_SECRET", env),
            timeout_s=settings.runpod_timeout_s,
            retries=settings.runpod_retries,
            run_per_s=settings.run_per_s,
            status_per_s=settings.status_per_s,
            backoff_base_s=settings.runpod_backoff_s,
        )
    storage = Storage(client("s3", env), settings.bucket)
    return Pipeline(
        settings,
        ledger if ledger is not None else Ledger(client("dynamodb", env), settings.table),
        storage,
        text_model=text_model,
        runpod=runpod,
        webhook_key=secret(settings.webhook_secret, "WEBHOOK_SECRET", env).encode() if webhook else b"",
        metric=metric,
        search=search_index(env, settings, storage, text_model),
    )


def search_index(
    env: Mapping[str, str], settings: PipelineSettings, storage: Storage, text_model: Any
) -> Any:
    """The owners' search tables in MEDIA_BUCKET (shared.search.indexer.ArtifactIndex), or None when
    SEARCH_INDEX is off or there is no text model to embed transcript windows with. LanceDB itself is
    imported when the sweeper first writes."""
    if not settings.search_index or text_model is None:
        return None
    from shared.search.indexer import ArtifactIndex
    from shared.search.indexes import Indexes

    return ArtifactIndex(
        Indexes.from_env(env),
        storage,
        text_model.embed,
        max_transcript_bytes=settings.max_transcript_bytes,
        max_meta_bytes=settings.max_meta_bytes,
    )
