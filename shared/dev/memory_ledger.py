"""The ledger table in memory (dev and tests only): `MemoryTable`, the storage port of
shared.pipeline.ledger_table over a dict, evaluating the same conditions and updates DynamoTable renders
for DynamoDB, with DynamoDB's semantics (the port's docstring lists them; the contract suite,
tests/integration/pipeline/test_ledger_contract.py, holds both adapters to them). One lock makes each
call atomic, a transaction included, so a transaction is never cancelled for a conflict here.

    ledger = memory_ledger(clock=clock)      # a Ledger over a fresh MemoryTable
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Mapping, Sequence
from decimal import Context, Decimal
from typing import Any

from shared.aws.clients import StoreError
from shared.pipeline.ledger import Ledger
from shared.pipeline.ledger_table import (
    CONDITION_LOST,
    INDEXES,
    NONE,
    PK,
    SK,
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

# template.yaml's AttributeDefinitions: a key attribute of the table or an index must be of its type
# (the contract suite checks this list against the template)
KEY_TYPES = {
    "pk": "S",
    "sk": "S",
    "owner_id": "S",
    "osk": "S",
    "sweep": "S",
    "due_at": "N",
    "directory": "S",
    "manifest_owner": "S",
}

_DECIMALS = Context(prec=38)  # DynamoDB's numbers: 38 significant digits
_ABSENT = object()


def _invalid(message: str) -> StoreError:
    """What DynamoDB answers with a ValidationException (a request that can never succeed)."""
    err = StoreError(f"ledger write failed: ValidationException: {message}")
    err.retryable = False
    return err


def _type(v: Any) -> str | None:
    """A stored value's DynamoDB type."""
    if isinstance(v, bool):
        return "BOOL"
    if isinstance(v, str):
        return "S"
    if isinstance(v, int | Decimal):
        return "N"
    if isinstance(v, bytes | bytearray):
        return "B"
    if isinstance(v, set | frozenset):
        kinds = {_type(e) for e in v}
        return {"S": "SS", "N": "NS", "B": "BS"}.get(kinds.pop()) if len(kinds) == 1 else None
    if isinstance(v, list):
        return "L"
    if isinstance(v, dict):
        return "M"
    return None


def _get(row: Mapping[str, Any], path: Path) -> Any:
    cur: Any = row
    for part in path_of(path):
        if not isinstance(cur, dict) or part not in cur:
            return _ABSENT
        cur = cur[part]
    return cur


def _parent(row: dict[str, Any], path: Path) -> tuple[dict[str, Any], str]:
    parts = path_of(path)
    cur: Any = row
    for part in parts[:-1]:
        cur = cur.get(part, _ABSENT) if isinstance(cur, dict) else _ABSENT
        if not isinstance(cur, dict):
            raise _invalid("The document path provided in the update expression is invalid for update")
    return cur, parts[-1]


def _compare(a: Any, op: str, b: Any) -> bool:
    if a is _ABSENT:
        return op == "<>"
    same = _type(a) is not None and _type(a) == _type(b)
    if op == "=":
        return same and a == b
    if op == "<>":
        return not (same and a == b)
    if not same or _type(a) not in ("S", "N", "B"):
        return False
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def holds(c: Condition, row: Mapping[str, Any]) -> bool:
    """Whether `c` holds for a stored row ({} for a missing one)."""
    if isinstance(c, Exists):
        return _get(row, c.path) is not _ABSENT
    if isinstance(c, Missing):
        return _get(row, c.path) is _ABSENT
    if isinstance(c, Compare):
        return _compare(_get(row, c.path), c.op, to_stored(c.value))
    if isinstance(c, Between):
        v = _get(row, c.path)
        return _compare(v, ">=", to_stored(c.low)) and _compare(v, "<=", to_stored(c.high))
    if isinstance(c, BeginsWith):
        v = _get(row, c.path)
        return isinstance(v, str) and isinstance(c.prefix, str) and v.startswith(c.prefix)
    if isinstance(c, Contains):
        v, want = _get(row, c.path), to_stored(c.value)
        if isinstance(v, str):
            return isinstance(want, str) and want in v
        if isinstance(v, set | frozenset | list):
            return any(_compare(e, "=", want) for e in v)
        return False
    if isinstance(c, AllOf):
        return all(holds(p, row) for p in c.parts)
    if isinstance(c, AnyOf):
        return any(holds(p, row) for p in c.parts)
    if isinstance(c, Not):
        return not holds(c.part, row)
    raise TypeError(f"not a condition: {c!r}")


def _number(v: Any, what: str) -> Decimal:
    if _type(v) != "N":
        raise _invalid(f"An operand in the update expression has an incorrect data type ({what})")
    return Decimal(v)


def apply(update: Update, old: Mapping[str, Any]) -> dict[str, Any]:
    """The stored row `update` leaves of `old` (every operand read from `old`, as DynamoDB reads them)."""
    new = copy.deepcopy(dict(old))
    for a in update.actions:
        current = _get(old, a.path)
        if isinstance(a, Remove):
            try:
                parent, name = _parent(new, a.path)
            except StoreError:
                continue
            parent.pop(name, None)
            continue
        if isinstance(a, SetValue):
            value = to_stored(a.value)
        elif isinstance(a, SetDefault):
            value = to_stored(a.value) if current is _ABSENT else current
        elif isinstance(a, Increment):
            if current is _ABSENT and a.strict:
                raise _invalid(
                    "The provided expression refers to an attribute that does not exist in the item"
                )
            start = Decimal(0) if current is _ABSENT else _number(current, "+")
            value = _DECIMALS.add(start, _number(to_stored(a.by), "+"))
        elif isinstance(a, Copy):
            value = _get(old, a.source)
            if value is _ABSENT:
                raise _invalid(
                    "The provided expression refers to an attribute that does not exist in the item"
                )
            value = copy.deepcopy(value)
        elif isinstance(a, AddTo):
            add = to_stored(a.value)
            if _type(add) == "N":
                start = Decimal(0) if current is _ABSENT else _number(current, "ADD")
                value = _DECIMALS.add(start, Decimal(add))
            elif _type(add) in ("SS", "NS", "BS"):
                if current is not _ABSENT and _type(current) != _type(add):
                    raise _invalid("An operand in the update expression has an incorrect data type (ADD)")
                value = set(add) | (set() if current is _ABSENT else set(current))
            else:
                raise _invalid("ADD takes a number or a set")
        else:
            raise TypeError(f"not an update action: {a!r}")
        if value is None:
            raise _invalid("a value is None")
        parent, name = _parent(new, a.path)
        parent[name] = value
    return new


def _check(row: Mapping[str, Any]) -> None:
    for attr, kind in KEY_TYPES.items():
        v = row.get(attr, _ABSENT)
        if v is not _ABSENT and (_type(v) != kind or v == ""):
            raise _invalid(f"the key attribute {attr} must be a non-empty {kind}")


class MemoryTable:
    """The ledger table as a dict of stored rows, one lock for every call. `writes` / `write_units` count
    as DynamoTable counts them."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.RLock()
        self.writes = 0
        self.write_units = 0

    @staticmethod
    def _k(key: Key) -> tuple[str, str]:
        return key[PK], key[SK]

    def get(self, key: Key, *, consistent: bool = True) -> dict[str, Any] | None:
        with self._lock:
            row = self._rows.get(self._k(key))
            return from_stored(row) if row is not None else None

    def update(
        self, key: Key, update: Update, condition: Condition | None = None, *, return_new: bool = False
    ) -> dict[str, Any] | bool | None:
        with self._lock:
            self.writes += 1
            self.write_units += 1
            old = self._rows.get(self._k(key))
            if condition is not None and not holds(condition, old or {}):
                return None if return_new else False
            new = apply(update, old or {PK: key[PK], SK: key[SK]})
            _check(new)
            self._rows[self._k(key)] = new
            return from_stored(new) if return_new else True

    def put(self, row: Mapping[str, Any], condition: Condition | None = None) -> bool:
        with self._lock:
            self.writes += 1
            key = self._k(row)  # type: ignore[arg-type]
            if condition is not None and not holds(condition, self._rows.get(key) or {}):
                return False
            new = to_stored(dict(row))
            _check(new)
            self._rows[key] = new
            return True

    def transact(self, writes: Sequence[Write]) -> list[str] | None:
        with self._lock:
            self.writes += len(writes)
            self.write_units += 2 * len(writes)
            keys = [self._k(key) for key, _, _ in writes]
            if len(set(keys)) != len(keys):
                raise _invalid("Transaction request cannot include multiple operations on one item")
            lost = [
                c is not None and not holds(c, self._rows.get(k) or {})
                for k, (_, _, c) in zip(keys, writes, strict=True)
            ]
            if any(lost):
                return [CONDITION_LOST if x else NONE for x in lost]
            new = [
                apply(u, self._rows.get(k) or {PK: k[0], SK: k[1]})
                for k, (_, u, _) in zip(keys, writes, strict=True)
            ]
            for row in new:
                _check(row)
            for k, row in zip(keys, new, strict=True):
                self._rows[k] = row
            return None

    def query(self, query: Query) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        hash_key, sort_key = INDEXES[query.index]
        if query.consistent and query.index is not None:
            raise _invalid("Consistent reads are not supported on global secondary indexes")
        if query.sort is not None:
            _check_sort(query.sort, sort_key)
        with self._lock:
            part = [
                r
                for r in self._rows.values()
                if r.get(hash_key) == query.partition and _type(r.get(sort_key)) is not None
            ]
            part.sort(key=lambda r: (r[sort_key], r[PK], r[SK]), reverse=not query.forward)
            if query.start:
                s = to_stored(dict(query.start))
                mark = (s[sort_key], s[PK], s[SK])
                part = [
                    r
                    for r in part
                    if (
                        (r[sort_key], r[PK], r[SK]) > mark
                        if query.forward
                        else (r[sort_key], r[PK], r[SK]) < mark
                    )
                ]
            matched = [r for r in part if query.sort is None or holds(query.sort, r)]
            page = matched[: query.limit] if query.limit else matched
            last = None
            if query.limit and len(matched) > query.limit:
                last = {a: page[-1][a] for a in {PK, SK, hash_key, sort_key}}
            rows = [r for r in page if query.filter is None or holds(query.filter, r)]
            if query.fields is not None:
                rows = [{f: r[f] for f in query.fields if f in r} for r in rows]
            return [from_stored(r) for r in rows], (from_stored(last) if last else None)


def _check_sort(c: Condition, sort_key: str) -> None:
    """A key condition names the sort key only, with =, <, <=, >, >=, BETWEEN or begins_with."""
    ok = isinstance(c, BeginsWith | Between) or (isinstance(c, Compare) and c.op != "<>")
    if not ok or path_of(c.path) != (sort_key,):  # type: ignore[attr-defined]
        raise _invalid(f"a key condition on {sort_key} only, and not <>: {c!r}")


def memory_ledger(*, clock: Any = time.time) -> Ledger:
    """A Ledger over a fresh MemoryTable."""
    return Ledger(MemoryTable(), clock=clock)


__all__ = ["KEY_TYPES", "MemoryTable", "apply", "holds", "memory_ledger"]
