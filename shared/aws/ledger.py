"""The ledger (DESIGN.md, "Ledger"): one DynamoDB table, an item row and a row per channel.

Keys (template.yaml's LedgerTable is the one definition; tests/integration/infra checks these names):

    pk = "{owner_id}#{item_id}"   sk = "ITEM" | "CH#{channel}"
    owner-index   owner_id + osk ("{item_id}#{sk}")     every row of an owner, items and channels
    sweep-index   sweep ("due", only while a dispatch or retry is open) + due_at (epoch seconds)

Item row: kind, modality, media_key/etag/size/mtime/seq, media_hash, meta_key/meta_hash/meta_mtime,
status (PROCESSING | COMPLETE | PARTIAL | QUARANTINED | REMOVED), attempts, the open dispatch
(dispatch_id, dispatch_state CLAIMED | SUBMITTED, dispatch_channels, dispatch_hash, job_id) or a
retry (dispatch_state RETRY), due_at, quarantine_reason, gpu_seconds, timestamps.

Channel row: status (PENDING | DISPATCHED | SUCCEEDED | FAILED | QUARANTINED), input_hash,
fingerprint, spec_version, attempts, dispatch_id, job_id, artifact_key, dims, model, sha256, bytes,
error, gpu_seconds, timestamps.

Every transition is a conditional write; a lost condition means another writer got there first and
is reported as False / None, never as an error.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from shared import spec
from shared.aws.clients import translate
from shared.pipeline.plan import DISPATCHED, FAILED, PENDING, QUARANTINED, SUCCEEDED

PK, SK = "pk", "sk"
OWNER_INDEX, OWNER_KEY, OWNER_SORT = "owner-index", "owner_id", "osk"
SWEEP_INDEX, SWEEP_KEY, SWEEP_SORT = "sweep-index", "sweep", "due_at"
ITEM_SK = "ITEM"
MANIFEST_SK = "MANIFEST"  # one row per owner, pk "{owner_id}#~" ("~" is outside the id pattern)
DUE = "due"
PROCESSING, COMPLETE, PARTIAL, REMOVED = "PROCESSING", "COMPLETE", "PARTIAL", "REMOVED"
CLAIMED, SUBMITTED, RETRY = "CLAIMED", "SUBMITTED", "RETRY"

_ser = TypeSerializer()
_de = TypeDeserializer()


def now_iso(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    if isinstance(value, set):
        return sorted(_from_dynamo(v) for v in value)
    return value


def _av(value: Any) -> dict:
    return _ser.serialize(_to_dynamo(value))


def _row(item: Mapping[str, Any]) -> dict[str, Any]:
    return _from_dynamo({k: _de.deserialize(v) for k, v in item.items()})


def item_pk(owner_id: str, item_id: str) -> str:
    return f"{owner_id}#{item_id}"


def channel_sk(channel: str) -> str:
    return f"CH#{channel}"


class _Update:
    """Builds one UpdateExpression with placeholder names/values."""

    def __init__(self) -> None:
        self.sets: list[str] = []
        self.removes: list[str] = []
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def name(self, attr: str) -> str:
        ph = f"#n{len(self.names)}"
        self.names[ph] = attr
        return ph

    def value(self, v: Any) -> str:
        ph = f":v{len(self.values)}"
        self.values[ph] = _av(v)
        return ph

    def set(self, **fields: Any) -> _Update:
        for k, v in fields.items():
            if v is None:
                self.removes.append(self.name(k))
            else:
                self.sets.append(f"{self.name(k)} = {self.value(v)}")
        return self

    def add_one(self, attr: str) -> _Update:
        n = self.name(attr)
        self.sets.append(f"{n} = if_not_exists({n}, {self.value(0)}) + {self.value(1)}")
        return self

    def remove(self, *attrs: str) -> _Update:
        self.removes.extend(self.name(a) for a in attrs)
        return self

    def expression(self) -> str:
        out = []
        if self.sets:
            out.append("SET " + ", ".join(self.sets))
        if self.removes:
            out.append("REMOVE " + ", ".join(self.removes))
        return " ".join(out)


class Ledger:
    """Transitions over an injected DynamoDB client. `writes` counts write requests (for the bench)."""

    def __init__(self, dynamodb: Any, table: str, *, clock: Any = time.time) -> None:
        self.db = dynamodb
        self.table = table
        self.clock = clock
        self.writes = 0

    # ------------------------------------------------------------------ reads

    def rows(self, owner_id: str, item_id: str) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
        """(item row, {channel: row}), strongly consistent."""
        item: dict[str, Any] | None = None
        channels: dict[str, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": PK},
            "ExpressionAttributeValues": {":pk": _av(item_pk(owner_id, item_id))},
            "ConsistentRead": True,
        }
        for raw in self._pages("query", kwargs):
            row = _row(raw)
            if row[SK] == ITEM_SK:
                item = row
            else:
                channels[row["channel"]] = row
        return item, channels

    def item(self, owner_id: str, item_id: str) -> dict[str, Any] | None:
        try:
            resp = self.db.get_item(
                TableName=self.table,
                Key={PK: _av(item_pk(owner_id, item_id)), SK: _av(ITEM_SK)},
                ConsistentRead=True,
            )
        except ClientError as e:
            raise translate(e, "ledger read") from e
        return _row(resp["Item"]) if "Item" in resp else None

    def owner_rows(self, owner_id: str) -> Iterator[dict[str, Any]]:
        """Every row of an owner through owner-index (paged; never a scan)."""
        kwargs = {
            "TableName": self.table,
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": "#o = :o",
            "ExpressionAttributeNames": {"#o": OWNER_KEY},
            "ExpressionAttributeValues": {":o": _av(owner_id)},
        }
        for raw in self._pages("query", kwargs):
            yield _row(raw)

    def due(self, now: float, limit: int) -> list[dict[str, Any]]:
        """Item rows whose open dispatch or retry is due (sweep-index; never a scan), oldest first."""
        kwargs = {
            "TableName": self.table,
            "IndexName": SWEEP_INDEX,
            "KeyConditionExpression": "#s = :s AND #d <= :now",
            "ExpressionAttributeNames": {"#s": SWEEP_KEY, "#d": SWEEP_SORT},
            "ExpressionAttributeValues": {":s": _av(DUE), ":now": _av(float(now))},
            "Limit": limit,
        }
        out = []
        for raw in self._pages("query", kwargs):
            out.append(_row(raw))
            if len(out) >= limit:
                break
        return out

    def owners(self) -> list[str]:
        """Owners with at least one item (the CLI's `se status` without --owner; small tables only)."""
        kwargs = {
            "TableName": self.table,
            "FilterExpression": "#sk = :item",
            "ProjectionExpression": "#o",
            "ExpressionAttributeNames": {"#sk": SK, "#o": OWNER_KEY},
            "ExpressionAttributeValues": {":item": _av(ITEM_SK)},
        }
        return sorted({_row(r)[OWNER_KEY] for r in self._pages("scan", kwargs)})

    def _pages(self, op: str, kwargs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        start = None
        while True:
            call = dict(kwargs)
            if start:
                call["ExclusiveStartKey"] = start
            try:
                resp = getattr(self.db, op)(**call)
            except ClientError as e:
                raise translate(e, f"ledger {op}") from e
            yield from resp.get("Items", [])
            start = resp.get("LastEvaluatedKey")
            if not start:
                return

    # ------------------------------------------------------------------ writes

    def _key(self, owner_id: str, item_id: str, sk: str) -> dict[str, Any]:
        return {PK: _av(item_pk(owner_id, item_id)), SK: _av(sk)}

    def _update(
        self,
        owner_id: str,
        item_id: str,
        sk: str,
        upd: _Update,
        condition: str | None = None,
        *,
        return_new: bool = False,
    ) -> dict[str, Any] | bool | None:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "Key": self._key(owner_id, item_id, sk),
            "UpdateExpression": upd.expression(),
            "ExpressionAttributeNames": upd.names,
        }
        if upd.values:
            kwargs["ExpressionAttributeValues"] = upd.values
        if condition:
            kwargs["ConditionExpression"] = condition
        if return_new:
            kwargs["ReturnValues"] = "ALL_NEW"
        self.writes += 1
        try:
            resp = self.db.update_item(**kwargs)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None if return_new else False
            raise translate(e, "ledger write") from e
        return _row(resp["Attributes"]) if return_new else True

    def _base(self, upd: _Update, owner_id: str, item_id: str, sk: str) -> _Update:
        now = now_iso(self.clock())
        n = upd.name("created_at")
        upd.sets.append(f"{n} = if_not_exists({n}, {upd.value(now)})")
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
    ) -> dict[str, Any] | None:
        """Record the item's current media source. Refused (None) when the ledger already holds it (a
        duplicate event) or a newer one: a later S3 sequencer for the same key, or a later LastModified."""
        upd = _Update()
        self._base(upd, owner_id, item_id, ITEM_SK).set(
            kind=kind,
            modality=modality,
            media_key=key,
            media_etag=etag,
            media_size=size,
            media_mtime=mtime,
            media_hash=media_hash,
            media_seq=seq,
        )
        upd.remove("removed_at")
        m, h, st = upd.name("media_mtime"), upd.name("media_hash"), upd.name("status")
        hv = upd.value(media_hash)
        newer = f"({m} < {upd.value(mtime)} OR ({m} = {upd.value(mtime)} AND {h} <> {hv}))"
        cond = f"attribute_not_exists({m}) OR ({newer} AND ({h} <> {hv} OR {st} = {upd.value(REMOVED)}))"
        if seq is not None:
            k, s = upd.name("media_key"), upd.name("media_seq")
            newer = f"attribute_not_exists({s}) OR {k} <> {upd.value(key)} OR {s} < {upd.value(seq)}"
            cond = f"({cond}) AND ({newer})"
        # A new source starts a fresh attempt count and a fresh status.
        upd.set(status=PROCESSING, attempts=0)
        return self._update(owner_id, item_id, ITEM_SK, upd, cond, return_new=True)  # type: ignore[return-value]

    def record_meta(
        self, owner_id: str, item_id: str, *, key: str, etag: str, mtime: str, meta_hash: str
    ) -> dict[str, Any] | None:
        upd = _Update()
        self._base(upd, owner_id, item_id, ITEM_SK).set(
            meta_key=key, meta_etag=etag, meta_mtime=mtime, meta_hash=meta_hash
        )
        m = upd.name("meta_mtime")
        st = upd.name("status")
        upd.sets.append(f"{st} = if_not_exists({st}, {upd.value(PROCESSING)})")
        cond = f"attribute_not_exists({m}) OR {m} <= {upd.value(mtime)}"
        return self._update(owner_id, item_id, ITEM_SK, upd, cond, return_new=True)  # type: ignore[return-value]

    def mark_removed(self, owner_id: str, item_id: str, key: str) -> bool:
        """The item's media or meta.json was deleted: the item says so (its artifacts stay)."""
        upd = _Update()
        upd.set(
            status=REMOVED,
            removed_at=now_iso(self.clock()),
            removed_key=key,
            updated_at=now_iso(self.clock()),
        )
        cond = "attribute_exists(#pk) AND (media_key = :k OR meta_key = :k)"
        upd.names["#pk"] = PK
        upd.values[":k"] = _av(key)
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, cond))

    def set_item_status(self, owner_id: str, item_id: str, status: str, **fields: Any) -> bool:
        upd = _Update().set(status=status, updated_at=now_iso(self.clock()), **fields)
        cond = "attribute_exists(#pk) AND #st <> :removed"
        upd.names.update({"#pk": PK, "#st": "status"})
        upd.values[":removed"] = _av(REMOVED)
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, cond))

    def claim(
        self,
        owner_id: str,
        item_id: str,
        *,
        channels: Iterable[str],
        input_hashes: Mapping[str, str],
        dispatch_hash: str,
        deadline: float,
    ) -> str | None:
        """Claim the item's one dispatch before anything is POSTed: a conditional write that opens the
        dispatch on the item row (only if none is open, and only for the current media), then each channel
        row marked DISPATCHED with it. Returns the new dispatch id, or None when another dispatch holds
        the item.

        Not a transaction, on purpose: the item row's condition alone serializes dispatches, and a claimer
        that dies between the two steps has POSTed nothing (the POST comes after both), so the sweeper's
        repair (after the claim's TTL, far beyond a Lambda's timeout) finds nothing running. And moto,
        which the local stack and the tests run on, restores a whole table snapshot when a transaction is
        cancelled, which would undo other requests' concurrent writes."""
        channels = list(channels)
        dispatch_id = uuid.uuid4().hex
        now = now_iso(self.clock())
        upd = _Update()
        upd.set(
            dispatch_id=dispatch_id,
            dispatch_state=CLAIMED,
            dispatch_channels=channels,
            dispatch_hash=dispatch_hash,
            claimed_at=now,
            sweep=DUE,
            due_at=float(deadline),
            updated_at=now,
            job_id=None,
            status=PROCESSING,
        ).add_one("attempts")
        d, h, st, ds = (upd.name(a) for a in ("dispatch_id", "media_hash", "status", "dispatch_state"))
        cond = (
            f"attribute_exists(#pk) AND {h} = {upd.value(dispatch_hash)} AND {st} <> {upd.value(REMOVED)} "
            f"AND (attribute_not_exists({d}) OR {ds} = {upd.value(RETRY)})"
        )
        upd.names["#pk"] = PK
        if not self._update(owner_id, item_id, ITEM_SK, upd, cond):
            return None
        for ch in channels:
            cu = _Update()
            self._base(cu, owner_id, item_id, channel_sk(ch)).set(
                channel=ch,
                status=DISPATCHED,
                input_hash=input_hashes[ch],
                fingerprint=spec.CHANNELS[ch].fingerprint,
                spec_version=spec.SPEC_VERSION,
                dispatch_id=dispatch_id,
                runs_on=spec.CHANNELS[ch].runs_on,
            ).add_one("attempts")
            self._update(owner_id, item_id, channel_sk(ch), cu)
        return dispatch_id

    def mark_submitted(
        self, owner_id: str, item_id: str, dispatch_id: str, job_id: str, due_at: float
    ) -> bool:
        upd = _Update().set(
            dispatch_state=SUBMITTED, job_id=job_id, due_at=float(due_at), submitted_at=now_iso(self.clock())
        )
        d, ds = upd.name("dispatch_id"), upd.name("dispatch_state")
        cond = f"{d} = {upd.value(dispatch_id)} AND {ds} = {upd.value(CLAIMED)}"
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, cond))

    def push_due(self, owner_id: str, item_id: str, dispatch_id: str, due_at: float) -> bool:
        upd = _Update().set(due_at=float(due_at))
        d = upd.name("dispatch_id")
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, f"{d} = {upd.value(dispatch_id)}"))

    def finish_channel(
        self,
        owner_id: str,
        item_id: str,
        channel: str,
        dispatch_id: str,
        status: str,
        fields: Mapping[str, Any],
    ) -> bool:
        """DISPATCHED -> SUCCEEDED | FAILED | PENDING (retryable) | QUARANTINED, for this dispatch only."""
        upd = _Update().set(status=status, updated_at=now_iso(self.clock()), **fields)
        d, st = upd.name("dispatch_id"), upd.name("status")
        cond = f"{d} = {upd.value(dispatch_id)} AND {st} = {upd.value(DISPATCHED)}"
        return bool(self._update(owner_id, item_id, channel_sk(channel), upd, cond))

    def finish_channels(
        self,
        owner_id: str,
        item_id: str,
        dispatch_id: str,
        results: Mapping[str, tuple[str, Mapping[str, Any]]],
    ) -> None:
        """finish_channel for every channel of one result, each under its own condition (not one
        transaction: see `claim`)."""
        for ch, (status, fields) in results.items():
            self.finish_channel(owner_id, item_id, ch, dispatch_id, status, fields)

    def put_lambda_channel(
        self,
        owner_id: str,
        item_id: str,
        channel: str,
        status: str,
        input_hash: str,
        fields: Mapping[str, Any],
    ) -> bool:
        """A Lambda channel's result (it runs in-process, no dispatch). Refused when the row already holds
        a SUCCEEDED result for the same inputs and fingerprint (a duplicate event)."""
        upd = _Update()
        self._base(upd, owner_id, item_id, channel_sk(channel)).set(
            channel=channel,
            status=status,
            input_hash=input_hash,
            fingerprint=spec.CHANNELS[channel].fingerprint,
            spec_version=spec.SPEC_VERSION,
            runs_on=spec.CHANNELS[channel].runs_on,
            dispatch_id=None,
            **fields,
        ).add_one("attempts")
        st, ih, fp = upd.name("status"), upd.name("input_hash"), upd.name("fingerprint")
        cond = (
            f"attribute_not_exists({st}) OR {st} <> {upd.value(SUCCEEDED)} "
            f"OR {ih} <> {upd.value(input_hash)} "
            f"OR {fp} <> {upd.value(spec.CHANNELS[channel].fingerprint)}"
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
    ) -> bool:
        """Close the open dispatch; with `retry_at`, leave a RETRY for the sweeper at that time; with
        `status`, complete the item in the same write."""
        upd = _Update().set(updated_at=now_iso(self.clock()), last_error=dict(error) if error else None)
        if status is not None:
            upd.set(status=status, **(fields or {}))
        upd.remove("dispatch_id", "dispatch_channels", "job_id", "claimed_at", "submitted_at")
        if retry_at is not None:
            upd.set(dispatch_state=RETRY, sweep=DUE, due_at=float(retry_at))
        else:
            upd.remove("dispatch_state", "sweep", "due_at")
        if gpu_seconds:
            g = upd.name("gpu_seconds")
            upd.sets.append(f"{g} = if_not_exists({g}, {upd.value(0)}) + {upd.value(float(gpu_seconds))}")
        d = upd.name("dispatch_id")
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, f"{d} = {upd.value(dispatch_id)}"))

    def clear_retry(self, owner_id: str, item_id: str) -> bool:
        """A RETRY that has nothing left to run is closed."""
        upd = _Update().remove("dispatch_state", "sweep", "due_at")
        ds, d = upd.name("dispatch_state"), upd.name("dispatch_id")
        cond = f"{ds} = {upd.value(RETRY)} AND attribute_not_exists({d})"
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, cond))

    def mark_manifest(self, owner_id: str, due_at: float) -> None:
        """The owner's manifest needs a rebuild: bump its generation; due at `due_at` unless already due."""
        upd = _Update().set(manifest_owner=owner_id, sweep=DUE).add_one("dirty_gen")
        d = upd.name(SWEEP_SORT)
        upd.sets.append(f"{d} = if_not_exists({d}, {upd.value(float(due_at))})")
        self._update(owner_id, "~", MANIFEST_SK, upd)

    def manifest_written(self, owner_id: str, generation: int, again_at: float) -> bool:
        """The manifest of `generation` is written: done, unless newer completions bumped it since (then
        it stays due at `again_at`)."""
        upd = _Update().set(written_gen=generation).remove("sweep", SWEEP_SORT)
        g = upd.name("dirty_gen")
        if self._update(owner_id, "~", MANIFEST_SK, upd, f"{g} = {upd.value(generation)}"):
            return True
        self._update(
            owner_id, "~", MANIFEST_SK, _Update().set(written_gen=generation, due_at=float(again_at))
        )
        return False

    def quarantine(self, owner_id: str, item_id: str, reason: str, channels: Iterable[str]) -> bool:
        """Retries exhausted: the item's unfinished channels, then the item, are QUARANTINED with the reason
        (channels first: whoever sees the item QUARANTINED sees its channels so too)."""
        for ch in channels:
            cu = _Update().set(status=QUARANTINED, error={"code": "quarantined", "message": reason})
            st = cu.name("status")
            self._update(owner_id, item_id, channel_sk(ch), cu, f"{st} <> {cu.value(SUCCEEDED)}")
        upd = _Update().set(status=QUARANTINED, quarantine_reason=reason, updated_at=now_iso(self.clock()))
        upd.remove("dispatch_id", "dispatch_channels", "job_id", "dispatch_state", "sweep", "due_at")
        return bool(self._update(owner_id, item_id, ITEM_SK, upd))


__all__ = [
    "CLAIMED",
    "COMPLETE",
    "DISPATCHED",
    "FAILED",
    "PARTIAL",
    "PENDING",
    "PROCESSING",
    "QUARANTINED",
    "REMOVED",
    "RETRY",
    "SUBMITTED",
    "SUCCEEDED",
    "Ledger",
]
