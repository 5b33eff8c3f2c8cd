"""The search engine interface: what the pipeline writes and what a query reads, engine-agnostic.

A row is a *moment*: a transcript window, a video frame, an image, an item (its title/description, its
pooled video vector) or a person (its query vector), with its time span. Rows live in one index per
(spec version, owner): `search/{spec_version}/{owner_id}/`, one table per vector space

    text     MiniLM 384-d   transcript windows, item meta              (+ the BM25 index on `text`)
    visual   CLIP 512-d     frames, images, the video's pooled vector
    persons  CLIP 512-d     person query vectors (looked up by id, never ranked)

so every query is a plain search of one table: no prefilter on the owner (the index *is* the owner's),
none on the space. An engine implements `SearchEngine`; fusion, merging and validation live above it
(shared.search.query), so another engine only implements these few calls.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

# kinds of moments
TRANSCRIPT_WINDOW = "transcript_window"
FRAME = "frame"
IMAGE = "image"
ITEM = "item"  # item-level: no span of its own (text_meta, the pooled video vector)
PERSON = "person"
SCENE = "scene"  # a shot of a video: its span, its keyframe's vector (thumbnail: rows.scene_thumbnail_key)
KINDS = (TRANSCRIPT_WINDOW, FRAME, IMAGE, ITEM, PERSON, SCENE)

# vector spaces: table name -> (model, dims). A channel's space follows from its spec entry's model.
TEXT, VISUAL, PERSONS = "text", "visual", "persons"
SPACES: dict[str, tuple[str, int]] = {
    TEXT: ("minilm-l6-v2", 384),
    VISUAL: ("clip-vit-b-32", 512),
    PERSONS: ("clip-vit-b-32", 512),
}


@dataclass(frozen=True, eq=False)
class Row:
    """One moment to index. `id` is unique within the owner's index and stable across rebuilds
    (`{item_id}:{channel}:{n}`), so rewriting an item is idempotent."""

    id: str
    space: str  # text | visual | persons
    kind: str
    owner_id: str
    item_id: str  # an upload's item id, or a person's ledger id "@{person_id}"
    channel: str  # the spec channel the vector came from (transcript rows: "transcript")
    start_s: float
    end_s: float
    text: str
    vector: np.ndarray  # float32 [dims], unit length


@dataclass(frozen=True)
class Hit:
    """One row as a ranked list returns it. `score`: cosine similarity (vector lists) or BM25 (text)."""

    id: str
    kind: str
    owner_id: str
    item_id: str
    channel: str
    start_s: float
    end_s: float
    text: str
    score: float


@dataclass
class WriteResult:
    """What one `write` did, per table: rows written, rows of replaced items removed."""

    written: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    commits: int = 0


@runtime_checkable
class SearchEngine(Protocol):
    """One (spec version)'s indexes, all owners. Every call names the owner and touches that owner's
    index only. Ids are validated by the caller (shared.search.query / rows) and again here."""

    spec_version: str

    def write(
        self, owner_id: str, rows: Sequence[Row], *, replace_items: Collection[str] = ()
    ) -> WriteResult:
        """Add `rows` in one batch (at most one commit per table). Items named in `replace_items` lose
        every row they had before, in every table, in the same commit: "these items' rows are now
        exactly `rows`" (an item named with no rows leaves the index)."""
        ...

    def delete_items(self, owner_id: str, item_ids: Collection[str]) -> int:
        """Remove every row of these items; the number removed."""
        ...

    def vector_search(
        self, owner_id: str, space: str, vector: np.ndarray, *, k: int, item_id: str | None = None
    ) -> list[Hit]:
        """The k rows of `space` nearest `vector` (cosine), best first; [] when the table is absent."""
        ...

    def text_search(self, owner_id: str, text: str, *, k: int, item_id: str | None = None) -> list[Hit]:
        """BM25 over the text table's `text`, best first; [] when the table is absent."""
        ...

    def person_vector(self, owner_id: str, person_id: str) -> np.ndarray | None:
        """A person's query vector, or None when the owner has no such person."""
        ...

    def counts(self, owner_id: str) -> dict[str, int]:
        """Rows per table of the owner's index; {} when the owner has none."""
        ...

    def optimize(self, owner_id: str) -> dict:
        """Merge small fragments, fold new rows into the indexes, build the ANN index once a table
        is large enough, drop old versions. Run on a schedule, not per write."""
        ...

    def drop(self, owner_id: str) -> None:
        """Remove the owner's whole index of this spec version (a rebuild starts from nothing)."""
        ...
