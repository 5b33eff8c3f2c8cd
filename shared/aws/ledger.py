"""The ledger (DESIGN.md, "Ledger"): one DynamoDB table, an item row and a row per channel.

Keys (template.yaml's LedgerTable is the one definition; tests/integration/infra checks these names):

    pk = "{owner_id}#{item_id}"   sk = "ITEM" | "CH#{channel}"
    pk = "{owner_id}#~"           sk = "MANIFEST"        the owner's row: manifest generation, spec versions
    pk = "~runs"                  sk = "RUN#{run_id}"    reprocess runs (run ids sort by start time)
    owner-index   owner_id + osk ("{item_id}#{sk}")     every row of an owner, items and channels
    sweep-index   sweep ("due", only while a dispatch or retry is open) + due_at (epoch seconds)
    owners-index  directory ("owners", owner rows only) + manifest_owner   the list of owners

Item row: kind, modality, media_key/etag/size/mtime/seq, media_hash, meta_key/meta_hash/meta_mtime,
status (PROCESSING | COMPLETE | PARTIAL | QUARANTINED | REMOVED), attempts, the open dispatch
(dispatch_id, dispatch_state CLAIMED | SUBMITTED, dispatch_channels, dispatch_hash, job_id) or a
retry (dispatch_state RETRY), due_at, quarantine_reason, gpu_seconds, timestamps.

Channel row: status (PENDING | DISPATCHED | SUCCEEDED | FAILED | QUARANTINED), input_hash,
fingerprint, spec_version, attempts, dispatch_id, job_id, artifact_key, dims, model, sha256, bytes,
error, gpu_seconds, timestamps.

Every transition is a conditional write; a lost condition means another writer got there first and
is reported as False / None, never as an error. Multi-row transitions (a claim, a result's channel
rows) are one transaction; one that DynamoDB cancels for a conflicting concurrent write is a
retryable error (a claim) or falls back to one conditional write per row (a result).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import DYNAMODB_CONTEXT, TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from shared import spec
from shared.aws.clients import StoreError, translate
from shared.pipeline.plan import DISPATCHED, FAILED, PENDING, QUARANTINED, SUCCEEDED
from shared.pipeline.policy import CLAIMED, RETRY, SUBMITTED
from shared.timestamps import now_iso

PK, SK = "pk", "sk"
OWNER_INDEX, OWNER_KEY, OWNER_SORT = "owner-index", "owner_id", "osk"
SWEEP_INDEX, SWEEP_KEY, SWEEP_SORT = "sweep-index", "sweep", "due_at"
OWNERS_INDEX, OWNERS_KEY, OWNERS_SORT = "owners-index", "directory", "manifest_owner"
OWNERS = "owners"
ITEM_SK = "ITEM"
MANIFEST_SK = "MANIFEST"  # one row per owner, pk "{owner_id}#~" ("~" is outside the id pattern)
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

_ser = TypeSerializer()
_de = TypeDeserializer()


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


# a transaction's cancellation reasons that are about its items (the others: throttling, limits)
_ITEM_REASONS = frozenset({"None", "ConditionalCheckFailed", "TransactionConflict"})
_RETRYABLE_REASONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})


def _av(value: Any) -> dict:
    return _ser.serialize(_to_dynamo(value))


def _row(item: Mapping[str, Any]) -> dict[str, Any]:
    """A row as plain values: what `_from_dynamo(TypeDeserializer)` makes of it, strings, numbers,
    booleans and nulls (nearly every ledger attribute) converted in place (a planner reads thousands)."""
    out: dict[str, Any] = {}
    for k, v in item.items():
        if "S" in v:
            out[k] = v["S"]
        elif "N" in v:
            out[k] = _from_dynamo(DYNAMODB_CONTEXT.create_decimal(v["N"]))
        elif "BOOL" in v:
            out[k] = v["BOOL"]
        elif "NULL" in v:
            out[k] = None
        else:
            out[k] = _from_dynamo(_de.deserialize(v))
    return out


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


class _Update:
    """Builds one UpdateExpression with placeholder names/values."""

    def __init__(self) -> None:
        self.sets: list[str] = []
        self.removes: list[str] = []
        self.adds: list[str] = []
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self._literal: dict[str, Any] = {}  # attribute -> the value SET (as sent), by set()
        self._removed: set[str] = set()
        self._plain = 0  # how many of `sets` set() wrote (others may read the row's old values)
        self._plain_removes = 0  # how many of `removes` set()/remove() wrote

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
                self._plain_removes += 1
                self._removed.add(k)
                self._literal.pop(k, None)
            else:
                ph = self.value(v)
                self.sets.append(f"{self.name(k)} = {ph}")
                self._plain += 1
                self._literal[k] = self.values[ph]
                self._removed.discard(k)
        return self

    def add_one(self, attr: str) -> _Update:
        n = self.name(attr)
        self.sets.append(f"{n} = if_not_exists({n}, {self.value(0)}) + {self.value(1)}")
        return self

    def remove(self, *attrs: str) -> _Update:
        self.removes.extend(self.name(a) for a in attrs)
        self._plain_removes += len(attrs)
        self._removed.update(attrs)
        return self

    def add(self, attr: str, value: Any) -> _Update:
        """ADD (a number to a number, elements to a set)."""
        self.adds.append(f"{self.name(attr)} {self.value(value)}")
        return self

    def post_image(self, before: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The row this update leaves when applied to `before` (as `_row` reads rows: what ReturnValues
        ALL_NEW would answer), or None when that cannot be known here: no row before, or an expression
        computed from the old values (any SET not made by set(), such as add_one's, or an ADD), or a
        clause appended by hand."""
        by_hand = len(self.sets) != self._plain or len(self.removes) != self._plain_removes
        if before is None or self.adds or by_hand:
            return None
        out = {k: v for k, v in before.items() if k not in self._removed}
        out.update(_row(self._literal))
        return out

    def expression(self) -> str:
        out = []
        if self.sets:
            out.append("SET " + ", ".join(self.sets))
        if self.removes:
            out.append("REMOVE " + ", ".join(self.removes))
        if self.adds:
            out.append("ADD " + ", ".join(self.adds))
        return " ".join(out)


class Ledger:
    """Transitions over an injected DynamoDB client. `writes` counts items written (a transaction's
    items one each) and `write_units` what DynamoDB bills for them (2 a transactional item), for the
    benches."""

    def __init__(self, dynamodb: Any, table: str, *, clock: Any = time.time) -> None:
        self.db = dynamodb
        self.table = table
        self.clock = clock
        self.writes = 0
        self.write_units = 0

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
            elif (named := sk_channel(row[SK])) is not None:
                # a row with no attributes but its keys (moto's threaded server can leave one when two
                # writers create the same row at once) still names its channel: the planner sees it as new
                channels[row.get("channel") or named] = row
        return item, channels

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        """One row by its key, strongly consistent."""
        try:
            resp = self.db.get_item(TableName=self.table, Key={PK: _av(pk), SK: _av(sk)}, ConsistentRead=True)
        except ClientError as e:
            raise translate(e, "ledger read") from e
        return _row(resp["Item"]) if "Item" in resp else None

    def item(self, owner_id: str, item_id: str) -> dict[str, Any] | None:
        return self._get(item_pk(owner_id, item_id), ITEM_SK)

    def _owner_query(
        self, owner_id: str, prefix: str | None = None, segment: tuple[str, str] | None = None
    ) -> dict[str, Any]:
        """An owner-index query of one owner's rows (those whose osk starts with `prefix`, or whose
        first character is in `segment`, one of OSK_SEGMENTS)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": "#o = :o",
            "ExpressionAttributeNames": {"#o": OWNER_KEY},
            "ExpressionAttributeValues": {":o": _av(owner_id)},
        }
        if prefix is not None:
            kwargs["KeyConditionExpression"] += " AND begins_with(#s, :p)"
            kwargs["ExpressionAttributeNames"]["#s"] = OWNER_SORT
            kwargs["ExpressionAttributeValues"][":p"] = _av(prefix)
        elif segment is not None:
            first, last = segment
            kwargs["KeyConditionExpression"] += " AND #s BETWEEN :lo AND :hi"
            kwargs["ExpressionAttributeNames"]["#s"] = OWNER_SORT
            # every osk character is printable ASCII, below "\x7f": "{last}\x7f" is above every osk
            # that starts with `last`
            kwargs["ExpressionAttributeValues"].update({":lo": _av(first), ":hi": _av(last + "\x7f")})
        return kwargs

    def owner_rows(self, owner_id: str) -> Iterator[dict[str, Any]]:
        """Every row of an owner through owner-index (paged; never a scan)."""
        for raw in self._pages("query", self._owner_query(owner_id)):
            yield _row(raw)

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
        kwargs = {**self._owner_query(owner_id, segment=segment), "Limit": limit}
        if fields is not None:
            wanted = sorted({OWNER_SORT, *fields} - _IMPLIED_BY_OSK)
            names = {f"#f{i}": f for i, f in enumerate(wanted)}
            kwargs["ExpressionAttributeNames"] = {**kwargs["ExpressionAttributeNames"], **names}
            kwargs["ProjectionExpression"] = ", ".join(names)
        if start:
            kwargs["ExclusiveStartKey"] = {k: _av(v) for k, v in start.items()}
        try:
            resp = self.db.query(**kwargs)
        except ClientError as e:
            raise translate(e, "ledger query") from e
        rows = [_row(r) for r in resp.get("Items", [])]
        if fields is not None:
            for row in rows:
                row.update(_implied_by_osk(owner_id, row[OWNER_SORT]))
        return rows, "LastEvaluatedKey" in resp

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

    def next_owner(self, after: str | None) -> str | None:
        """The first owner (owners-index order) after `after`; None past the last."""
        for row in self.owner_states(after, page=1):
            return row[OWNERS_SORT]
        return None

    def owners(self) -> list[str]:
        """Owners with an owner row (one is made when their first item completes or is quarantined)."""
        return [r[OWNERS_SORT] for r in self.owner_states()]

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
        return self._write(self._key(owner_id, item_id, sk), upd, condition, return_new=return_new)

    def _write(
        self, key: dict[str, Any], upd: _Update, condition: str | None = None, *, return_new: bool = False
    ) -> dict[str, Any] | bool | None:
        """One UpdateItem; a lost condition is False (None with `return_new`), never an error."""
        kwargs = self._update_op(key, upd, condition)
        if return_new:
            kwargs["ReturnValues"] = "ALL_NEW"
        self.writes += 1
        self.write_units += 1
        try:
            resp = self.db.update_item(**kwargs)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None if return_new else False
            raise translate(e, "ledger write") from e
        return _row(resp["Attributes"]) if return_new else True

    def _update_op(self, key: dict[str, Any], upd: _Update, condition: str | None) -> dict[str, Any]:
        """One UpdateItem's parameters (a request of its own, or an Update of a transaction)."""
        op: dict[str, Any] = {
            "TableName": self.table,
            "Key": key,
            "UpdateExpression": upd.expression(),
            "ExpressionAttributeNames": upd.names,
        }
        if upd.values:
            op["ExpressionAttributeValues"] = upd.values
        if condition:
            op["ConditionExpression"] = condition
        return op

    def _transact(self, writes: list[tuple[dict[str, Any], _Update, str | None]]) -> list[str] | None:
        """UpdateItems (key, update, condition) as one TransactWriteItems: all written, or none. None when
        all were written; when DynamoDB cancelled it for its items' sake, each item's reason, in order:
        "None" (it would have been written), "ConditionalCheckFailed" (its condition was lost) or
        "TransactionConflict" (another request was writing it). Any other failure is a StoreError
        (retryable for throttling and 5xx)."""
        items = [{"Update": self._update_op(key, upd, condition)} for key, upd, condition in writes]
        self.writes += len(items)
        self.write_units += 2 * len(items)
        try:
            self.db.transact_write_items(TransactItems=items)
        except ClientError as e:
            codes = [str(r.get("Code") or "None") for r in e.response.get("CancellationReasons") or []]
            if (
                e.response.get("Error", {}).get("Code") == "TransactionCanceledException"
                and len(codes) == len(items)
                and set(codes) <= _ITEM_REASONS
                and set(codes) != {"None"}
            ):
                return codes
            err = translate(e, "ledger transaction")
            err.retryable = err.retryable or bool(set(codes) & _RETRYABLE_REASONS)
            raise err from e
        return None

    def _put(self, item: Mapping[str, Any], condition: str, names: Mapping[str, str], values=None) -> bool:
        """One conditional PutItem; False when the condition is lost."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "Item": {k: _av(v) for k, v in _to_dynamo(dict(item)).items()},
            "ConditionExpression": condition,
            "ExpressionAttributeNames": dict(names),
        }
        if values:
            kwargs["ExpressionAttributeValues"] = {k: _av(v) for k, v in values.items()}
        self.writes += 1
        try:
            self.db.put_item(**kwargs)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise translate(e, "ledger write") from e
        return True

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
        **extra: Any,
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
            **extra,
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

    def record_person(self, owner_id: str, item_id: str, person_id: str) -> None:
        """The person's own row (its query vector's channel row hangs under it); made once."""
        upd = _Update()
        self._base(upd, owner_id, item_id, ITEM_SK).set(kind="person", modality="person", person_id=person_id)
        st = upd.name("status")
        upd.sets.append(f"{st} = if_not_exists({st}, {upd.value(PROCESSING)})")
        self._update(owner_id, item_id, ITEM_SK, upd)

    def mark_person(self, owner_id: str, item_id: str, due_at: float, force_run: str | None = None) -> None:
        """The person's photos changed: its query vector is rebuilt by the sweeper (generation bumped)."""
        upd = _Update().set(sweep=DUE, due_at=float(due_at), status=PROCESSING).add_one("dirty_gen")
        if force_run is not None:
            upd.set(force_run=force_run)
        self._update(owner_id, item_id, ITEM_SK, upd, f"attribute_exists({upd.name(PK)})")

    def person_written(self, owner_id: str, item_id: str, generation: int, fields: Mapping[str, Any]) -> bool:
        """The person's rebuild of `generation` is recorded; it leaves the sweep unless bumped since."""
        upd = (
            _Update().set(updated_at=now_iso(self.clock()), **fields).remove("sweep", SWEEP_SORT, "force_run")
        )
        g = upd.name("dirty_gen")
        if self._update(owner_id, item_id, ITEM_SK, upd, f"{g} = {upd.value(generation)}"):
            return True
        self._update(owner_id, item_id, ITEM_SK, _Update().set(**fields))
        return False

    def photo_rows(self, owner_id: str, person_item: str, limit: int) -> list[dict[str, Any]]:
        """A person's photo rows (items and channels) through owner-index: osk begins with "@{person}~"."""
        out = []
        for raw in self._pages("query", self._owner_query(owner_id, prefix=f"{person_item}~")):
            out.append(_row(raw))
            if len(out) >= limit:
                break
        return out

    def reopen(self, owner_id: str, item_id: str) -> bool:
        """A quarantined item is replayed: fresh attempts, PROCESSING, its quarantine reason kept as last."""
        upd = _Update().set(status=PROCESSING, attempts=0, updated_at=now_iso(self.clock()))
        r, q = upd.name("quarantine_reason"), upd.name("last_quarantine_reason")
        upd.sets.append(f"{q} = {r}")
        upd.removes.append(r)
        st = upd.name("status")
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, f"{st} = {upd.value(QUARANTINED)}"))

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
        upd = _Update()
        upd.set(
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
        ).add_one("attempts")
        d, h, st, ds = (upd.name(a) for a in ("dispatch_id", "media_hash", "status", "dispatch_state"))
        cond = (
            f"attribute_exists(#pk) AND {h} = {upd.value(dispatch_hash)} AND {st} <> {upd.value(REMOVED)} "
            f"AND (attribute_not_exists({d}) OR {ds} = {upd.value(RETRY)})"
        )
        upd.names["#pk"] = PK
        writes: list[tuple[dict[str, Any], _Update, str | None]] = [
            (self._key(owner_id, item_id, ITEM_SK), upd, cond)
        ]
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
                run_id=run_id,
            ).add_one("attempts")
            writes.append((self._key(owner_id, item_id, channel_sk(ch)), cu, None))
        if len(writes) == 1:
            return dispatch_id if self._write(*writes[0]) else None
        codes = self._transact(writes)
        if codes is None:
            return dispatch_id
        if codes[0] == "ConditionalCheckFailed":
            return None
        err = StoreError("ledger transaction failed: a concurrent write to the item's rows")
        err.retryable = True
        raise err

    def mark_submitted(
        self, owner_id: str, item_id: str, dispatch_id: str, job_id: str, due_at: float
    ) -> bool:
        upd = _Update().set(
            dispatch_state=SUBMITTED, job_id=job_id, due_at=float(due_at), submitted_at=now_iso(self.clock())
        )
        d, ds = upd.name("dispatch_id"), upd.name("dispatch_state")
        cond = f"{d} = {upd.value(dispatch_id)} AND {ds} = {upd.value(CLAIMED)}"
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, cond))

    def push_due(self, owner_id: str, item_id: str, dispatch_id: str, due_at: float, **fields: Any) -> bool:
        """The open dispatch is due again at `due_at`; `fields`: what the sweeper learnt of it meanwhile
        (dispatch_error: why its /run or /status failed; poll_failures: /status failures in a row)."""
        upd = _Update().set(due_at=float(due_at), **fields)
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
    ) -> dict[str, Any] | None:
        """DISPATCHED -> SUCCEEDED | FAILED | PENDING (retryable) | QUARANTINED, for this dispatch only.
        Returns the row as written; None when the condition is lost (another writer finished it)."""
        upd, cond = self._finish(dispatch_id, status, fields)
        return self._update(owner_id, item_id, channel_sk(channel), upd, cond, return_new=True)  # type: ignore[return-value]

    def _finish(self, dispatch_id: str, status: str, fields: Mapping[str, Any]) -> tuple[_Update, str]:
        upd = _Update().set(status=status, updated_at=now_iso(self.clock()), **fields)
        d, st = upd.name("dispatch_id"), upd.name("status")
        return upd, f"{d} = {upd.value(dispatch_id)} AND {st} = {upd.value(DISPATCHED)}"

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
        changes a DISPATCHED row of the open dispatch); when one is lost, or DynamoDB cancels the
        transaction for a concurrent write, nothing of it is written and each row whose condition
        held is written on its own, under its own condition, as if no transaction had been tried."""
        updates = {ch: self._finish(dispatch_id, status, fields) for ch, (status, fields) in results.items()}
        codes = ["None"] * len(updates)  # one row: its own write
        if len(updates) > 1:
            writes = [(self._key(owner_id, item_id, channel_sk(ch)), u, c) for ch, (u, c) in updates.items()]
            cancelled = self._transact(writes)
            if cancelled is None:
                return {ch: u.post_image((before or {}).get(ch)) for ch, (u, _) in updates.items()}
            codes = cancelled
        return {
            ch: None
            if code == "ConditionalCheckFailed"
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
        upd = _Update()
        self._base(upd, owner_id, item_id, channel_sk(channel)).set(
            channel=channel,
            status=status,
            input_hash=input_hash,
            fingerprint=spec.CHANNELS[channel].fingerprint,
            spec_version=spec.SPEC_VERSION,
            runs_on=spec.CHANNELS[channel].runs_on,
            dispatch_id=None,
            run_id=run_id,
            **fields,
        ).add_one("attempts")
        st, ih, fp = upd.name("status"), upd.name("input_hash"), upd.name("fingerprint")
        sv = upd.name("spec_version")
        cond = (
            f"attribute_not_exists({st}) OR {st} <> {upd.value(SUCCEEDED)} "
            f"OR {ih} <> {upd.value(input_hash)} "
            f"OR {fp} <> {upd.value(spec.CHANNELS[channel].fingerprint)} "
            f"OR {sv} <> {upd.value(spec.SPEC_VERSION)}"
        )
        if run_id is not None:
            ri = upd.name("run_id")
            cond += f" OR attribute_not_exists({ri}) OR {ri} <> {upd.value(run_id)}"
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
        upd = _Update().set(spec_version=spec_version, carried_from=row.get("spec_version"))
        if artifact_key:
            upd.set(artifact_key=artifact_key)
        st, ih, fp, sv = (upd.name(a) for a in ("status", "input_hash", "fingerprint", "spec_version"))
        cond = (
            f"{st} = {upd.value(row.get('status'))} AND {ih} = {upd.value(row.get('input_hash'))} "
            f"AND {fp} = {upd.value(row.get('fingerprint'))} AND "
            + (
                f"{sv} = {upd.value(row['spec_version'])}"
                if row.get("spec_version")
                else f"attribute_not_exists({sv})"
            )
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
        upd = _Update().set(updated_at=now_iso(self.clock()), last_error=dict(error) if error else None)
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
            g = upd.name("gpu_seconds")
            upd.sets.append(f"{g} = if_not_exists({g}, {upd.value(0)}) + {upd.value(float(gpu_seconds))}")
        d = upd.name("dispatch_id")
        cond = f"{d} = {upd.value(dispatch_id)}"
        if status is not None:
            st = upd.name("status")
            cond += f" AND {st} <> {upd.value(REMOVED)}"
            for attr, value in (sources or {}).items():
                n = upd.name(attr)
                same = f"{n} = {upd.value(value)}" if value is not None else f"attribute_not_exists({n})"
                cond += f" AND {same}"
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, cond))

    def clear_retry(self, owner_id: str, item_id: str) -> bool:
        """A RETRY that has nothing left to run is closed."""
        upd = _Update().remove("dispatch_state", "sweep", "due_at")
        ds, d = upd.name("dispatch_state"), upd.name("dispatch_id")
        cond = f"{ds} = {upd.value(RETRY)} AND attribute_not_exists({d})"
        return bool(self._update(owner_id, item_id, ITEM_SK, upd, cond))

    def mark_manifest(self, owner_id: str, due_at: float) -> float:
        """The owner's manifest needs a rebuild: bump its generation; due at `due_at` unless already due.
        The row is also the owner's entry in owners-index (with its spec-version state). Returns the
        time the rebuild is due (an earlier mark's, when one is pending)."""
        upd = _Update().set(manifest_owner=owner_id, sweep=DUE, directory=OWNERS).add_one("dirty_gen")
        d = upd.name(SWEEP_SORT)
        upd.sets.append(f"{d} = if_not_exists({d}, {upd.value(float(due_at))})")
        row = self._update(owner_id, "~", MANIFEST_SK, upd, return_new=True)
        return float((row or {}).get(SWEEP_SORT, due_at))  # type: ignore[union-attr]

    def manifest_written(
        self, owner_id: str, generation: int, again_at: float, state: Mapping[str, Any] | None = None
    ) -> bool:
        """The manifest of `generation` is written: done, unless newer completions bumped it since (then
        it stays due at `again_at`). `state`: the owner's spec-version fields to record with it."""
        state = dict(state or {})
        upd = _Update().set(written_gen=generation, **state).remove("sweep", SWEEP_SORT)
        g = upd.name("dirty_gen")
        if self._update(owner_id, "~", MANIFEST_SK, upd, f"{g} = {upd.value(generation)}"):
            return True
        self._update(
            owner_id,
            "~",
            MANIFEST_SK,
            _Update().set(written_gen=generation, due_at=float(again_at), **state),
        )
        return False

    def switch_version(self, owner_id: str, new: str, old: str | None) -> bool:
        """The owner's readers move from `old` (None: the owner had none yet) to `new`; once."""
        upd = (
            _Update()
            .set(current_version=new, previous_version=old, switched_at=now_iso(self.clock()))
            .add_one("switches")
        )
        cv = upd.name("current_version")
        cond = f"{cv} = {upd.value(old)}" if old else f"attribute_not_exists({cv})"
        return bool(self._update(owner_id, "~", MANIFEST_SK, upd, cond))

    def owner_state(self, owner_id: str) -> dict[str, Any] | None:
        """The owner's row: manifest generation, current spec version and the next one's progress."""
        return self._get(item_pk(owner_id, "~"), MANIFEST_SK)

    def owner_states(self, after: str | None = None, *, page: int | None = None) -> Iterator[dict[str, Any]]:
        """Every owner's row after `after`, by owner id (owners-index, never a scan); `page`: rows a read."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": OWNERS_INDEX,
            "KeyConditionExpression": "#d = :d",
            "ExpressionAttributeNames": {"#d": OWNERS_KEY},
            "ExpressionAttributeValues": {":d": _av(OWNERS)},
        }
        if after:
            kwargs["KeyConditionExpression"] += " AND #o > :o"
            kwargs["ExpressionAttributeNames"]["#o"] = OWNERS_SORT
            kwargs["ExpressionAttributeValues"][":o"] = _av(after)
        if page:
            kwargs["Limit"] = page
        for raw in self._pages("query", kwargs):
            yield _row(raw)

    def quarantine(self, owner_id: str, item_id: str, reason: str, channels: Iterable[str]) -> bool:
        """Retries exhausted: the item's unfinished channels, then the item, are QUARANTINED with the reason
        (channels first: whoever sees the item QUARANTINED sees its channels so too)."""
        for ch in channels:
            cu = _Update().set(status=QUARANTINED, error={"code": "quarantined", "message": reason})
            st = cu.name("status")
            self._update(owner_id, item_id, channel_sk(ch), cu, f"{st} <> {cu.value(SUCCEEDED)}")
        upd = _Update().set(status=QUARANTINED, quarantine_reason=reason, updated_at=now_iso(self.clock()))
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


RUNS_PK = "~runs"  # "~" is outside the id pattern: no owner's item can have this key
RUN_COUNTS = ("items", "planned", "done", "failed", "skipped", "skipped_in_flight", "skipped_current")


class Runs:
    """Reprocess runs in the ledger table: one row per run under RUNS_PK, and the per-item marks that make
    each item count once in its run (`run_id` while the run waits for the item, `run_counted` after)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def _key(self, run_id: str) -> dict[str, Any]:
        return {PK: _av(RUNS_PK), SK: _av(f"RUN#{run_id}")}

    def create(self, run: Mapping[str, Any]) -> None:
        item = {PK: RUNS_PK, SK: f"RUN#{run['run_id']}", **{k: 0 for k in RUN_COUNTS}, **run}
        if not self.ledger._put(item, "attribute_not_exists(#pk)", {"#pk": PK}):
            raise StoreError("ledger write failed: the run id exists")

    def get(self, run_id: str) -> dict[str, Any] | None:
        return self.ledger._get(RUNS_PK, f"RUN#{run_id}")

    def list(self, limit: int = 50, open_only: bool = False) -> list[dict[str, Any]]:
        """Newest first (run ids sort by their start time)."""
        kwargs: dict[str, Any] = {
            "TableName": self.ledger.table,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": PK},
            "ExpressionAttributeValues": {":pk": _av(RUNS_PK)},
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        if open_only:
            kwargs["FilterExpression"] = "#st <> :fin"
            kwargs["ExpressionAttributeNames"]["#st"] = "status"
            kwargs["ExpressionAttributeValues"][":fin"] = _av("finished")
        out = []
        for raw in self.ledger._pages("query", kwargs):
            out.append(_row(raw))
            if len(out) >= limit:
                break
        return out

    def _run_update(self, run_id: str, upd: _Update, condition: str | None = None) -> dict[str, Any] | None:
        cond = f"attribute_exists({upd.name(PK)})" + (f" AND ({condition})" if condition else "")
        return self.ledger._write(self._key(run_id), upd, cond, return_new=True)  # type: ignore[return-value]

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
        upd = _Update().set(cursor=next_cursor or "", updated_at=now)
        if next_cursor is None:
            upd.set(planning_done=True, status="running")
        for k, v in counts.items():
            if v:
                n = upd.name(k)
                upd.sets.append(f"{n} = {n} + {upd.value(int(v))}")
        for attr, m in (("channels", channels), ("reasons", reasons)):
            for k, v in m.items():
                n, sub = upd.name(attr), upd.name(k)
                upd.sets.append(f"{n}.{sub} = if_not_exists({n}.{sub}, {upd.value(0)}) + {upd.value(int(v))}")
        if gpu_seconds:
            g = upd.name("gpu_seconds_estimate")
            upd.sets.append(f"{g} = {g} + {upd.value(float(gpu_seconds))}")
        c = upd.name("cursor")
        run = self._run_update(run_id, upd, f"{c} = {upd.value(cursor)}")
        return self.finish_if_done(run) if run else None

    def touch(self, run_id: str) -> None:
        self._run_update(run_id, _Update().set(updated_at=now_iso(self.ledger.clock())))

    def add(self, run_id: str, **counts: int) -> dict[str, Any] | None:
        upd = _Update().set(updated_at=now_iso(self.ledger.clock()))
        for k, v in counts.items():
            n = upd.name(k)
            upd.sets.append(f"{n} = {n} + {upd.value(int(v))}")
        run = self._run_update(run_id, upd)
        return self.finish_if_done(run) if run else None

    def claim_request(self, request_key: str, run_id: str) -> str | None:
        """One open run per request: None if `run_id` now holds the request, else the open run's id."""
        item = {
            PK: RUNS_PK,
            SK: f"REQ#{request_key}",
            "run_id": run_id,
            "open": True,
            "claimed_at": now_iso(self.ledger.clock()),
        }
        cond = "attribute_not_exists(#pk) OR #open = :no"
        if self.ledger._put(item, cond, {"#pk": PK, "#open": "open"}, {":no": False}):
            return None
        return str((self.ledger._get(RUNS_PK, f"REQ#{request_key}") or {}).get("run_id") or "") or None

    def _release_request(self, run: Mapping[str, Any]) -> None:
        if not run.get("request_key"):
            return
        upd = _Update().set(open=False)
        r = upd.name("run_id")
        key = {PK: _av(RUNS_PK), SK: _av(f"REQ#{run['request_key']}")}
        self.ledger._write(key, upd, f"{r} = {upd.value(run['run_id'])}")

    def count_other(self, run_id: str, owner_id: str, item_id: str) -> dict[str, Any] | None:
        """Another open run holds the item: it counts as skipped in this one, once."""
        upd = _Update().add("run_skipped", {run_id})
        rs, r = upd.name("run_skipped"), upd.value(run_id)
        if not self.ledger._update(
            owner_id, item_id, ITEM_SK, upd, f"attribute_not_exists({rs}) OR NOT contains({rs}, {r})"
        ):
            return None
        return self.add(run_id, skipped=1)

    def finish_if_done(self, run: dict[str, Any]) -> dict[str, Any]:
        settled = int(run.get("done", 0)) + int(run.get("failed", 0)) + int(run.get("skipped", 0))
        due = settled >= int(run.get("items", 0))
        if run.get("planning_done") and run.get("status") != "finished" and due:
            upd = _Update().set(status="finished", finished_at=now_iso(self.ledger.clock()))
            n = upd.name("status")
            done = self._run_update(run["run_id"], upd, f"{n} <> {upd.value('finished')}")
            if done:
                self._release_request(done)
            return done or run
        return run

    def mark_item(self, run_id: str, owner_id: str, item_id: str) -> str:
        """Before a run works on an item: "new" (the item now waits to be counted in this run), "marked"
        (it already does: a redelivered message), "counted" (it was counted already), or "other" (another
        open run waits for it)."""
        upd = _Update().set(run_id=run_id)
        r, c = upd.name("run_id"), upd.name("run_counted")
        v = upd.value(run_id)
        fresh = f"(attribute_not_exists({c}) OR {c} <> {v})"
        upd.names["#pk"] = PK
        if self.ledger._update(
            owner_id,
            item_id,
            ITEM_SK,
            upd,
            f"attribute_exists(#pk) AND attribute_not_exists({r}) AND {fresh}",
        ):
            return "new"
        item = self.ledger.item(owner_id, item_id) or {}
        if item.get("run_counted") == run_id:
            return "counted"
        other = item.get("run_id")
        if other == run_id:
            return "marked"
        if other and (self.get(other) or {}).get("status", "finished") == "finished":
            # the mark of a run that finished without it (an item removed meanwhile): taken over
            upd2 = _Update().set(run_id=run_id)
            r2 = upd2.name("run_id")
            if self.ledger._update(owner_id, item_id, ITEM_SK, upd2, f"{r2} = {upd2.value(other)}"):
                return "new"
        return "other"

    def count_item(self, run_id: str, owner_id: str, item_id: str, outcome: str) -> dict[str, Any] | None:
        """The item's outcome in its run (done | failed | skipped), counted once: the item's mark moves from
        `run_id` to `run_counted` under a condition, and only the writer that moved it adds to the run."""
        upd = _Update().set(run_counted=run_id).remove("run_id")
        r = upd.name("run_id")
        if not self.ledger._update(owner_id, item_id, ITEM_SK, upd, f"{r} = {upd.value(run_id)}"):
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
    "REMOVED",
    "RETRY",
    "SUBMITTED",
    "SUCCEEDED",
    "Ledger",
    "Runs",
]
