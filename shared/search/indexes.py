"""Opening an owner's index: where the tables live, which spec version the owner reads, a Searcher.

    indexes = Indexes.from_env(env)                     # once per process: s3://{MEDIA_BUCKET} (or a folder)
    searcher = open_searcher("o1", indexes=indexes, storage=storage, embed_text=minilm.embed,
                             clip_text=clip_text)       # per request: the owner's current version
    searcher.search({"owner_id": "o1", "text": "when does the ferry leave"})

The version an owner's queries read is the one the search pointer names, `search/current/{owner}.json`
(written by the pipeline's manifest rebuild, shared.pipeline.search_sync, when the owner's current spec
version moves, only once that version's tables hold every item): a reader of the `search/` prefix needs
no ledger and never reads a half-built version. LanceDB is imported on the first engine opened, not
before (it takes seconds to import).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from shared.errors import InvalidInput
from shared.pipeline import keys
from shared.search.engine import SearchEngine
from shared.search.query import Encoder, NotFound, Searcher
from shared.search.settings import DEFAULTS, SearchSettings

if TYPE_CHECKING:
    from shared.aws.storage import Storage

MAX_POINTER_BYTES = 4096
POINTER_MAX_AGE_S = 5.0  # a warm reader re-reads an owner's pointer after this long


def storage_options(env: Mapping[str, str]) -> dict[str, str]:
    """LanceDB's S3 options from the environment boto3 reads (shared.aws.clients.client): the region;
    with AWS_ENDPOINT_URL (the local stack's moto) that endpoint, plain http allowed, and the keys given
    there. Without an endpoint LanceDB finds the role's credentials itself (the Lambda environment)."""
    opts: dict[str, str] = {}
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        opts["aws_region"] = region
    endpoint = env.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["aws_endpoint"] = endpoint
        if endpoint.startswith("http://"):
            opts["allow_http"] = "true"
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            if env.get(key):
                opts[key.lower()] = env[key]
    return opts


class Indexes:
    """Every spec version's SearchEngine under one base (`s3://bucket` or a folder), each opened once
    per process and kept warm; the owners' current versions, read from their pointers and kept for
    POINTER_MAX_AGE_S."""

    def __init__(
        self,
        base_uri: str,
        *,
        storage_options: Mapping[str, str] | None = None,
        settings: SearchSettings = DEFAULTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_uri = str(base_uri)
        self.storage_options = dict(storage_options or {})
        self.settings = settings
        self.clock = clock
        self._engines: dict[str, SearchEngine] = {}
        self._current: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, settings: SearchSettings = DEFAULTS) -> Indexes:
        """The tables in MEDIA_BUCKET (DESIGN.md: search/{spec_version}/{owner_id}/)."""
        env = os.environ if env is None else env
        bucket = env.get("MEDIA_BUCKET")
        if not bucket:
            from shared.errors import ConfigError

            raise ConfigError("MEDIA_BUCKET is required; example: MEDIA_BUCKET=se-media")
        return cls(f"s3://{bucket}", storage_options=storage_options(env), settings=settings)

    def engine(self, spec_version: str) -> SearchEngine:
        with self._lock:
            got = self._engines.get(spec_version)
            if got is None:
                from shared.search.lance import LanceSearch

                got = self._engines[spec_version] = LanceSearch(
                    self.base_uri, spec_version, storage_options=self.storage_options, settings=self.settings
                )
            return got

    __call__ = engine  # an Indexes is the `engines` an ArtifactIndex takes

    def current_version(self, storage: Storage, owner_id: str) -> str | None:
        """The spec version the owner's queries read (its search pointer), or None: no index yet."""
        if not isinstance(owner_id, str) or not keys.ID_RE.fullmatch(owner_id):
            raise InvalidInput("must match [A-Za-z0-9_-]{1,64}", field="owner_id")
        now = self.clock()
        got = self._current.get(owner_id)
        if got is not None and now - got[0] < POINTER_MAX_AGE_S:
            return got[1]
        version = read_pointer(storage, owner_id)
        if len(self._current) > 10_000:
            self._current.clear()
        self._current[owner_id] = (now, version)
        return version


def read_pointer(storage: Storage, owner_id: str) -> str | None:
    """The version `search/current/{owner}.json` names; None when there is none (or it is not one)."""
    data = storage.get(keys.search_current_key(owner_id), MAX_POINTER_BYTES)
    if data is None:
        return None
    try:
        doc: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    version = doc.get("spec_version") if isinstance(doc, dict) else None
    return version if isinstance(version, str) and keys.ID_RE.fullmatch(version) else None


def open_searcher(
    owner_id: str,
    *,
    indexes: Indexes,
    storage: Storage,
    embed_text: Encoder | None,
    clip_text: Encoder | None = None,
    settings: SearchSettings | None = None,
) -> Searcher:
    """A Searcher over the owner's current version's tables. InvalidInput (400) for a bad owner id,
    NotFound (404) when the owner has no search index yet. Cheap: engines are kept warm in `indexes`."""
    version = indexes.current_version(storage, owner_id)
    if version is None:
        raise NotFound("has no search index", field="owner_id")
    return Searcher(
        indexes.engine(version),
        embed_text=embed_text,
        clip_text=clip_text,
        settings=settings or indexes.settings,
    )


__all__ = ["Indexes", "open_searcher", "read_pointer", "storage_options"]
