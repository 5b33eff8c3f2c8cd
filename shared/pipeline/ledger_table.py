"""The ledger's storage port: one table of rows keyed (pk, sk), with three sparse indexes, conditional
writes and all-or-nothing transactions. Conditions and updates are data (this module), so every
transition is written once (shared.pipeline.ledger) and each adapter only evaluates or renders them:
shared.aws.ledger.DynamoTable (DynamoDB expressions) and shared.dev.memory_ledger.MemoryTable (a dict).

Key names are template.yaml's LedgerTable (tests/integration/infra checks them). What an adapter must
do, as DynamoDB does it (tests/integration/pipeline/test_ledger_contract.py holds both to it):

- `update` on a missing row creates it (the condition sees no attributes); a lost condition is False
  (None with `return_new`), never an error. `put` replaces the whole row; a lost condition is False.
- `transact`: every write's condition holds and all are written, or none is. None when written; else
  each write's reason, in order: "None", "ConditionalCheckFailed" or "TransactionConflict".
- A row is in an index only while it has both the index's key attributes (sparse). A query reads one
  partition of the table or an index, ordered by its sort key (strings by code point, numbers by value),
  `limit` rows a page (counted before `filter`, as DynamoDB counts them), from after `start`.
- Values come back as DynamoDB stores them (`stored`): floats that are whole as int, sets as sorted
  lists, None never stored (a None value in `Update.set` removes the attribute; in a map, it is dropped).
- Comparisons across types are false (`<>`: true); `<>` on a missing attribute is true, every other
  comparison false. Numbers are decimals with 38 digits, so 0.1 + 0.2 adds up to 0.3.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

PK, SK = "pk", "sk"
OWNER_INDEX, OWNER_KEY, OWNER_SORT = "owner-index", "owner_id", "osk"
SWEEP_INDEX, SWEEP_KEY, SWEEP_SORT = "sweep-index", "sweep", "due_at"
OWNERS_INDEX, OWNERS_KEY, OWNERS_SORT = "owners-index", "directory", "manifest_owner"
INDEXES: dict[str | None, tuple[str, str]] = {
    None: (PK, SK),  # the table itself
    OWNER_INDEX: (OWNER_KEY, OWNER_SORT),
    SWEEP_INDEX: (SWEEP_KEY, SWEEP_SORT),
    OWNERS_INDEX: (OWNERS_KEY, OWNERS_SORT),
}

# a transaction's cancellation reasons that are about its items
NONE, CONDITION_LOST, CONFLICT = "None", "ConditionalCheckFailed", "TransactionConflict"

Path = str | tuple[str, ...]  # an attribute, or a path into nested maps


def path_of(path: Path) -> tuple[str, ...]:
    return (path,) if isinstance(path, str) else tuple(path)


# ---------------------------------------------------------------------------------------------- values


def to_stored(value: Any) -> Any:
    """A value as DynamoDB stores it: floats as decimals, tuples as lists, no None in maps."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: to_stored(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [to_stored(v) for v in value]
    return value


def from_stored(value: Any) -> Any:
    """A stored value as the ledger reads it: whole decimals as int, the others float, sets sorted."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_stored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_stored(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(from_stored(v) for v in value)
    return value


def stored(value: Any) -> Any:
    """What reading `value` back gives."""
    return from_stored(to_stored(value))


# ------------------------------------------------------------------------------------------ conditions


class Condition:
    """A condition on one row; `a & b`, `a | b`, `~a` combine them."""

    def __and__(self, other: Condition) -> Condition:
        return AllOf((self, other))

    def __or__(self, other: Condition) -> Condition:
        return AnyOf((self, other))

    def __invert__(self) -> Condition:
        return Not(self)


@dataclass(frozen=True)
class Exists(Condition):
    path: Path


@dataclass(frozen=True)
class Missing(Condition):
    path: Path


COMPARISONS = ("=", "<>", "<", "<=", ">", ">=")


@dataclass(frozen=True)
class Compare(Condition):
    path: Path
    op: str  # one of COMPARISONS
    value: Any


@dataclass(frozen=True)
class Between(Condition):
    path: Path
    low: Any
    high: Any


@dataclass(frozen=True)
class BeginsWith(Condition):
    path: Path
    prefix: str


@dataclass(frozen=True)
class Contains(Condition):
    """A string attribute holds `value` as a substring, a set or list holds it as an element."""

    path: Path
    value: Any


@dataclass(frozen=True)
class AllOf(Condition):
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf(Condition):
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class Not(Condition):
    part: Condition


def exists(path: Path) -> Condition:
    return Exists(path)


def missing(path: Path) -> Condition:
    return Missing(path)


def eq(path: Path, value: Any) -> Condition:
    return Compare(path, "=", value)


def ne(path: Path, value: Any) -> Condition:
    return Compare(path, "<>", value)


def lt(path: Path, value: Any) -> Condition:
    return Compare(path, "<", value)


def le(path: Path, value: Any) -> Condition:
    return Compare(path, "<=", value)


def gt(path: Path, value: Any) -> Condition:
    return Compare(path, ">", value)


def ge(path: Path, value: Any) -> Condition:
    return Compare(path, ">=", value)


def between(path: Path, low: Any, high: Any) -> Condition:
    return Between(path, low, high)


def begins_with(path: Path, prefix: str) -> Condition:
    return BeginsWith(path, prefix)


def contains(path: Path, value: Any) -> Condition:
    return Contains(path, value)


def eq_or_missing(path: Path, value: Any) -> Condition:
    """`path` = `value`; for a None `value`, the attribute is absent (None is never stored)."""
    return Compare(path, "=", value) if value is not None else Missing(path)


def all_of(*parts: Condition | None) -> Condition:
    kept = tuple(p for p in parts if p is not None)
    return kept[0] if len(kept) == 1 else AllOf(kept)


def any_of(*parts: Condition | None) -> Condition:
    kept = tuple(p for p in parts if p is not None)
    return kept[0] if len(kept) == 1 else AnyOf(kept)


# --------------------------------------------------------------------------------------------- updates


@dataclass(frozen=True)
class SetValue:
    """SET path = value."""

    path: Path
    value: Any


@dataclass(frozen=True)
class SetDefault:
    """SET path = if_not_exists(path, value)."""

    path: Path
    value: Any


@dataclass(frozen=True)
class Increment:
    """SET path = if_not_exists(path, 0) + by; `strict`: path = path + by (the attribute must exist)."""

    path: Path
    by: int | float
    strict: bool = False


@dataclass(frozen=True)
class Copy:
    """SET path = source (the source attribute must exist)."""

    path: Path
    source: Path


@dataclass(frozen=True)
class Remove:
    path: Path


@dataclass(frozen=True)
class AddTo:
    """ADD: a number to a number (0 when absent), or elements (a set) to a set (empty when absent)."""

    path: Path
    value: Any


Action = SetValue | SetDefault | Increment | Copy | Remove | AddTo


class Update:
    """One row's update: a list of actions, each on its own path (DynamoDB refuses an update whose
    paths overlap; so does this, when it is built)."""

    def __init__(self) -> None:
        self.actions: list[Action] = []

    def _act(self, action: Action) -> Update:
        new = path_of(action.path)
        for a in self.actions:
            old = path_of(a.path)
            if old[: len(new)] == new[: len(old)]:
                raise ValueError(f"an update names {'.'.join(new)} twice (or a path inside it)")
        self.actions.append(action)
        return self

    def set(self, **fields: Any) -> Update:
        """SET each field; a None value REMOVEs it."""
        for k, v in fields.items():
            self._act(Remove(k) if v is None else SetValue(k, v))
        return self

    def set_default(self, path: Path, value: Any) -> Update:
        return self._act(SetDefault(path, value))

    def increment(self, path: Path, by: int | float = 1, *, strict: bool = False) -> Update:
        return self._act(Increment(path, by, strict))

    def copy(self, path: Path, source: Path) -> Update:
        return self._act(Copy(path, source))

    def remove(self, *paths: Path) -> Update:
        for p in paths:
            self._act(Remove(p))
        return self

    def add(self, path: Path, value: Any) -> Update:
        return self._act(AddTo(path, value))

    def post_image(self, before: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The row this update leaves when applied to `before` (as a read answers it), or None when that
        cannot be known from the update alone: no row before, or an action that reads the row's old
        values (anything but a plain SET or REMOVE of a top-level attribute)."""
        if before is None or not all(
            isinstance(a, SetValue | Remove) and isinstance(a.path, str) for a in self.actions
        ):
            return None
        out = dict(before)
        for a in self.actions:
            if isinstance(a, Remove):
                out.pop(a.path, None)  # type: ignore[arg-type]
            else:
                out[a.path] = stored(a.value)  # type: ignore[index, union-attr]
        return out


# --------------------------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class Query:
    """One page of one partition of the table (`index` None) or of an index, in its sort key's order.

    `sort`: a condition on the sort key only (Compare but <>, Between, BeginsWith). `filter`: on the
    rows read (after `limit`, as DynamoDB applies it). `start`: the last key of the page before (the
    table's key and the index's). `fields`: only these attributes of each row."""

    partition: str
    index: str | None = None
    sort: Condition | None = None
    filter: Condition | None = None
    limit: int | None = None
    start: Mapping[str, Any] | None = None
    fields: tuple[str, ...] | None = None
    forward: bool = True
    consistent: bool = False


Key = Mapping[str, str]  # {PK: ..., SK: ...}
Write = tuple[Key, Update, Condition | None]


class Table(Protocol):
    """The ledger's storage (see the module docstring for the semantics every adapter keeps)."""

    def get(self, key: Key, *, consistent: bool = True) -> dict[str, Any] | None: ...

    def update(
        self, key: Key, update: Update, condition: Condition | None = None, *, return_new: bool = False
    ) -> dict[str, Any] | bool | None: ...

    def put(self, row: Mapping[str, Any], condition: Condition | None = None) -> bool: ...

    def transact(self, writes: Sequence[Write]) -> list[str] | None: ...

    def query(self, query: Query) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """(rows, the last key read when more may follow, else None)."""
        ...


def query_all(table: Table, query: Query, limit: int | None = None) -> Iterable[dict[str, Any]]:
    """Every row of `query`, page after page (at most `limit`)."""
    n, start = 0, query.start
    while True:
        rows, start = table.query(Query(**{**query.__dict__, "start": start}))
        for row in rows:
            yield row
            n += 1
            if limit is not None and n >= limit:
                return
        if not start:
            return
