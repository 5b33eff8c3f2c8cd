"""Step 5, completion and manifests: an item whose channels are all final for its current inputs is
COMPLETE, PARTIAL or QUARANTINED; its owner's manifest is marked for a rebuild, which the sweeper
writes (one parquet per owner and spec version) together with the owner's search tables
(shared.pipeline.search_sync), and with which the owner's readers switch versions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from shared import spec
from shared.pipeline import keys, manifests, plan
from shared.pipeline.ledger import (
    COMPLETE,
    PARTIAL,
    PERSON,
    PERSON_PHOTO,
    REMOVED,
    RETRY,
)
from shared.pipeline.plan import QUARANTINED, SUCCEEDED
from shared.pipeline.search_sync import SearchSync, group
from shared.timestamps import now_iso

log = logging.getLogger(__name__)

PARQUET = "application/vnd.apache.parquet"


class Completion(SearchSync):
    """Item status, the owner's manifest, search tables and spec version."""

    def complete(
        self,
        owner_id: str,
        item_id: str,
        *,
        dispatch_id: str | None = None,
        retry_at: float | None = None,
        gpu_seconds: float = 0.0,
        known: tuple[Any, Any] | None = None,
        again: int = 0,
    ) -> str | None:
        """When every applicable channel is final for the current inputs and nothing is open, the item is
        COMPLETE (all succeeded), PARTIAL (some failed) or QUARANTINED, and its owner's manifest is marked
        for a rebuild. With `dispatch_id`, that dispatch is closed in the same write. `known`: the item's
        rows as the caller just left them (saves reading them again)."""
        item, rows = known if known is not None else self.ledger.rows(owner_id, item_id)
        if (
            again
            and item is not None
            and retry_at is None
            and item.get("status") != REMOVED
            and self.final_status(item, rows) is None
        ):
            retry_at = self.clock()  # changed under the result: the sweeper advances it again, now
        status = None
        if item is not None and item.get("status") == REMOVED and item.get("run_id"):
            self.runs.count_item(item["run_id"], owner_id, item_id, "skipped")
        if item is not None and item.get("status") != REMOVED and retry_at is None:
            open_dispatch = item.get("dispatch_id") and item.get("dispatch_id") != dispatch_id
            if not open_dispatch and (dispatch_id or item.get("dispatch_state") != RETRY):
                status = self.final_status(item, rows)
        fields: dict[str, Any] = {}
        if status is not None:
            fields = {
                "completed_at": now_iso(self.clock()),
                "manifest_hash": _hash_rows(rows, self.channels_of(item)),
            }
        changed = status is not None and (
            item.get("status") != status or item.get("manifest_hash") != fields["manifest_hash"]
        )
        if dispatch_id is not None:
            released = self.ledger.release(
                owner_id,
                item_id,
                dispatch_id,
                retry_at=retry_at,
                gpu_seconds=gpu_seconds,
                status=status if changed else None,
                fields=fields if changed else None,
                sources={"media_hash": item.get("media_hash"), "meta_hash": item.get("meta_hash")},
            )
            if not released:
                fresh = self.ledger.rows(owner_id, item_id)
                if fresh[0] is not None and fresh[0].get("dispatch_id") == dispatch_id and again < 3:
                    # Still this dispatch: the item changed after it was read (removed, a new source or
                    # meta.json): decide again from what the ledger holds now, and close it.
                    return self.complete(
                        owner_id,
                        item_id,
                        dispatch_id=dispatch_id,
                        retry_at=retry_at,
                        gpu_seconds=gpu_seconds,
                        known=fresh,
                        again=again + 1,
                    )
                # A concurrent apply of the same result (the webhook and the sweeper's poll) closed the
                # dispatch first, perhaps from rows read before this one's text channels were written:
                # decide the item's status again from what the ledger holds now.
                return self.complete(owner_id, item_id, known=fresh) if retry_at is None else None
        elif changed:
            self.ledger.set_item_status(owner_id, item_id, status, **fields)
        if changed:
            self.mark_manifest(owner_id)
            self.metric("ItemsCompleted", 1)
            self.finalized(owner_id, item_id, item, status)
        return status

    def finalized(self, owner_id: str, item_id: str, item: Mapping[str, Any], status: str | None) -> None:
        """An item reached a final status: its reprocess run counts it; a photo's person is rebuilt."""
        if item.get("kind") == PERSON_PHOTO and item.get("person_id"):
            self.persons.mark(owner_id, keys.person_item_id(item["person_id"]))
        run_id = item.get("run_id")
        if run_id:
            self.runs.count_item(run_id, owner_id, item_id, "failed" if status == QUARANTINED else "done")

    def channels_of(self, item: Mapping[str, Any]) -> tuple[str, ...]:
        return plan.applicable(plan.inputs(item), self.settings.channels)

    def final_status(self, item: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]]) -> str | None:
        inputs = plan.inputs(item)
        chans = plan.applicable(inputs, self.settings.channels)
        hashes = plan.input_hashes(inputs, chans)
        if not chans or not all(plan.current(rows.get(c), c, hashes.get(c)) for c in chans):
            return None
        statuses = {rows[c]["status"] for c in chans}
        return QUARANTINED if QUARANTINED in statuses else COMPLETE if statuses == {SUCCEEDED} else PARTIAL

    def mark_manifest(self, owner_id: str) -> None:
        """The owner's manifest is stale: the sweeper rebuilds it once MANIFEST_DELAY_S has passed (one
        rebuild for a burst of completions, one writer: the sweeper runs alone).

        A mark this process made is remembered with the rebuild's due time: until shortly before it, a
        further mark would change nothing the rebuild needs (it starts at that time, after this
        completion's writes, and reads every row of the owner), so it is not written again. The margin
        covers index propagation and clocks between functions."""
        now = self.clock()
        delay = self.settings.manifest_delay_s
        due = self._manifest_due.get(owner_id)
        if due is not None and now < due - max(2.0, 0.2 * delay):
            return
        if len(self._manifest_due) >= 10_000:
            self._manifest_due.clear()
        self._manifest_due[owner_id] = self.ledger.mark_manifest(owner_id, now + delay)

    def write_manifest(self, owner_id: str, state: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Rebuild the owner's manifest of the deployed spec version from the ledger (owner-index) and PUT
        it: one PutObject, so a reader sees the old file or the new one, never half of one.

        Versions side by side: readers use the owner's *current* version (the ledger's owner row, and
        `manifests/current/{owner}.json` in S3). It moves to the deployed version only once every item of
        the owner is settled under it (each channel final for its current inputs and recipe, with its
        artifact under that version), so nobody reads a half-migrated mix. An owner with no version yet
        gets the deployed one at once. With search tables kept, they are brought up to the ledger first
        and the switch also waits for the deployed version's tables to hold every item; the search
        pointer follows the current version. Returns the owner's version state (recorded on its row)
        and, under "search", the index's (shared.pipeline.search_sync.SearchState)."""
        rows = list(self.ledger.owner_rows(owner_id))
        version = spec.SPEC_VERSION
        key = keys.manifest_key(version, owner_id)
        self.storage.put(key, manifests.to_parquet(manifests.manifest_rows(rows, version)), PARQUET)
        progress = self.version_progress(rows)
        current = (state or {}).get("current_version")
        search = self.sync_search(owner_id, rows, state or {}) if self.search is not None else None
        indexed = search is None or search.pending == 0
        if current != version and (current is None or (progress["settled"] == progress["items"] and indexed)):
            pointer = {
                "owner_id": owner_id,
                "spec_version": version,
                "manifest_key": key,
                "previous_version": current,
                "switched_at": now_iso(self.clock()),
            }
            self.storage.put(keys.current_key(owner_id), json.dumps(pointer).encode(), "application/json")
            if self.ledger.switch_version(owner_id, version, current):
                log.info("owner %s now reads spec version %s (was %s)", owner_id, version, current)
                self.metric("VersionSwitches", 1)
            current = version
        if search is not None and current == version:
            self.write_search_pointer(owner_id, version)
        return {
            "current_version": current,
            "next_version": version if current != version else None,
            "items": progress["items"],
            "settled": progress["settled"],
            "search": search,
        }

    def version_progress(self, rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
        """How many of an owner's items (removed ones aside) are settled under the deployed version."""
        items, chans = group(rows)
        live = [i for i in items.values() if i.get("status") != REMOVED]
        settled = sum(1 for i in live if self.settled(i, chans.get(i["item_id"], {})))
        return {"items": len(live), "settled": settled}

    def settled(self, item: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]]) -> bool:
        """Every channel of the item is final for its current inputs and recipe, under the deployed spec
        version, and nothing is open (no dispatch, retry or pending rebuild)."""
        if item.get("dispatch_state") or item.get("sweep"):
            return False
        if item.get("kind") == PERSON:
            chans: tuple[str, ...] = ("person_query",) if "person_query" in self.settings.channels else ()
            hashes = {"person_query": str(item.get("photos_hash", ""))}
        else:
            chans = self.channels_of(item)
            hashes = plan.input_hashes(plan.inputs(item), chans)
        return all(
            plan.current(rows.get(c), c, hashes.get(c)) and rows[c].get("spec_version") == spec.SPEC_VERSION
            for c in chans
        )


def _hash_rows(rows: Mapping[str, Mapping[str, Any]], chans: tuple[str, ...]) -> str:
    return plan.hash_of(*(f"{c}:{rows[c].get('status')}:{rows[c].get('sha256', '')}" for c in chans))
