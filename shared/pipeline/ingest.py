"""Step 1, ingest: an S3 event record becomes an item in the ledger (or a removal, or a refusal).

An ObjectCreated record's key is validated (shared.pipeline.keys), the object HEADed, and the item's
source recorded in the ledger under S3's event order (the sequencer, else LastModified); then the item
is advanced (shared.pipeline.advance). A source over MAX_SOURCE_BYTES fails its media channels before
any GPU work. An ObjectRemoved record marks the item REMOVED (its artifacts stay) and rebuilds the
owner's manifest without it.

A refused upload (a bad key, another bucket's event: shared.pipeline.events; a source too large: here)
is recorded by `refuse`, the one place that does it (shared.pipeline.refusals).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from shared.errors import PayloadTooLarge, StoreError
from shared.pipeline import keys, plan, refusals
from shared.pipeline.core import Core, Outcome, error_fields
from shared.pipeline.ledger import (
    RETRY,
)
from shared.pipeline.plan import FAILED

log = logging.getLogger(__name__)


class Ingest(Core):
    """S3 records in, items recorded."""

    def on_s3_record(self, record: Mapping[str, Any]) -> Outcome:
        """One S3 event record (ObjectCreated:* or ObjectRemoved:*). InvalidKey for a key that is not
        ours (never retryable); StoreError (retryable) when AWS fails."""
        name = str(record.get("eventName", ""))
        obj = (record.get("s3") or {}).get("object") or {}
        key = keys.decode_event_key(obj.get("key"))
        ref = keys.parse_key(key)
        seq = keys.sequencer(obj.get("sequencer"))
        if name.startswith("ObjectRemoved"):
            return self.on_removed(ref)
        if not name.startswith("ObjectCreated"):
            return Outcome("skipped", f"event {name[:40]!s} is not handled")
        return self.on_created(ref, seq)

    def on_created(self, ref: keys.SourceKey, seq: str | None = None) -> Outcome:
        info = self.storage.head(ref.key)
        if info is None:
            return Outcome("skipped", "the object no longer exists")
        if ref.kind == "person":
            return self.persons.on_photo(ref, info, seq)
        if ref.role == "meta":
            row = self.ledger.record_meta(
                ref.owner_id,
                ref.item_id,
                key=ref.key,
                etag=info.etag,
                mtime=info.mtime,
                meta_hash=plan.source_hash(ref.key, info.etag, info.size),
            )
            if row is None:
                return Outcome("skipped", "a newer meta.json is already recorded")
            return self.advance(ref.owner_id, ref.item_id)
        media_hash = plan.source_hash(ref.key, info.etag, info.size)
        row = self.ledger.record_media(
            ref.owner_id,
            ref.item_id,
            kind=ref.kind,
            modality=ref.modality or "",
            key=ref.key,
            etag=info.etag,
            size=info.size,
            mtime=info.mtime,
            media_hash=media_hash,
            seq=seq,
        )
        # None: a duplicate or an older event. The item is advanced all the same (a crash after an
        # earlier delivery recorded it must not leave it stranded); the delta rule makes that a no-op.
        if row is not None and row.get("dispatch_state") == RETRY:
            self.ledger.clear_retry(ref.owner_id, ref.item_id)  # a new source need not wait out a backoff
        if info.size > self.settings.max_source_bytes:
            return self.refuse_media(
                ref, media_hash, f"the source is larger than {self.settings.max_source_bytes} bytes"
            )
        return self.advance(ref.owner_id, ref.item_id)

    def on_removed(self, ref: keys.SourceKey) -> Outcome:
        if self.storage.head(ref.key) is not None:
            return Outcome("skipped", "the object exists again (an older removal event)")
        item_id = keys.photo_item_id(ref.item_id, ref.file) if ref.kind == "person" else ref.item_id
        if self.ledger.mark_removed(ref.owner_id, item_id, ref.key):
            run_id = (self.ledger.item(ref.owner_id, item_id) or {}).get("run_id")
            if run_id:  # a reprocess run waits for it: it is skipped there, not waited for forever
                self.runs.count_item(run_id, ref.owner_id, item_id, "skipped")
            if ref.kind == "person":
                self.persons.mark(ref.owner_id, keys.person_item_id(ref.item_id))
                return Outcome("removed", "the photo is marked REMOVED; the person's vector is rebuilt")
            self.mark_manifest(ref.owner_id)  # the rebuilt manifest leaves it out
            return Outcome("removed", "the item is marked REMOVED; its artifacts stay")
        return Outcome("skipped", "the removed object is not an item's current source")

    def refuse_media(self, ref: keys.SourceKey, media_hash: str, reason: str) -> Outcome:
        item = self.ledger.item(ref.owner_id, ref.item_id)
        inputs = plan.inputs(item)
        chans = [c for c in plan.applicable(inputs, self.settings.channels) if plan.input_kind(c) == "media"]
        hashes = plan.input_hashes(inputs, chans)
        err = PayloadTooLarge(reason)
        for ch in chans:
            self.ledger.put_lambda_channel(
                ref.owner_id, ref.item_id, ch, FAILED, hashes[ch], {"error": error_fields(err)}
            )
        self.advance(ref.owner_id, ref.item_id)
        return self.refuse(ref.key, refusals.TOO_BIG, reason)

    def refuse(self, key: str, reason: str, message: str, *, owned: bool = True) -> Outcome:
        """A refused upload, recorded for the operator under the key's owner (`owned` and the key names a
        valid owner id) or the pseudo-owner, in that owner's bounded ring of refusal rows. Best effort:
        when the ledger cannot take it, the refusal is logged and consumed all the same (retrying the
        message would refuse it again). The Outcome's detail names the reason (one of REASONS)."""
        reason = refusals.reason_code(reason)
        owner = keys.owner_part(key) if owned else None
        s = self.settings
        try:
            self.refusals.record(
                owner or refusals.UNOWNED,
                reason=reason,
                message=refusals.shown(message, refusals.MAX_MESSAGE),
                key=refusals.shown(key, refusals.MAX_SHOWN_KEY),
                keep=s.refusals_per_owner if owner else s.refusals_unowned,
                ttl_s=s.refusals_days * 86400,
            )
        except StoreError as e:
            log.warning("refusal not recorded: %s", e.public_message)
        return Outcome("refused", message, {"reason": reason})
