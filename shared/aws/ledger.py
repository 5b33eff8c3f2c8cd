"""The ledger on DynamoDB: `DynamoTable`, the storage port of shared.pipeline.ledger_table over an
injected boto3 client. It renders the port's conditions and updates as DynamoDB expressions, marshals
values and translates ClientError to StoreError; it decides nothing (the transitions are
shared.pipeline.ledger's). `Ledger(dynamodb, table_name)` is the ledger over it.

The ledger's names (keys, statuses, helpers) are importable from here as from shared.pipeline.ledger.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from boto3.dynamodb.types import DYNAMODB_CONTEXT, TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from shared.aws.clients import translate
from shared.pipeline import ledger as _ledger
from shared.pipeline.ledger import (  # noqa: F401  (re-exported: callers import them from here)
    _IMPLIED_BY_OSK,
    CLAIMED,
    COMPLETE,
    DUE,
    ITEM_SK,
    MANIFEST_SK,
    MAX_ITEM_ROWS,
    OSK_SEGMENTS,
    OWNERS,
    PARTIAL,
    PERSON,
    PERSON_PHOTO,
    PROCESSING,
    REMOVED,
    RETRY,
    RUN_COUNTS,
    RUNS_PK,
    SUBMITTED,
    UPLOAD,
    Runs,
    _implied_by_osk,
    channel_sk,
    iso_epoch,
    item_pk,
    now_iso,
    sk_channel,
)
from shared.pipeline.ledger_table import (  # noqa: F401
    INDEXES,
    OWNER_INDEX,
    OWNER_KEY,
    OWNER_SORT,
    OWNERS_INDEX,
    OWNERS_KEY,
    OWNERS_SORT,
    PK,
    SK,
    SWEEP_INDEX,
    SWEEP_KEY,
    SWEEP_SORT,
    AddTo,
    AllOf,
    AnyOf,
    BeginsWith,
    Between,
    Compare,
    Condition,
    Contains,
    Copy,
    Exists,
    Increment,
    Key,
    Missing,
    Not,
    Path,
    Query,
    Remove,
    SetDefault,
    SetValue,
    Update,
    Write,
    from_stored,
    path_of,
    to_stored,
)
from shared.pipeline.plan import DISPATCHED, FAILED, PENDING, QUARANTINED, SUCCEEDED

_to_dynamo, _from_dynamo = to_stored, from_stored
_Update = Update

_ser = TypeSerializer()
_de = TypeDeserializer()

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


class _Expressions:
    """One request's expressions: placeholders for names (#n0, one per attribute) and values (:v0)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self._placeholder: dict[str, str] = {}

    def name(self, path: Path) -> str:
        out = []
        for part in path_of(path):
            if part not in self._placeholder:
                self._placeholder[part] = ph = f"#n{len(self._placeholder)}"
                self.names[ph] = part
            out.append(self._placeholder[part])
        return ".".join(out)

    def value(self, v: Any) -> str:
        ph = f":v{len(self.values)}"
        self.values[ph] = _av(v)
        return ph

    def condition(self, c: Condition) -> str:
        if isinstance(c, Exists):
            return f"attribute_exists({self.name(c.path)})"
        if isinstance(c, Missing):
            return f"attribute_not_exists({self.name(c.path)})"
        if isinstance(c, Compare):
            return f"{self.name(c.path)} {c.op} {self.value(c.value)}"
        if isinstance(c, Between):
            return f"{self.name(c.path)} BETWEEN {self.value(c.low)} AND {self.value(c.high)}"
        if isinstance(c, BeginsWith):
            return f"begins_with({self.name(c.path)}, {self.value(c.prefix)})"
        if isinstance(c, Contains):
            return f"contains({self.name(c.path)}, {self.value(c.value)})"
        if isinstance(c, AllOf | AnyOf):
            joined = " AND " if isinstance(c, AllOf) else " OR "
            return joined.join(f"({self.condition(p)})" for p in c.parts)
        if isinstance(c, Not):
            return f"NOT ({self.condition(c.part)})"
        raise TypeError(f"not a condition: {c!r}")

    def update(self, upd: Update) -> str:
        sets: list[str] = []
        removes: list[str] = []
        adds: list[str] = []
        for a in upd.actions:
            n = self.name(a.path)
            if isinstance(a, SetValue):
                sets.append(f"{n} = {self.value(a.value)}")
            elif isinstance(a, SetDefault):
                sets.append(f"{n} = if_not_exists({n}, {self.value(a.value)})")
            elif isinstance(a, Increment):
                old = n if a.strict else f"if_not_exists({n}, {self.value(0)})"
                sets.append(f"{n} = {old} + {self.value(a.by)}")
            elif isinstance(a, Copy):
                sets.append(f"{n} = {self.name(a.source)}")
            elif isinstance(a, Remove):
                removes.append(n)
            elif isinstance(a, AddTo):
                adds.append(f"{n} {self.value(a.value)}")
        out = []
        if sets:
            out.append("SET " + ", ".join(sets))
        if removes:
            out.append("REMOVE " + ", ".join(removes))
        if adds:
            out.append("ADD " + ", ".join(adds))
        return " ".join(out)


class DynamoTable:
    """The ledger table on DynamoDB (shared.pipeline.ledger_table.Table). `writes` counts items written
    (a transaction's items one each) and `write_units` what DynamoDB bills for them (2 a transactional
    item), for the benches."""

    def __init__(self, dynamodb: Any, name: str) -> None:
        self.db = dynamodb
        self.name = name
        self.writes = 0
        self.write_units = 0

    @staticmethod
    def _key(key: Key) -> dict[str, Any]:
        return {k: _av(v) for k, v in key.items()}

    def get(self, key: Key, *, consistent: bool = True) -> dict[str, Any] | None:
        try:
            resp = self.db.get_item(TableName=self.name, Key=self._key(key), ConsistentRead=consistent)
        except ClientError as e:
            raise translate(e, "ledger read") from e
        return _row(resp["Item"]) if "Item" in resp else None

    def _update_op(self, key: Key, upd: Update, condition: Condition | None) -> dict[str, Any]:
        """One UpdateItem's parameters (a request of its own, or an Update of a transaction)."""
        x = _Expressions()
        op: dict[str, Any] = {
            "TableName": self.name,
            "Key": self._key(key),
            "UpdateExpression": x.update(upd),
        }
        if condition is not None:
            op["ConditionExpression"] = x.condition(condition)
        op["ExpressionAttributeNames"] = x.names
        if x.values:
            op["ExpressionAttributeValues"] = x.values
        return op

    def update(
        self, key: Key, update: Update, condition: Condition | None = None, *, return_new: bool = False
    ) -> dict[str, Any] | bool | None:
        """One UpdateItem; a lost condition is False (None with `return_new`), never an error."""
        kwargs = self._update_op(key, update, condition)
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

    def put(self, row: Mapping[str, Any], condition: Condition | None = None) -> bool:
        """One PutItem; False when the condition is lost."""
        kwargs: dict[str, Any] = {
            "TableName": self.name,
            "Item": {k: _av(v) for k, v in _to_dynamo(dict(row)).items()},
        }
        if condition is not None:
            x = _Expressions()
            kwargs["ConditionExpression"] = x.condition(condition)
            kwargs["ExpressionAttributeNames"] = x.names
            if x.values:
                kwargs["ExpressionAttributeValues"] = x.values
        self.writes += 1
        try:
            self.db.put_item(**kwargs)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise translate(e, "ledger write") from e
        return True

    def transact(self, writes: Sequence[Write]) -> list[str] | None:
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

    def query(self, query: Query) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        x = _Expressions()
        hash_key, _ = INDEXES[query.index]
        key_condition = f"{x.name(hash_key)} = {x.value(query.partition)}"
        if query.sort is not None:
            key_condition += f" AND {x.condition(query.sort)}"
        kwargs: dict[str, Any] = {"TableName": self.name, "KeyConditionExpression": key_condition}
        if query.index is not None:
            kwargs["IndexName"] = query.index
        if query.filter is not None:
            kwargs["FilterExpression"] = x.condition(query.filter)
        if query.fields is not None:
            kwargs["ProjectionExpression"] = ", ".join(x.name(f) for f in query.fields)
        if query.limit:
            kwargs["Limit"] = query.limit
        if query.start:
            kwargs["ExclusiveStartKey"] = {k: _av(v) for k, v in query.start.items()}
        if not query.forward:
            kwargs["ScanIndexForward"] = False
        if query.consistent:
            kwargs["ConsistentRead"] = True
        kwargs["ExpressionAttributeNames"] = x.names
        kwargs["ExpressionAttributeValues"] = x.values
        try:
            resp = self.db.query(**kwargs)
        except ClientError as e:
            raise translate(e, "ledger query") from e
        last = resp.get("LastEvaluatedKey")
        return [_row(r) for r in resp.get("Items", [])], (_row(last) if last else None)


class Ledger(_ledger.Ledger):
    """The ledger over DynamoDB: `Ledger(client, table_name)`. `db` is the client (tests wrap it)."""

    def __init__(self, dynamodb: Any, table: str, *, clock: Any = time.time) -> None:
        super().__init__(DynamoTable(dynamodb, table), clock=clock)

    @property
    def db(self) -> Any:
        return self.table.db  # type: ignore[attr-defined]

    @db.setter
    def db(self, client: Any) -> None:
        self.table.db = client  # type: ignore[attr-defined]

    @property
    def table_name(self) -> str:
        return self.table.name  # type: ignore[attr-defined]


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
    "DynamoTable",
    "Ledger",
    "Runs",
]
