"""The ledger (DESIGN.md, "Ledger"): one table, an item row and a row per channel, over the storage port
of shared.pipeline.ledger_table (DynamoDB in production and in moto, shared.aws.ledger; a dict in unit
tests, shared.dev.memory_ledger). Each transition's condition and update are written once, here.

Keys (template.yaml's LedgerTable is the one definition; tests/integration/infra checks these names):

    pk = "{owner_id}#{item_id}"   sk = "ITEM" | "CH#{channel}"
    pk = "{owner_id}#~"           sk = "MANIFEST"        the owner's row: manifest generation, spec versions
    pk = "{owner_id}#~"           sk = "SEARCH"          the owner's search alarm (a due time, nothing else)
    pk = "~runs"                  sk = "RUN#{run_id}"    reprocess runs (run ids sort by start time)
    pk = "{owner_id}#~refused"    sk = "HEAD" | "R#{slot}"   refused uploads: a counter, a ring of rows
                                  ("~" for the owner when the key names no valid one)
    owner-index   owner_id + osk ("{item_id}#{sk}")     every row of an owner, items and channels
    sweep-index   sweep ("due", only while a dispatch or retry is open) + due_at (epoch seconds)
    owners-index  directory ("owners", owner rows only) + manifest_owner   the list of owners
                  directory ("refusals", refusal counters only) + manifest_owner   owners with refusals
    expires_at    the table's TTL attribute (epoch seconds): only refusal rows carry it

Item row: kind, modality, media_key/etag/size/mtime/seq, media_hash, meta_key/meta_hash/meta_mtime,
status (PROCESSING | COMPLETE | PARTIAL | QUARANTINED | REMOVED), attempts, the open dispatch
(dispatch_id, dispatch_state CLAIMED | SUBMITTED, dispatch_channels, dispatch_hash, job_id) or a
retry (dispatch_state RETRY), due_at, quarantine_reason, gpu_seconds, timestamps.

Channel row: status (PENDING | DISPATCHED | SUCCEEDED | FAILED | QUARANTINED), input_hash,
fingerprint, spec_version, attempts, dispatch_id, job_id, artifact_key, dims, model, sha256, bytes,
error, gpu_seconds, timestamps.

Every transition is a conditional write; a lost condition means another writer got there first and
is reported as False / None, never as an error. Multi-row transitions (a claim, a result's channel
rows) are one transaction; one cancelled for a conflicting concurrent write is a retryable error (a
claim) or falls back to one conditional write per row (a result).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from shared import spec
from shared.errors import StoreError
from shared.pipeline.ledger_table import (
    CONDITION_LOST,
    OWNER_INDEX,
    OWNER_KEY,
    OWNER_SORT,
    OWNERS_INDEX,
    OWNERS_SORT,
    PK,
    SK,
    SWEEP_INDEX,
    SWEEP_SORT,
    BeginsWith,
    Between,
    Condition,
    Key,
    Query,
    Table,
    Update,
    all_of,
    any_of,
    contains,
    eq,
    eq_or_missing,
    exists,
    gt,
    le,
    lt,
    missing,
    ne,
    query_all,
)
from shared.pipeline.plan import DISPATCHED, FAILED, PENDING, QUARANTINED, SUCCEEDED
from shared.pipeline.policy import CLAIMED, RETRY, SUBMITTED
from shared.timestamps import iso_epoch, now_iso  # noqa: F401  (iso_epoch: importable from here, as before)

OWNERS = "owners"
REFUSALS_DIR = "refusals"  # owners-index partition of the refusal counters
REFUSED_ITEM, REFUSED_HEAD = "~refused", "HEAD"
UNOWNED = "~"  # the refusals of keys that name no valid owner ("~" is outside the id pattern)
TTL_ATTR = "expires_at"  # template.yaml's TimeToLiveSpecification
ITEM_SK = "ITEM"
MANIFEST_SK = "MANIFEST"  # one row per owner, pk "{owner_id}#~" ("~" is outside the id pattern)
SEARCH_SK = "SEARCH"  # the owner's search alarm, pk "{owner_id}#~": when its tables want a rebuild
DUE = "due"
PROCESSING, COMPLETE, PARTIAL, REMOVED = "PROCESSING", "COMPLETE", "PARTIAL", "REMOVED"
UPLOAD, PERSON, PERSON_PHOTO = "upload", "person", "person_photo"  # item kinds
MAX_ITEM_ROWS = 1 + len(spec.CHANNELS)  # an item row and at most one row per channel
# An owner's osks split by their first character (an item id's, [A-Za-z0-9_-], or "@" for a person's),
# in osk order: each character in exactly one, so their rows are the owner's rows, each once. A dry
# run reads an owner in these slices, concurrently. (For hex or uuid ids: 0-4, 5-9, a-f.)
OSK_SEGMENTS = (
    ("-", "4"), ("5", "9"), ("@", "M"), ("N", "Z"), ("_", "f"), ("g", "m"), ("n", "s"), ("t", "z")
)  # fmt: skip


def item_pk(owner_id: str, item_id: str) -> str:
    return f"{owner_id}#{item_id}"


_IMPLIED_BY_OSK = frozenset({PK, SK, OWNER_KEY, "item_id", "channel"})


def _implied_by_osk(owner_id: str, osk: str) -> dict[str, str]:
    """The attributes an owner-index row's osk ("{item_id}#{sk}", item ids have no "#") fixes."""
    item_id, _, sk = osk.partition("#")
    out = {PK: item_pk(owner_id, item_id), SK: sk, OWNER_KEY: owner_id, "item_id": item_id}
    channel = sk_channel(sk)
    if channel is not None:
        out["channel"] = channel
    return out


def channel_sk(channel: str) -> str:
    return f"CH#{channel}"


def sk_channel(sk: str) -> str | None:
    """The channel a channel row's sort key names (channel_sk's inverse); None for any other row."""
    return sk[3:] if sk.startswith("CH#") else None


class Ledger:
    """The ledger's transitions over a storage port (`table`). `writes` / `write_units`: what the table
    counts (DynamoTable: items written, a transaction's one each, and what DynamoDB bills for them, 2 a
    transactional item), for the benches."""

    def __init__(self, table: Table, *, clock: Any = time.time) -> None:
        self.table = table
        self.clock = clock

    @property
    def writes(self) -> int:
        return int(getattr(self.table, "writes", 0))

    @property
    def write_units(self) -> int:
        return int(getattr(self.table, "write_units", 0))

    # ------------------------------------------------------------------ reads

    def rows(self, owner_id: str, item_id: str) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
        """(item row, {channel: row}), strongly consistent."""
        item: dict[str, Any] | None = None
        channels: dict[str, dict[str, Any]] = {}
        for row in query_all(self.table, Query(item_pk(owner_id, item_id), consistent=True)):
            if row[SK] == ITEM_SK:
                item = row
            elif (named := sk_channel(row[SK])) is not None:
                # a row with no attributes but its keys (moto's threaded server can leave one when two
                # writers create the same row at once) still names its channel: the planner sees it as new
                channels[row.get("channel") or named] = row
        return item, channels

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        """One row by its key, strongly consistent."""
        return self.table.get({PK: pk, SK: sk}, consistent=True)

    def item(self, owner_id: str, item_id: str) -> dict[str, Any] | None:
        return self._get(item_pk(owner_id, item_id), ITEM_SK)

    def _owner_query(
        self, owner_id: str, prefix: str | None = None, segment: tuple[str, str] | None = None
    ) -> Query:
        """An owner-index query of one owner's rows (those whose osk starts with `prefix`, or whose
        first character is in `segment`, one of OSK_SEGMENTS)."""
        sort: Condition | None = None
        if prefix is not None:
            sort = BeginsWith(OWNER_SORT, prefix)
        elif segment is not None:
            first, last = segment
            # every osk character is printable ASCII, below "\x7f": "{last}\x7f" is above every osk
            # that starts with `last`
            sort = Between(OWNER_SORT, first, last + "\x7f")
        return Query(owner_id, index=OWNER_INDEX, sort=sort)

    def owner_rows(self, owner_id: str) -> Iterator[dict[str, Any]]:
        """Every row of an owner through owner-index (paged; never a scan)."""
        yield from query_all(self.table, self._owner_query(owner_id))

    def owner_page(
        self,
        owner_id: str,
        start: Mapping[str, Any] | None,
        limit: int,
        fields: Iterable[str] | None = None,
        segment: tuple[str, str] | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """One owner-index page of at most `limit` rows from after the row keyed `start`; (rows, more).
        `segment`: only rows whose osk's first character is in it (one of OSK_SEGMENTS).
        `fields`: only these attributes of each row (and its keys), e.g. what a planner reads. What
        `osk` implies is not fetched but rebuilt from it (every owner-index row is written by `_base`):
        pk, sk, owner_id, item_id and a channel row's channel, 5 of a planned channel row's 12."""
        wanted = None if fields is None else tuple(sorted({OWNER_SORT, *fields} - _IMPLIED_BY_OSK))
        query = replace(self._owner_query(owner_id, segment=segment), limit=limit, start=start or None)
        rows, last = self.table.query(replace(query, fields=wanted))
        if fields is not None:
            for row in rows:
                row.update(_implied_by_osk(owner_id, row[OWNER_SORT]))
        return rows, last is not None

    def due(self, now: float, limit: int) -> list[dict[str, Any]]:
        """Item rows whose open dispatch or retry is due (sweep-index; never a scan), oldest first."""
        query = Query(DUE, index=SWEEP_INDEX, sort=le(SWEEP_SORT, float(now)), limit=limit)
        return list(query_all(self.table, query, limit))

    def next_owner(self, after: str | None) -> str | None:
        """The first owner (owners-index order) after `after`; None past the last."""
        for row in self.owner_states(after, page=1):
            return row[OWNERS_SORT]
        return None

    def owners(self) -> list[str]:
        """Owners with an owner row (one is made when their first item completes or is quarantined)."""
        return [r[OWNERS_SORT] for r in self.owner_states()]

    # ------------------------------------------------------------------ writes

    @staticmethod
    def _key(owner_id: str, item_id: str, sk: str) -> Key:
        return {PK: item_pk(owner_id, item_id), SK: sk}

    def _update(
        self,
        owner_id: str,
        item_id: str,
        sk: str,
        upd: Update,
        condition: Condition | None = None,
        *,
        return_new: bool = False,
    ) -> dict[str, Any] | bool | None:
        """One conditional update; a lost condition is False (None with `return_new`), never an error."""
        return self.table.update(self._key(owner_id, item_id, sk), upd, condition, return_new=return_new)

    def _base(self, upd: Update, owner_id: str, item_id: str, sk: str) -> Update:
        now = now_iso(self.clock())
        upd.set_default("created_at", now)
        return upd.set(owner_id=owner_id, item_id=item_id, osk=f"{item_id}#{sk}", updated_at=now)

    def record_media(
        self,
        owner_id: str,
        item_id: str,
        *,
        kind: str,
        modality: str,
        key: str,
        etag: str,
        size: int,
        mtime: str,
        media_hash: str,
        seq: str | None,
        **extra: Any,
    ) -> dict[str, Any] | None:
        """Record the item's current media source. Refused (None) when the ledger already holds it (a
        duplicate event) or a newer one: a later S3 sequencer for the same key, or a later LastModified."""
        upd = self._base(Update(), owner_id, item_id, ITEM_SK).set(
            kind=kind,
            modality=modality,
            media_key=key,
            media_etag=etag,
            media_size=size,
            media_mtime=mtime,
            media_hash=media_hash,
            media_seq=seq,
            **extra,
        )
        upd.remove("removed_at")
        # A new source starts a fresh attempt count and a fresh status.
        upd.set(status=PROCESSING, attempts=0)
        newer = lt("media_mtime", mtime) | (eq("media_mtime", mtime) & ne("media_hash", media_hash))
        changed = ne("media_hash", media_hash) | eq("status", REMOVED)
        cond = missing("media_mtime") | (newer & changed)
        if seq is not None:
            cond = cond & any_of(missing("media_seq"), ne("media_key", key), lt("media_seq", seq))
        return self._update(owner_id, item_id, ITEM_SK, upd, cond, return_new=True)  # type: ignore[return-value]

    def record_meta(
        self, owner_id: str, item_id: str, *, key: str, etag: str, mtime: str, meta_hash: str
    ) -> dict[str, Any] | None:
        upd = self._base(Update(), owner_id, item_id, ITEM_SK).set(
            meta_key=key, meta_etag=etag, meta_mtime=mtime, meta_hash=meta_hash
        )
        upd.set_default("status", PROCESSING)
        cond = missing("meta_mtime") | le("meta_mtime", mtime)
        return self._update(owner_id, item_id, ITEM_SK, upd, cond, return_new=True)  # type: ignore[return-value]

    def mark_removed(self, owner_id: str, item_id: str, key: str) -> bool:
        """The item's media or meta.json was deleted: the item says so (its artifacts stay)."""
        now = now_iso(self.clock())
        upd = Update().set(status=REMOVED, removed_at=now, removed_key=key, updated_at=now)
        cond = exists(PK) & (eq("media_key", key) | eq("meta_key", key))
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, cond))

    def record_person(self, owner_id: str, item_id: str, person_id: str) -> None:
        """The person's own row (its query vector's channel row hangs under it); made once."""
        upd = self._base(Update(), owner_id, item_id, ITEM_SK)
        upd.set(kind="person", modality="person", person_id=person_id).set_default("status", PROCESSING)
        self._update(owner_id, item_id, ITEM_SK, upd)

    def mark_person(self, owner_id: str, item_id: str, due_at: float, force_run: str | None = None) -> None:
        """The person's photos changed: its query vector is rebuilt by the sweeper (generation bumped)."""
        upd = Update().set(sweep=DUE, due_at=float(due_at), status=PROCESSING).increment("dirty_gen")
        if force_run is not None:
            upd.set(force_run=force_run)
        self._update(owner_id, item_id, ITEM_SK, upd, exists(PK))

    def person_written(self, owner_id: str, item_id: str, generation: int, fields: Mapping[str, Any]) -> bool:
        """The person's rebuild of `generation` is recorded; it leaves the sweep unless bumped since."""
        upd = (
            Update().set(updated_at=now_iso(self.clock()), **fields).remove("sweep", SWEEP_SORT, "force_run")
        )
        if self._update(owner_id, item_id, ITEM_SK, upd, eq("dirty_gen", generation)):
            return True
        self._update(owner_id, item_id, ITEM_SK, Update().set(**fields))
        return False

    def photo_rows(self, owner_id: str, person_item: str, limit: int) -> list[dict[str, Any]]:
        """A person's photo rows (items and channels) through owner-index: osk begins with "@{person}~"."""
        return list(query_all(self.table, self._owner_query(owner_id, prefix=f"{person_item}~"), limit))

    def reopen(self, owner_id: str, item_id: str) -> bool:
        """A quarantined item is replayed: fresh attempts, PROCESSING, its quarantine reason kept as last."""
        upd = Update().set(status=PROCESSING, attempts=0, updated_at=now_iso(self.clock()))
        upd.copy("last_quarantine_reason", "quarantine_reason").remove("quarantine_reason")
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, eq("status", QUARANTINED)))

    def set_search(self, owner_id: str, item_id: str, indexed: str | None, note: str | None = None) -> bool:
        """What the owner's search tables hold of the item: `indexed` ("{spec_version}:{hash}" of the
        rows written) or None (none), and what was left out of them, if anything."""
        upd = Update().set(search_indexed=indexed, search_note=note)
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, exists(PK)))

    def set_item_status(self, owner_id: str, item_id: str, status: str, **fields: Any) -> bool:
        upd = Update().set(status=status, updated_at=now_iso(self.clock()), **fields)
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, exists(PK) & ne("status", REMOVED)))

    def claim(
        self,
        owner_id: str,
        item_id: str,
        *,
        channels: Iterable[str],
        input_hashes: Mapping[str, str],
        dispatch_hash: str,
        deadline: float,
        run_id: str | None = None,
    ) -> str | None:
        """Claim the item's one dispatch before anything is POSTed: one transaction of a conditional write
        that opens the dispatch on the item row (only if none is open, and only for the current media)
        and each channel row marked DISPATCHED with it, all or nothing (one call instead of 1 + channels;
        the item row's condition alone serializes dispatches). Returns the new dispatch id, or None when
        another dispatch holds the item; a transaction cancelled by a concurrent write to one of its
        rows is a retryable StoreError (nothing was written)."""
        channels = list(channels)
        dispatch_id = uuid.uuid4().hex
        now = now_iso(self.clock())
        upd = Update().set(
            dispatch_id=dispatch_id,
            dispatch_state=CLAIMED,
            dispatch_channels=channels,
            dispatch_hash=dispatch_hash,
            dispatch_version=spec.SPEC_VERSION,
            dispatch_run=run_id,
            claimed_at=now,
            sweep=DUE,
            due_at=float(deadline),
            updated_at=now,
            job_id=None,
            dispatch_error=None,
            poll_failures=None,
            status=PROCESSING,
        )
        upd.increment("attempts")
        cond = all_of(
            exists(PK),
            eq("media_hash", dispatch_hash),
            ne("status", REMOVED),
            missing("dispatch_id") | eq("dispatch_state", RETRY),
        )
        writes: list[tuple[Key, Update, Condition | None]] = [
            (self._key(owner_id, item_id, ITEM_SK), upd, cond)
        ]
        for ch in channels:
            cu = self._base(Update(), owner_id, item_id, channel_sk(ch)).set(
                channel=ch,
                status=DISPATCHED,
                input_hash=input_hashes[ch],
                fingerprint=spec.CHANNELS[ch].fingerprint,
                spec_version=spec.SPEC_VERSION,
                dispatch_id=dispatch_id,
                runs_on=spec.CHANNELS[ch].runs_on,
                run_id=run_id,
            )
            writes.append((self._key(owner_id, item_id, channel_sk(ch)), cu.increment("attempts"), None))
        if len(writes) == 1:
            return dispatch_id if self.table.update(*writes[0]) else None
        codes = self.table.transact(writes)
        if codes is None:
            return dispatch_id
        if codes[0] == CONDITION_LOST:
            return None
        err = StoreError("ledger transaction failed: a concurrent write to the item's rows")
        err.retryable = True
        raise err

    def mark_submitted(
        self, owner_id: str, item_id: str, dispatch_id: str, job_id: str, due_at: float
    ) -> bool:
        upd = Update().set(
            dispatch_state=SUBMITTED, job_id=job_id, due_at=float(due_at), submitted_at=now_iso(self.clock())
        )
        cond = eq("dispatch_id", dispatch_id) & eq("dispatch_state", CLAIMED)
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, cond))

    def push_due(self, owner_id: str, item_id: str, dispatch_id: str, due_at: float, **fields: Any) -> bool:
        """The open dispatch is due again at `due_at`; `fields`: what the sweeper learnt of it meanwhile
        (dispatch_error: why its /run or /status failed; poll_failures: /status failures in a row)."""
        upd = Update().set(due_at=float(due_at), **fields)
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, eq("dispatch_id", dispatch_id)))

    def finish_channel(
        self,
        owner_id: str,
        item_id: str,
        channel: str,
        dispatch_id: str,
        status: str,
        fields: Mapping[str, Any],
    ) -> dict[str, Any] | None:
        """DISPATCHED -> SUCCEEDED | FAILED | PENDING (retryable) | QUARANTINED, for this dispatch only.
        Returns the row as written; None when the condition is lost (another writer finished it)."""
        upd, cond = self._finish(dispatch_id, status, fields)
        return self._update(owner_id, item_id, channel_sk(channel), upd, cond, return_new=True)  # type: ignore[return-value]

    def _finish(self, dispatch_id: str, status: str, fields: Mapping[str, Any]) -> tuple[Update, Condition]:
        upd = Update().set(status=status, updated_at=now_iso(self.clock()), **fields)
        return upd, eq("dispatch_id", dispatch_id) & eq("status", DISPATCHED)

    def finish_channels(
        self,
        owner_id: str,
        item_id: str,
        dispatch_id: str,
        results: Mapping[str, tuple[str, Mapping[str, Any]]],
        before: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> dict[str, dict[str, Any] | None]:
        """finish_channel for every channel of one result, each under its own condition. Returns each
        channel's row as written (None: its condition was lost, another writer finished it, or, after a
        transaction, the row is not known here).

        Two or more channels are one transaction (one call): when every condition holds, all are
        written and each row as written is `before`'s row (the caller's read) with the update applied
        (so `before` must be a read made while this dispatch was open: nothing but its own result
        changes a DISPATCHED row of the open dispatch); when one is lost, or the table cancels the
        transaction for a concurrent write, nothing of it is written and each row whose condition
        held is written on its own, under its own condition, as if no transaction had been tried."""
        updates = {ch: self._finish(dispatch_id, status, fields) for ch, (status, fields) in results.items()}
        codes = ["None"] * len(updates)  # one row: its own write
        if len(updates) > 1:
            writes = [(self._key(owner_id, item_id, channel_sk(ch)), u, c) for ch, (u, c) in updates.items()]
            cancelled = self.table.transact(writes)
            if cancelled is None:
                return {ch: u.post_image((before or {}).get(ch)) for ch, (u, _) in updates.items()}
            codes = cancelled
        return {
            ch: None
            if code == CONDITION_LOST
            else self._update(owner_id, item_id, channel_sk(ch), u, c, return_new=True)  # type: ignore[misc]
            for (ch, (u, c)), code in zip(updates.items(), codes, strict=True)
        }

    def put_lambda_channel(
        self,
        owner_id: str,
        item_id: str,
        channel: str,
        status: str,
        input_hash: str,
        fields: Mapping[str, Any],
        *,
        run_id: str | None = None,
    ) -> bool:
        """A Lambda channel's result (it runs in-process, no dispatch). Refused when the row already holds
        a SUCCEEDED result for the same inputs, fingerprint and spec version (a duplicate event), unless
        a reprocess run (`run_id`) that has not written it yet forces it."""
        fingerprint = spec.CHANNELS[channel].fingerprint
        upd = self._base(Update(), owner_id, item_id, channel_sk(channel)).set(
            channel=channel,
            status=status,
            input_hash=input_hash,
            fingerprint=fingerprint,
            spec_version=spec.SPEC_VERSION,
            runs_on=spec.CHANNELS[channel].runs_on,
            dispatch_id=None,
            run_id=run_id,
            **fields,
        )
        upd.increment("attempts")
        cond = any_of(
            missing("status"),
            ne("status", SUCCEEDED),
            ne("input_hash", input_hash),
            ne("fingerprint", fingerprint),
            ne("spec_version", spec.SPEC_VERSION),
            *((missing("run_id"), ne("run_id", run_id)) if run_id is not None else ()),
        )
        return bool(self._update(owner_id, item_id, channel_sk(channel), upd, cond))

    def carry_channel(
        self,
        owner_id: str,
        item_id: str,
        channel: str,
        row: Mapping[str, Any],
        spec_version: str,
        artifact_key: str | None,
    ) -> bool:
        """A final row of an older spec version, unchanged recipe: it now stands for `spec_version` (its
        artifact copied to `artifact_key`). Only if the row is still what the caller read."""
        upd = Update().set(spec_version=spec_version, carried_from=row.get("spec_version"))
        if artifact_key:
            upd.set(artifact_key=artifact_key)
        cond = all_of(
            eq("status", row.get("status")),
            eq("input_hash", row.get("input_hash")),
            eq("fingerprint", row.get("fingerprint")),
            eq_or_missing("spec_version", row.get("spec_version") or None),
        )
        return bool(self._update(owner_id, item_id, channel_sk(channel), upd, cond))

    def release(
        self,
        owner_id: str,
        item_id: str,
        dispatch_id: str,
        *,
        retry_at: float | None,
        gpu_seconds: float = 0.0,
        error: Mapping[str, Any] | None = None,
        status: str | None = None,
        fields: Mapping[str, Any] | None = None,
        sources: Mapping[str, Any] | None = None,
    ) -> bool:
        """Close the open dispatch; with `retry_at`, leave a RETRY for the sweeper at that time; with
        `status`, complete the item in the same write, only if the item is not removed and its sources
        are still `sources` (media_hash / meta_hash as the status was decided from; None: absent)."""
        upd = Update().set(updated_at=now_iso(self.clock()), last_error=dict(error) if error else None)
        if status is not None:
            upd.set(status=status, **(fields or {}))
        upd.remove(
            "dispatch_id",
            "dispatch_channels",
            "job_id",
            "claimed_at",
            "submitted_at",
            "dispatch_run",
            "dispatch_error",
            "poll_failures",
        )
        if retry_at is not None:
            upd.set(dispatch_state=RETRY, sweep=DUE, due_at=float(retry_at))
        else:
            upd.remove("dispatch_state", "sweep", "due_at")
        if gpu_seconds:
            upd.increment("gpu_seconds", float(gpu_seconds))
        cond = eq("dispatch_id", dispatch_id)
        if status is not None:
            same = [eq_or_missing(attr, value) for attr, value in (sources or {}).items()]
            cond = all_of(cond, ne("status", REMOVED), *same)
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, cond))

    def clear_retry(self, owner_id: str, item_id: str) -> bool:
        """A RETRY that has nothing left to run is closed."""
        upd = Update().remove("dispatch_state", "sweep", "due_at")
        cond = eq("dispatch_state", RETRY) & missing("dispatch_id")
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, cond))

    def mark_manifest(self, owner_id: str, due_at: float) -> float:
        """The owner's manifest needs a rebuild: bump its generation; due at `due_at` unless already due.
        The row is also the owner's entry in owners-index (with its spec-version state). Returns the
        time the rebuild is due (an earlier mark's, when one is pending)."""
        upd = Update().set(manifest_owner=owner_id, sweep=DUE, directory=OWNERS).increment("dirty_gen")
        upd.set_default(SWEEP_SORT, float(due_at))
        row = self._update(owner_id, "~", MANIFEST_SK, upd, return_new=True)
        return float((row or {}).get(SWEEP_SORT, due_at))  # type: ignore[union-attr]

    def manifest_written(
        self, owner_id: str, generation: int, again_at: float, state: Mapping[str, Any] | None = None
    ) -> bool:
        """The manifest of `generation` is written: done, unless newer completions bumped it since (then
        it stays due at `again_at`). `state`: the owner's spec-version fields to record with it."""
        state = dict(state or {})
        upd = Update().set(written_gen=generation, **state).remove("sweep", SWEEP_SORT)
        if self._update(owner_id, "~", MANIFEST_SK, upd, eq("dirty_gen", generation)):
            return True
        again = Update().set(written_gen=generation, due_at=float(again_at), **state)
        self._update(owner_id, "~", MANIFEST_SK, again)
        return False

    def set_search_alarm(self, owner_id: str, due_at: float) -> None:
        """The owner's search tables want a manifest rebuild at `due_at` (a retry, an optimize): its own
        row in the sweep-index, so that a later time never holds back the rebuild a completion asks for."""
        upd = Update().set(alarm_owner=owner_id, sweep=DUE, due_at=float(due_at))
        self._update(owner_id, "~", SEARCH_SK, upd)

    def search_alarm_rang(self, owner_id: str, due_at: float) -> bool:
        """The alarm of `due_at` went off: it leaves the sweep-index, unless it was set again since."""
        upd = Update().remove("sweep", SWEEP_SORT)
        return bool(self._update(owner_id, "~", SEARCH_SK, upd, eq(SWEEP_SORT, float(due_at))))

    def switch_version(self, owner_id: str, new: str, old: str | None) -> bool:
        """The owner's readers move from `old` (None: the owner had none yet) to `new`; once."""
        upd = Update().set(current_version=new, previous_version=old, switched_at=now_iso(self.clock()))
        upd.increment("switches")
        cond = eq("current_version", old) if old else missing("current_version")
        return bool(self._update(owner_id, "~", MANIFEST_SK, upd, cond))

    def owner_state(self, owner_id: str) -> dict[str, Any] | None:
        """The owner's row: manifest generation, current spec version and the next one's progress."""
        return self._get(item_pk(owner_id, "~"), MANIFEST_SK)

    def owner_states(self, after: str | None = None, *, page: int | None = None) -> Iterator[dict[str, Any]]:
        """Every owner's row after `after`, by owner id (owners-index, never a scan); `page`: rows a read."""
        sort = gt(OWNERS_SORT, after) if after else None
        yield from query_all(self.table, Query(OWNERS, index=OWNERS_INDEX, sort=sort, limit=page or None))

    def quarantine(self, owner_id: str, item_id: str, reason: str, channels: Iterable[str]) -> bool:
        """Retries exhausted: the item's unfinished channels, then the item, are QUARANTINED with the reason
        (channels first: whoever sees the item QUARANTINED sees its channels so too)."""
        for ch in channels:
            cu = Update().set(status=QUARANTINED, error={"code": "quarantined", "message": reason})
            self._update(owner_id, item_id, channel_sk(ch), cu, ne("status", SUCCEEDED))
        upd = Update().set(status=QUARANTINED, quarantine_reason=reason, updated_at=now_iso(self.clock()))
        upd.remove(
            "dispatch_id",
            "dispatch_channels",
            "job_id",
            "dispatch_state",
            "sweep",
            "due_at",
            "dispatch_error",
            "poll_failures",
        )
        return bool(self._update(owner_id, item_id, ITEM_SK, upd))


class Refusals:
    """Refused uploads in the ledger table (shared.pipeline.refusals says what and why). Per owner (or
    the pseudo-owner UNOWNED, shown as owner None), a counter row HEAD and a ring of `keep` rows
    R#{slot}: the n-th refusal takes slot (n-1) % keep, so an owner never holds more than `keep` rows,
    however many refusals come. Every row carries the table's TTL attribute; HEAD's is the latest, so a
    ring expires as a whole, and its counter restarts. DynamoDB deletes expired rows late (within
    days): reads skip them."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @staticmethod
    def _pk(owner_id: str) -> str:
        return item_pk(owner_id, REFUSED_ITEM)

    def record(
        self, owner_id: str, *, reason: str, message: str, key: str, keep: int, ttl_s: float
    ) -> dict[str, Any]:
        """One refusal under `owner_id` (UNOWNED for none): two writes, the counter then its slot."""
        now = self.ledger.clock()
        expires = int(now + ttl_s)
        head = (
            Update()
            .increment("seq")
            .set(directory=REFUSALS_DIR, manifest_owner=owner_id, last_at=now_iso(now), **{TTL_ATTR: expires})
        )
        pk = self._pk(owner_id)
        row = self.ledger.table.update({PK: pk, SK: REFUSED_HEAD}, head, return_new=True)
        seq = int((row or {}).get("seq", 1))  # type: ignore[union-attr]
        refusal = {"seq": seq, "at": now_iso(now), "reason": reason, "message": message, "key": key}
        self.ledger.table.put({PK: pk, SK: f"R#{(seq - 1) % keep:05d}", **refusal, TTL_ATTR: expires})
        return refusal

    def owners(self) -> list[str]:
        """Owners (and UNOWNED) with refusals not expired, by owner id (owners-index; never a scan)."""
        now = self.ledger.clock()
        rows = query_all(self.ledger.table, Query(REFUSALS_DIR, index=OWNERS_INDEX))
        return [r[OWNERS_SORT] for r in rows if float(r.get(TTL_ATTR, 0)) > now]

    def of(self, owner_id: str, keep: int) -> list[dict[str, Any]]:
        """The owner's refusals not expired, newest first, at most `keep` (a ring of a larger REFUSALS_*
        setting before may hold more until they expire)."""
        now = self.ledger.clock()
        query = Query(self._pk(owner_id), sort=BeginsWith(SK, "R#"))
        rows = [r for r in query_all(self.ledger.table, query) if float(r.get(TTL_ATTR, 0)) > now]
        rows.sort(key=lambda r: -int(r.get("seq", 0)))
        fields = ("seq", "at", "reason", "message", "key")
        owner = None if owner_id == UNOWNED else owner_id
        return [{"owner_id": owner, **{k: r.get(k) for k in fields}} for r in rows[:keep]]

    def newest(self, owner_id: str | None, limit: int) -> list[dict[str, Any]]:
        """At most `limit` refusals not expired, newest first: the owner's, or (None) every owner's and
        the pseudo-owner's."""
        rows = [r for o in ([owner_id] if owner_id else self.owners()) for r in self.of(o, limit)]
        return sorted(rows, key=lambda r: str(r["at"]), reverse=True)[:limit]


RUNS_PK = "~runs"  # "~" is outside the id pattern: no owner's item can have this key
RUN_COUNTS = ("items", "planned", "done", "failed", "skipped", "skipped_in_flight", "skipped_current")


class Runs:
    """Reprocess runs in the ledger table: one row per run under RUNS_PK, and the per-item marks that make
    each item count once in its run (`run_id` while the run waits for the item, `run_counted` after)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @staticmethod
    def _key(run_id: str) -> Key:
        return {PK: RUNS_PK, SK: f"RUN#{run_id}"}

    def create(self, run: Mapping[str, Any]) -> None:
        row = {PK: RUNS_PK, SK: f"RUN#{run['run_id']}", **{k: 0 for k in RUN_COUNTS}, **run}
        if not self.ledger.table.put(row, missing(PK)):
            raise StoreError("ledger write failed: the run id exists")

    def get(self, run_id: str) -> dict[str, Any] | None:
        return self.ledger._get(RUNS_PK, f"RUN#{run_id}")

    def list(self, limit: int = 50, open_only: bool = False) -> list[dict[str, Any]]:
        """Newest first (run ids sort by their start time); runs only, not their requests (REQ#)."""
        query = Query(
            RUNS_PK,
            sort=BeginsWith(SK, "RUN#"),
            filter=ne("status", "finished") if open_only else None,
            forward=False,
            consistent=True,
        )
        return list(query_all(self.ledger.table, query, limit))

    def _run_update(
        self, run_id: str, upd: Update, condition: Condition | None = None
    ) -> dict[str, Any] | None:
        cond = all_of(exists(PK), condition)
        return self.ledger.table.update(self._key(run_id), upd, cond, return_new=True)  # type: ignore[return-value]

    def page_done(
        self,
        run_id: str,
        cursor: str,
        next_cursor: str | None,
        counts: Mapping[str, int],
        channels: Mapping[str, int],
        reasons: Mapping[str, int],
        gpu_seconds: float,
    ) -> dict[str, Any] | None:
        """Record one planned page, once: only if the run's cursor is still the page's own (a redelivered
        page message changes nothing). `next_cursor` None: planning is done."""
        now = now_iso(self.ledger.clock())
        upd = Update().set(cursor=next_cursor or "", updated_at=now)
        if next_cursor is None:
            upd.set(planning_done=True, status="running")
        for k, v in counts.items():
            if v:
                upd.increment(k, int(v), strict=True)
        for attr, m in (("channels", channels), ("reasons", reasons)):
            for k, v in m.items():
                upd.increment((attr, k), int(v))
        if gpu_seconds:
            upd.increment("gpu_seconds_estimate", float(gpu_seconds), strict=True)
        run = self._run_update(run_id, upd, eq("cursor", cursor))
        return self.finish_if_done(run) if run else None

    def touch(self, run_id: str) -> None:
        self._run_update(run_id, Update().set(updated_at=now_iso(self.ledger.clock())))

    def add(self, run_id: str, **counts: int) -> dict[str, Any] | None:
        upd = Update().set(updated_at=now_iso(self.ledger.clock()))
        for k, v in counts.items():
            upd.increment(k, int(v), strict=True)
        run = self._run_update(run_id, upd)
        return self.finish_if_done(run) if run else None

    def claim_request(self, request_key: str, run_id: str) -> str | None:
        """One open run per request: None if `run_id` now holds the request, else the open run's id."""
        row = {
            PK: RUNS_PK,
            SK: f"REQ#{request_key}",
            "run_id": run_id,
            "open": True,
            "claimed_at": now_iso(self.ledger.clock()),
        }
        if self.ledger.table.put(row, missing(PK) | eq("open", False)):
            return None
        return str((self.ledger._get(RUNS_PK, f"REQ#{request_key}") or {}).get("run_id") or "") or None

    def _release_request(self, run: Mapping[str, Any]) -> None:
        if not run.get("request_key"):
            return
        key = {PK: RUNS_PK, SK: f"REQ#{run['request_key']}"}
        self.ledger.table.update(key, Update().set(open=False), eq("run_id", run["run_id"]))

    def count_other(self, run_id: str, owner_id: str, item_id: str) -> dict[str, Any] | None:
        """Another open run holds the item: it counts as skipped in this one, once."""
        upd = Update().add("run_skipped", {run_id})
        cond = missing("run_skipped") | ~contains("run_skipped", run_id)
        if not self.ledger._update(owner_id, item_id, ITEM_SK, upd, cond):
            return None
        return self.add(run_id, skipped=1)

    def finish_if_done(self, run: dict[str, Any]) -> dict[str, Any]:
        settled = int(run.get("done", 0)) + int(run.get("failed", 0)) + int(run.get("skipped", 0))
        due = settled >= int(run.get("items", 0))
        if run.get("planning_done") and run.get("status") != "finished" and due:
            upd = Update().set(status="finished", finished_at=now_iso(self.ledger.clock()))
            done = self._run_update(run["run_id"], upd, ne("status", "finished"))
            if done:
                self._release_request(done)
            return done or run
        return run

    def mark_item(self, run_id: str, owner_id: str, item_id: str) -> str:
        """Before a run works on an item: "new" (the item now waits to be counted in this run), "marked"
        (it already does: a redelivered message), "counted" (it was counted already), or "other" (another
        open run waits for it)."""
        fresh = missing("run_counted") | ne("run_counted", run_id)
        cond = all_of(exists(PK), missing("run_id"), fresh)
        if self.ledger._update(owner_id, item_id, ITEM_SK, Update().set(run_id=run_id), cond):
            return "new"
        item = self.ledger.item(owner_id, item_id) or {}
        if item.get("run_counted") == run_id:
            return "counted"
        other = item.get("run_id")
        if other == run_id:
            return "marked"
        if other and (self.get(other) or {}).get("status", "finished") == "finished":
            # the mark of a run that finished without it (an item removed meanwhile): taken over
            taken = Update().set(run_id=run_id)
            if self.ledger._update(owner_id, item_id, ITEM_SK, taken, eq("run_id", other)):
                return "new"
        return "other"

    def count_item(self, run_id: str, owner_id: str, item_id: str, outcome: str) -> dict[str, Any] | None:
        """The item's outcome in its run (done | failed | skipped), counted once: the item's mark moves from
        `run_id` to `run_counted` under a condition, and only the writer that moved it adds to the run."""
        upd = Update().set(run_counted=run_id).remove("run_id")
        if not self.ledger._update(owner_id, item_id, ITEM_SK, upd, eq("run_id", run_id)):
            return None
        return self.add(run_id, **{outcome: 1})


__all__ = [
    "CLAIMED",
    "COMPLETE",
    "DISPATCHED",
    "FAILED",
    "PARTIAL",
    "PENDING",
    "PROCESSING",
    "QUARANTINED",
    "REFUSALS_DIR",
    "REMOVED",
    "RETRY",
    "SUBMITTED",
    "SUCCEEDED",
    "Ledger",
    "Refusals",
    "Runs",
]
