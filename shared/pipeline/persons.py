"""Persons (seed 002): reference photos at `persons/{owner}/{person}/{photo}` and one query vector each.

Every photo is an item of its own in the ledger (id "@{person}~{hash of its file name}", kind
person_photo, modality image), so it runs the `image_clip` channel through the same planner,
dispatch, webhook and sweeper as any upload. The person is an item too (id "@{person}", kind person)
whose one channel, `person_query`, is the L2-normalised mean of its READY photo vectors (SUCCEEDED
image_clip, current recipe, photo not removed).

When a photo reaches a final state, or is removed, or a reprocess asks for it, the person is marked
dirty (a generation bump that puts its row in the sweep-index); the sweeper, which runs alone,
rebuilds the vector from what the ledger holds then, so concurrent photo completions can never leave
a stale mean behind. A person with no READY photo has no vector (the artifact is deleted) and its
channel row says why.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from shared import spec
from shared.errors import EmbeddingError, InvalidInput
from shared.pipeline import keys, plan
from shared.pipeline.ledger import COMPLETE, ITEM_SK, PARTIAL, REMOVED
from shared.pipeline.plan import FAILED, SUCCEEDED
from shared.vectors import check_vector, load_npy, npy_bytes

log = logging.getLogger(__name__)

CHANNEL = "person_query"
MAX_PHOTOS = 500  # live reference photos per person; more are refused at upload
MAX_ROWS = MAX_PHOTOS * 6  # photo rows read per person (2 each, removed photos' rows included)
MAX_VECTOR_BYTES = 1 << 20


class Persons:
    def __init__(self, pipeline: Any) -> None:
        self.p = pipeline

    @property
    def enabled(self) -> bool:
        return CHANNEL in self.p.settings.channels

    def on_photo(self, ref: keys.SourceKey, info: Any, seq: str | None) -> Any:
        """A reference photo was uploaded: record it (and its person), then run image_clip on it."""
        from shared.pipeline.core import Outcome
        from shared.pipeline.ledger import PERSON_PHOTO

        if not self.enabled:
            return Outcome("skipped", "person_query is not among this deployment's channels")
        owner, person = ref.owner_id, ref.item_id
        photo = keys.photo_item_id(person, ref.file)
        person_item = keys.person_item_id(person)
        if self.p.ledger.item(owner, person_item) is None:
            self.p.ledger.record_person(owner, person_item, person)
        live = self._live_photos(owner, person_item)
        if photo not in live and len(live) >= MAX_PHOTOS:
            raise InvalidInput(f"a person may have at most {MAX_PHOTOS} reference photos", field="photo")
        media_hash = plan.source_hash(ref.key, info.etag, info.size)
        self.p.ledger.record_media(
            owner,
            photo,
            kind=PERSON_PHOTO,
            modality="image",
            key=ref.key,
            etag=info.etag,
            size=info.size,
            mtime=info.mtime,
            media_hash=media_hash,
            seq=seq,
            person_id=person,
        )
        if info.size > self.p.settings.max_source_bytes:
            return self.p.refuse_media(
                keys.SourceKey(ref.key, "person", owner, photo, ref.file, "media", "image"),
                media_hash,
                f"the source is larger than {self.p.settings.max_source_bytes} bytes",
            )
        return self.p.advance(owner, photo)

    def _live_photos(self, owner: str, person_item: str) -> set[str]:
        """Ids of the person's photos that are not removed (owner-index lists them; bounded)."""
        rows = self.p.ledger.photo_rows(owner, person_item, MAX_ROWS)
        return {r["item_id"] for r in rows if r.get("sk") == ITEM_SK and r.get("status") != REMOVED}

    def mark(self, owner_id: str, person_item: str, force: str | None = None) -> None:
        """The person's query vector is stale: the sweeper rebuilds it (at once: due now)."""
        self.p.ledger.mark_person(owner_id, person_item, self.p.clock(), force)

    def rebuild(self, row: Mapping[str, Any]) -> str:
        """The sweeper's rebuild of one person's query vector from its READY photos."""
        owner, person_item = row["owner_id"], row["item_id"]
        # owner-index lists the photos (a GSI: eventually consistent); each photo's rows are then read
        # strongly consistent, so a removal or a result that just landed is what the rebuild sees
        listed = {
            r["item_id"]
            for r in self.p.ledger.photo_rows(owner, person_item, MAX_ROWS)
            if r.get("sk") == ITEM_SK
        }
        items, clip = {}, {}
        for pid in sorted(listed):
            item, chans = self.p.ledger.rows(owner, pid)
            if item is not None:
                items[pid] = item
                if "image_clip" in chans:
                    clip[pid] = chans["image_clip"]
        ready, failed, waiting = [], 0, 0
        for pid, item in sorted(items.items()):
            if item.get("status") == REMOVED:
                continue
            c = clip.get(pid) or {}
            if not plan.current(c, "image_clip", item.get("media_hash")):
                waiting += 1
            elif c.get("status") == SUCCEEDED and c.get("artifact_key"):
                ready.append((pid, c))
            else:
                failed += 1
        photos_hash = plan.hash_of(*(f"{pid}:{c.get('sha256', '')}" for pid, c in ready))
        key = self.p.artifact_key(CHANNEL, owner, person_item)
        force = row.get("force_run")

        def no_vector(error: dict[str, Any], **fields: Any) -> None:
            """No vector rather than a stale one: the artifact goes, the channel row says why."""
            self.p.storage.delete(key)
            self.p.ledger.put_lambda_channel(
                owner,
                person_item,
                CHANNEL,
                FAILED,
                photos_hash,
                {"error": error, "artifact_key": None, **fields},
                run_id=force,
            )

        if not ready:
            reason = (
                f"no READY reference photo ({failed} failed, {waiting} still processing)"
                if items
                else "the person has no reference photos"
            )
            no_vector({"code": "no_ready_photos", "message": reason, "retryable": False}, photos=0)
            status = PARTIAL
        else:
            try:
                vecs = []
                for pid, c in ready:
                    data = self.p.storage.get(str(c["artifact_key"]), MAX_VECTOR_BYTES)
                    if data is None:
                        raise InvalidInput(f"the vector of photo {pid} is gone", field="image_clip")
                    vecs.append(
                        check_vector(
                            load_npy(data, "image_clip"), spec.CHANNELS["image_clip"].dims, "image_clip"
                        )
                    )
                mean = np.mean(np.stack(vecs), axis=0)
                norm = float(np.linalg.norm(mean))
                if norm < 1e-6:
                    raise InvalidInput("the photos' vectors cancel out", field=CHANNEL)
                vec = check_vector((mean / norm).astype(np.float32), spec.CHANNELS[CHANNEL].dims, CHANNEL)
            except EmbeddingError as e:
                if e.retryable:
                    log.warning(
                        "person %s/%s: %s; rebuilt at the next sweep", owner, person_item, e.public_message
                    )
                    return "person_error"
                log.warning("person %s/%s failed: %s", owner, person_item, e.public_message)
                no_vector({"code": e.code, "message": e.public_message[:500], "retryable": False})
                return self._written(row, owner, person_item, PARTIAL, photos_hash, 0, "failed")
            data = npy_bytes(vec)
            self.p.storage.put(key, data, "application/octet-stream")
            self.p.ledger.put_lambda_channel(
                owner,
                person_item,
                CHANNEL,
                SUCCEEDED,
                photos_hash,
                {
                    "artifact_key": key,
                    "dims": int(vec.shape[-1]),
                    "model": "derived",
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "bytes": len(data),
                    "photos": len(ready),
                    "error": None,
                },
                run_id=force,
            )
            status = COMPLETE
        return self._written(row, owner, person_item, status, photos_hash, len(ready), "done")

    def _written(
        self,
        row: Mapping[str, Any],
        owner: str,
        person_item: str,
        status: str,
        photos_hash: str,
        ready: int,
        outcome: str,
    ) -> str:
        fields = {"status": status, "photos_hash": photos_hash, "photos_ready": ready}
        done = self.p.ledger.person_written(owner, person_item, int(row.get("dirty_gen", 0)), fields)
        if row.get("run_id"):
            self.p.runs.count_item(row["run_id"], owner, person_item, outcome)
        self.p.mark_manifest(owner)
        return "person" if done else "person_again"


__all__ = ["CHANNEL", "MAX_PHOTOS", "Persons"]
