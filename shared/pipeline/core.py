"""What every step of the orchestration shares: its injected adapters (`Core`), what a step answers
(`Outcome`), where a channel's artifact lives, and how an error is recorded in the ledger."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared import spec
from shared.errors import ConfigError, EmbeddingError, InvalidInput
from shared.pipeline import keys
from shared.pipeline.ledger import Ledger
from shared.pipeline.policy import RetryPolicy
from shared.pipeline.runpod_client import RunPodClient
from shared.pipeline.settings import PipelineSettings

if TYPE_CHECKING:  # the S3 adapter is injected; the pipeline never imports shared.aws
    from shared.aws.storage import Storage
    from shared.pipeline.search_sync import SearchWriter


@dataclass
class Outcome:
    """What one call did, for logs, the CLI and tests (`rows`: the item's rows as the call left them)."""

    action: str
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    rows: tuple[Any, Any] | None = field(default=None, repr=False)


def artifact_key(channel: str, owner_id: str, item_id: str, spec_version: str | None = None) -> str:
    """Where a channel's artifact of one spec version lives (default: the deployed spec's version)."""
    spec_version = spec_version or spec.SPEC_VERSION
    if spec.CHANNELS[channel].artifact == "json":
        return keys.transcript_key(spec_version, owner_id, item_id)
    return keys.embedding_key(spec_version, channel, owner_id, item_id)


def thumbnail_keys(
    channel: str, owner_id: str, item_id: str, count: int, spec_version: str | None = None
) -> list[str]:
    """Where a channel's first `count` thumbnails (its scenes' keyframes) of one spec version live."""
    spec_version = spec_version or spec.SPEC_VERSION
    return [keys.thumbnail_key(spec_version, channel, owner_id, item_id, i) for i in range(count)]


def error_fields(e: EmbeddingError) -> dict[str, Any]:
    """An error as a ledger row records it."""
    return {"code": e.code, "message": e.public_message[:500], "retryable": bool(e.retryable)}


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInput("is not valid JSON", field=what) from None
    if not isinstance(doc, dict):
        raise InvalidInput("must be a JSON object", field=what)
    return doc


class Core:
    """The adapters and settings every step uses (the steps are the Pipeline's bases)."""

    def __init__(
        self,
        settings: PipelineSettings,
        ledger: Ledger,
        storage: Storage,
        *,
        text_model: Any = None,
        runpod: RunPodClient | None = None,
        webhook_key: bytes = b"",
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        metric: Callable[[str, float], None] = lambda name, value: None,
        search: SearchWriter | None = None,
    ) -> None:
        want = {spec.CHANNELS[c].preprocessing.get("precision") for c in settings.channels} - {None}
        have = getattr(text_model, "precision", None)
        if have is not None and want and have not in want:
            raise ConfigError(
                f"the text model answers in {have}, the spec's text channels want {', '.join(sorted(want))}"
                "; example: TEXT_PRECISION=fp32"
            )
        self.settings = settings
        self.ledger = ledger
        self.storage = storage
        self.text_model = text_model
        self.runpod = runpod
        self.webhook_key = webhook_key
        self.clock = clock
        self.rng = rng or random.Random()
        self.policy = RetryPolicy.from_settings(settings)
        self.metric = metric
        self.search = search  # the owners' search tables (shared.pipeline.search_sync); None: not kept
        self._manifest_due: dict[str, float] = {}  # owner -> its pending rebuild's due time (mark_manifest)

    artifact_key = staticmethod(artifact_key)
