"""The search index's writer: an item's rows built from its artifacts, written in one batch.

`ArtifactIndex` is the SearchWriter the pipeline writes through (shared.pipeline.search_sync): given an
item's ledger rows, it reads the artifacts its SUCCEEDED indexed channels name (bounded reads, the one
vector check), builds the rows (shared.search.rows) and writes a whole batch of items with one
`SearchEngine.write(..., replace_items=...)`, so a batch is one commit per table and a repeat is
harmless. What one channel's artifact cannot give (gone, not JSON, a bad vector) is left out of that
item's rows with a note; a read that may succeed later (S3 throttling) keeps the item out of the batch
for a retry; a failed write raises.

    index = ArtifactIndex(Indexes.from_env(env), storage, text_model.embed)
    Pipeline(..., search=index)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from shared import spec
from shared.errors import EmbeddingError, InvalidInput
from shared.pipeline.core import json_object
from shared.pipeline.job_output import MAX_ARTIFACT_BYTES
from shared.pipeline.ledger import PERSON
from shared.pipeline.plan import SUCCEEDED
from shared.pipeline.search_sync import IndexResult, ItemRows
from shared.search.engine import SearchEngine
from shared.search.rows import INDEXED_CHANNELS, Embed, ItemArtifacts, item_rows, load_transcript, person_rows
from shared.search.settings import DEFAULTS, SearchSettings
from shared.vectors import check_vector, load_npy

if TYPE_CHECKING:
    from shared.aws.storage import Storage

log = logging.getLogger(__name__)

MAX_META_BYTES = 65_536
MAX_TRANSCRIPT_BYTES = 8 * 1024 * 1024


class _Skip(Exception):
    """One channel's artifact is left out of the item's rows (the reason is the note)."""


class ArtifactIndex:
    """SearchWriter: `engines(spec_version)` gives that version's SearchEngine (shared.search.indexes.
    Indexes), `storage` reads the artifacts, `embed` is MiniLM (transcript windows; scene_text rows
    carry the vectors of their artifact)."""

    channels = frozenset(INDEXED_CHANNELS)

    def __init__(
        self,
        engines: Callable[[str], SearchEngine],
        storage: Storage,
        embed: Embed,
        *,
        max_transcript_bytes: int = MAX_TRANSCRIPT_BYTES,
        max_meta_bytes: int = MAX_META_BYTES,
        settings: SearchSettings = DEFAULTS,
    ) -> None:
        self.engines = engines
        self.storage = storage
        self.embed = embed
        self.max_transcript_bytes = max_transcript_bytes
        self.max_meta_bytes = max_meta_bytes
        self.settings = settings

    # ---- SearchWriter ---------------------------------------------------------------------------
    def write(self, spec_version: str, owner_id: str, items: Mapping[str, ItemRows | None]) -> IndexResult:
        out = IndexResult()
        rows = []
        for item_id, state in items.items():
            if state is None:
                out.indexed[item_id] = ""
                continue
            try:
                built, notes = self.rows(owner_id, item_id, *state)
            except EmbeddingError as e:  # only retryable ones get here (a read that may succeed later)
                out.retry[item_id] = e.public_message
                continue
            rows += built
            out.indexed[item_id] = "; ".join(notes)
        if out.indexed:
            engine = self.engines(spec_version)
            try:
                res = engine.write(owner_id, rows, replace_items=list(out.indexed))
            except Exception:
                forget = getattr(engine, "forget", None)  # warm handles may be what failed
                if forget is not None:
                    forget(owner_id)
                raise
            out.rows, out.commits = sum(res.written.values()), res.commits
        return out

    def delete(self, spec_version: str, owner_id: str, item_ids: Collection[str]) -> int:
        return self.engines(spec_version).delete_items(owner_id, item_ids)

    def optimize(self, spec_version: str, owner_id: str) -> dict:
        return self.engines(spec_version).optimize(owner_id)

    def drop(self, spec_version: str, owner_id: str) -> None:
        self.engines(spec_version).drop(owner_id)

    # ---- rows from artifacts --------------------------------------------------------------------
    def rows(
        self,
        owner_id: str,
        item_id: str,
        item: Mapping[str, Any],
        chans: Mapping[str, Mapping[str, Any]],
    ) -> tuple[list, list[str]]:
        """(rows, notes) of one item from the artifacts its ledger rows name. Raises only a retryable
        EmbeddingError (nothing of the item is written then)."""
        notes: list[str] = []
        ready = {c: r for c, r in chans.items() if c in self.channels and r.get("status") == SUCCEEDED}

        def load(channel: str, parse: Callable[[bytes], Any], max_bytes: int = MAX_ARTIFACT_BYTES) -> Any:
            key = ready[channel].get("artifact_key")
            try:
                data = self.storage.get(str(key), max_bytes) if key else None
                if data is None:
                    raise InvalidInput("the artifact is gone", field=channel)
                return parse(data)
            except EmbeddingError as e:
                if e.retryable:
                    raise
                notes.append(f"{channel}: {e.public_message}")
                raise _Skip from None

        def vector(channel: str) -> Any:
            ch = spec.CHANNELS[channel]
            return load(
                channel, lambda b: check_vector(load_npy(b, channel), ch.dims, channel, rows=ch.per_row)
            )

        if item.get("kind") == PERSON:
            if "person_query" not in ready or not item.get("person_id"):
                return [], notes
            try:
                return person_rows(owner_id, str(item["person_id"]), vector("person_query")), notes
            except _Skip:
                return [], notes
        art = ItemArtifacts()
        for channel in sorted(ready):
            try:
                if channel == "transcript":
                    art.transcript = load(channel, load_transcript, self.max_transcript_bytes)
                elif channel == "video_clip":
                    art.video_clip = vector(channel)
                    art.frame_timestamps = ready[channel].get("timestamps")
                elif channel in ("scenes", "scene_text"):  # scene-aligned: the scenes row's spans
                    setattr(art, channel, vector(channel))
                    art.scene_spans = (chans.get("scenes") or {}).get("spans")
                elif channel == "image_clip":
                    art.image_clip = vector(channel)
                elif channel == "text_meta":
                    art.text_meta = vector(channel)
                    art.meta = self._meta(item, notes)
            except _Skip:
                continue
        try:
            built = item_rows(owner_id, item_id, art, self.embed, self.settings)
        except InvalidInput as e:  # rows.py refused what the ledger holds (frame times that do not fit)
            notes.append(f"{e.field or 'rows'}: {e.public_message}")
            return [], notes
        return built.rows, notes + built.notes

    def _meta(self, item: Mapping[str, Any], notes: list[str]) -> dict[str, Any] | None:
        """meta.json (title, description, query) for the text_meta row's text; None when unreadable."""
        key = item.get("meta_key")
        if not key:
            return None
        try:
            data = self.storage.get(str(key), self.max_meta_bytes)
            return json_object(data, "meta.json") if data is not None else None
        except EmbeddingError as e:
            if e.retryable:
                raise
            notes.append(f"meta.json: {e.public_message}")
            return None


__all__ = ["ArtifactIndex"]
