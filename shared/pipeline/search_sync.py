"""Step 5b, the search index: the owners' search tables follow the ledger. The manifest rebuild writes
them (the sweeper, which runs alone: the per-owner serialisation the manifests already have), through
an injected `SearchWriter` (shared.search.indexer.ArtifactIndex builds an item's rows from its artifacts
and writes them to LanceDB); the pipeline imports nothing of shared.search.

What the tables hold of an item is one attribute of its row, `search_indexed` = "{spec_version}:{hash}"
of the inputs its rows were built from (its indexed channels' status, sha256 and frame times, its
meta.json), or nothing. Each rebuild compares every item of the owner with what it should be in the
deployed version's tables:

    settled under the deployed version, COMPLETE or PARTIAL    its rows (a new hash: written again)
    REMOVED or QUARANTINED (or a person's reference photo)     no rows (indexed before: deleted)
    anything else (in flight; not yet settled under a new spec version)    left as it is

and writes what differs in ONE batch (at most SEARCH_BATCH_ITEMS items: one write per table, replacing
those items' rows, so a repeat is harmless). A removed item also leaves the owner's current version's
tables while a new version is being built. Indexing never changes an item's status: a batch over the
cap, or a failed write, leaves the owner's manifest due again (at once, or after SEARCH_RETRY_S) and
the items stay settled while the index catches up. The owner's version switch waits until the new
version's tables hold every item, so a query never reads a half-built index; the search pointer
(`search/current/{owner}.json`) names the version queries read, the owner's current one.

optimize() runs from the same rebuild, at most every SEARCH_OPTIMIZE_EVERY_S per owner and sooner once
SEARCH_OPTIMIZE_WRITES writes piled up; an owner with writes not yet optimized keeps its manifest due at
the next optimize time, so the last burst is optimized too. `reindex_search` (`se reindex`) rebuilds an
owner's tables from the artifacts: drop, then batches.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared import spec
from shared.errors import InvalidInput
from shared.pipeline import keys, plan
from shared.pipeline.core import Core
from shared.pipeline.ledger import COMPLETE, ITEM_SK, PARTIAL, PERSON, PERSON_PHOTO, REMOVED
from shared.pipeline.plan import QUARANTINED
from shared.timestamps import now_iso

log = logging.getLogger(__name__)

ItemRows = tuple[Mapping[str, Any], Mapping[str, Mapping[str, Any]]]  # (item row, {channel: row})
MAX_NOTE_CHARS = 500


class NotFound(InvalidInput):
    code = "not_found"
    status = 404


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()  # an item whose rows stay as they are (in flight, or not settled under this version)


@dataclass
class IndexResult:
    """What one SearchWriter.write did. `indexed`: the items whose rows are now exactly what their
    ledger rows say (item -> what was left out and why, "" for nothing); `retry`: the items not written
    (item -> reason: a read that may succeed later)."""

    indexed: dict[str, str] = field(default_factory=dict)
    retry: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    commits: int = 0


class SearchWriter(Protocol):
    """The port the pipeline writes the search index through (one implementation:
    shared.search.indexer.ArtifactIndex)."""

    channels: frozenset[str]  # the channels whose artifacts become rows

    def write(self, spec_version: str, owner_id: str, items: Mapping[str, ItemRows | None]) -> IndexResult:
        """Replace these items' rows in the owner's tables of `spec_version` in one batch (one write per
        table): an item with its ledger rows gets the rows its artifacts make, None gets none. Raises
        when the write fails (then nothing of it counts)."""
        ...

    def delete(self, spec_version: str, owner_id: str, item_ids: Collection[str]) -> int: ...

    def optimize(self, spec_version: str, owner_id: str) -> dict: ...

    def drop(self, spec_version: str, owner_id: str) -> None: ...


@dataclass
class SearchState:
    """One rebuild's sync: what is still to do, and the owner row's search fields."""

    pending: int = 0  # items whose tables are not what their rows say yet
    failed: bool = False  # a write failed (retried after SEARCH_RETRY_S)
    again_at: float | None = None  # when the owner's manifest is due again for the index's sake
    fields: dict[str, Any] = field(default_factory=dict)


def group(rows: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Mapping], dict[str, dict[str, Mapping]]]:
    """An owner's rows as {item: item row} and {item: {channel: row}}."""
    items: dict[str, Mapping[str, Any]] = {}
    chans: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in rows:
        if r.get("sk") == ITEM_SK:
            items[r["item_id"]] = r
        elif r.get("channel"):
            chans.setdefault(r["item_id"], {})[r["channel"]] = r
    return items, chans


class SearchSync(Core):
    """The owner's search tables, kept by the manifest rebuild."""

    def search_want(self, item: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]]) -> Any:
        """What the deployed version's tables should hold of the item: "{version}:{hash}" (its rows),
        None (no rows) or KEEP (leave them: in flight, or not settled under this version yet)."""
        status = item.get("status")
        if item.get("kind") == PERSON_PHOTO or status in (REMOVED, QUARANTINED):
            return None
        if status not in (COMPLETE, PARTIAL) or not self.settled(item, rows):
            return KEEP
        mine = self.indexed_rows(item, rows)
        parts = [
            f"{c}:{r.get('status')}:{r.get('sha256', '')}:{r.get('timestamps')}"
            + (f":{r['spans']}" if r.get("spans") is not None else "")  # scenes only: others' digests stay
            for c, r in sorted(mine.items())
        ]
        digest = plan.hash_of(str(item.get("kind", "")), str(item.get("meta_hash", "")), *parts)
        return f"{spec.SPEC_VERSION}:{digest}"

    def indexed_rows(
        self, item: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, Mapping[str, Any]]:
        """The item's channel rows its search rows come from: indexed channels that apply to it now (a
        row left from an earlier source of another modality is not one of them)."""
        chans = ("person_query",) if item.get("kind") == PERSON else self.channels_of(item)
        return {c: rows[c] for c in chans if c in rows and c in self.search.channels}

    def sync_search(
        self, owner_id: str, rows: list[Mapping[str, Any]], state: Mapping[str, Any]
    ) -> SearchState:
        """Bring the owner's tables of the deployed version up to the ledger (`rows`: every row of the
        owner, as the manifest rebuild read them; `state`: the owner's row). Never raises for the index's
        sake: a failed write is logged and retried."""
        items, chans = group(rows)
        write: list[str] = []
        remove: list[str] = []
        for item_id, item in items.items():
            want = self.search_want(item, chans.get(item_id, {}))
            have = item.get("search_indexed")
            if want is None and have:
                remove.append(item_id)
            elif isinstance(want, str) and want != have:
                write.append(item_id)
        out = SearchState()
        done, failed, commits = self._write_batch(
            owner_id, write[: self.settings.search_batch_items], remove, items, state.get("current_version")
        )
        out.pending = len(write) + len(remove) - done
        out.failed = failed
        now = self.clock()
        if out.pending:
            out.again_at = now + (self.settings.search_retry_s if failed else 0.0)
        out.fields, optimize_at = self._optimize(owner_id, state, commits, now)
        if optimize_at is not None:
            out.again_at = optimize_at if out.again_at is None else min(out.again_at, optimize_at)
        out.fields["search_pending"] = out.pending
        return out

    def _write_batch(
        self,
        owner_id: str,
        write: list[str],
        remove: list[str],
        items: Mapping[str, Mapping[str, Any]],
        current: str | None,
    ) -> tuple[int, bool, int]:
        """One batch: (items brought up to date, whether a write failed, commits made)."""
        if not write and not remove:
            return 0, False, 0
        version = spec.SPEC_VERSION
        batch: dict[str, ItemRows | None] = {}
        wants: dict[str, str | None] = {}
        for item_id in write:
            # read again, strongly consistent: owner-index (what the rebuild read) lags behind
            item, rows = self.ledger.rows(owner_id, item_id)
            want = self.search_want(item, rows) if item is not None else None
            if want is KEEP:
                continue  # changed since: the change marked the manifest again
            batch[item_id] = (item, self.indexed_rows(item, rows)) if want is not None else None
            wants[item_id] = want
        for item_id in remove:
            batch[item_id] = None
            wants[item_id] = None
        try:
            res = self.search.write(version, owner_id, batch)
        except Exception as e:  # an engine or S3 fault: the items stay settled, the write is retried
            log.warning(
                "search index of %s (%d items) failed: %s; retried in %.0f s",
                owner_id,
                len(batch),
                type(e).__name__,
                self.settings.search_retry_s,
            )
            self.metric("SearchIndexFailures", 1)
            return 0, True, 0
        failed = bool(res.retry)
        done = 0
        for item_id, note in res.indexed.items():
            want = wants.get(item_id)
            if want is None and not self._leave_other_versions(owner_id, item_id, items, current):
                failed = True
                continue
            self.ledger.set_search(owner_id, item_id, want, note[:MAX_NOTE_CHARS] or None)
            done += 1
        for item_id, reason in res.retry.items():
            log.info("search index of %s/%s waits: %s", owner_id, item_id, reason)
        if res.commits:
            self.metric("SearchRowsWritten", res.rows)
        return done, failed, res.commits

    def _leave_other_versions(
        self, owner_id: str, item_id: str, items: Mapping[str, Mapping[str, Any]], current: str | None
    ) -> bool:
        """A removed item also leaves the tables queries may read while a new version is built: the
        owner's current version's and the one its rows were written to."""
        have = str((items.get(item_id) or {}).get("search_indexed") or "")
        versions = {v for v in (have.partition(":")[0], current) if v and v != spec.SPEC_VERSION}
        try:
            for v in sorted(versions):
                self.search.delete(v, owner_id, [item_id])
        except Exception as e:
            log.warning(
                "search: removing %s/%s from an older version failed: %s", owner_id, item_id, type(e).__name__
            )
            return False
        return True

    def _optimize(
        self, owner_id: str, state: Mapping[str, Any], commits: int, now: float
    ) -> tuple[dict[str, Any], float | None]:
        """optimize() when due: (the owner row's fields, when the next one is due, if writes wait)."""
        writes = int(state.get("search_writes") or 0) + (1 if commits else 0)
        since = state.get("search_optimized_at")
        since = float(since) if since is not None else (now if writes else None)
        every = self.settings.search_optimize_every_s
        if writes and (writes >= self.settings.search_optimize_writes or now - since >= every):
            try:
                self.search.optimize(spec.SPEC_VERSION, owner_id)
                writes, since = 0, now
            except Exception as e:
                log.warning(
                    "search: optimize of %s failed: %s; tried again later", owner_id, type(e).__name__
                )
                since = now  # not before another period has passed
        fields = {"search_writes": writes, "search_optimized_at": since}
        return fields, (since + every if writes and since is not None else None)

    def write_search_pointer(self, owner_id: str, version: str) -> None:
        write_search_pointer(self.storage, owner_id, version, now_iso(self.clock()))

    def reindex_search(
        self,
        owner_id: str,
        spec_version: str | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Rebuild the owner's search tables of the deployed spec version from its artifacts: drop them,
        then write every settled item in batches of SEARCH_BATCH_ITEMS. `progress(done, total)` after
        each batch. Items that could not be read now, or all that remain when a write fails, are left to
        the sweeper (the owner's manifest is marked). Another version's tables cannot be rebuilt here:
        the ledger names only the deployed version's artifacts."""
        keys.check_id(owner_id, "owner_id")
        if self.search is None:
            raise InvalidInput("search indexing is off in this deployment (SEARCH_INDEX=0)", field="search")
        version = spec_version or spec.SPEC_VERSION
        if version != spec.SPEC_VERSION:
            raise InvalidInput(
                f"only the deployed spec version {spec.SPEC_VERSION} can be rebuilt from the ledger",
                field="spec_version",
            )
        items, chans = group(self.ledger.owner_rows(owner_id))
        if not items:
            raise NotFound("has no items", field="owner_id")
        # first the ledger forgets these tables (a rebuild cut short leaves no item marked as indexed
        # whose rows went with the drop: the sweeper writes it at the owner's next rebuild), then they go
        for item_id, item in items.items():
            if str(item.get("search_indexed") or "").startswith(f"{version}:"):
                self.ledger.set_search(owner_id, item_id, None)
        self.search.drop(version, owner_id)
        todo = [i for i, item in items.items() if isinstance(self.search_want(item, chans.get(i, {})), str)]
        try:
            out = self._reindex_batches(owner_id, version, todo, progress)
        except Exception:
            self.mark_manifest(owner_id)  # the sweeper finishes what this could not
            raise
        if out["retry"]:
            self.mark_manifest(owner_id)
        self.search.optimize(version, owner_id)
        owner = self.ledger.owner_state(owner_id) or {}
        if owner.get("current_version") == version:
            self.write_search_pointer(owner_id, version)
        return {
            "owner_id": owner_id,
            "spec_version": version,
            **out,
            "current": owner.get("current_version") == version,
        }

    def _reindex_batches(
        self, owner_id: str, version: str, todo: list[str], progress: Callable[[int, int], None] | None
    ) -> dict[str, Any]:
        total, rows, done = len(todo), 0, 0
        left_out: dict[str, str] = {}
        retry: dict[str, str] = {}
        step = self.settings.search_batch_items
        for start in range(0, total, step):
            batch: dict[str, ItemRows | None] = {}
            wants: dict[str, Any] = {}
            for item_id in todo[start : start + step]:
                item, chan_rows = self.ledger.rows(owner_id, item_id)
                want = self.search_want(item, chan_rows) if item is not None else KEEP
                if isinstance(want, str):
                    batch[item_id], wants[item_id] = (item, self.indexed_rows(item, chan_rows)), want
            res = self.search.write(version, owner_id, batch)
            for item_id, note in res.indexed.items():
                self.ledger.set_search(owner_id, item_id, wants[item_id], note[:MAX_NOTE_CHARS] or None)
                if note:
                    left_out[item_id] = note
            retry.update(res.retry)
            rows += res.rows
            done += len(res.indexed)
            if progress is not None:
                progress(min(start + step, total), total)
        return {"items": done, "rows": rows, "left_out": left_out, "retry": retry}


__all__ = ["KEEP", "IndexResult", "NotFound", "SearchState", "SearchSync", "SearchWriter", "group"]


def write_search_pointer(storage: Any, owner_id: str, version: str, updated_at: str) -> None:
    """search/current/{owner}.json: the version whose tables the owner's queries read
    (shared.search.indexes.read_pointer reads it)."""
    doc = {"owner_id": owner_id, "spec_version": version, "updated_at": updated_at}
    storage.put(keys.search_current_key(owner_id), json.dumps(doc).encode(), "application/json")
