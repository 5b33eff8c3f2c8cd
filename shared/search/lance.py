"""LanceDB implementation of SearchEngine (embedded: no server; a local folder or s3://).

Layout: `{base_uri}/search/{spec_version}/{owner_id}/` is one LanceDB database per owner holding the
tables `text`, `visual`, `persons` (shared.search.engine). The owner is the folder, so a query opens
that owner's tables and nothing else, and needs no owner filter.

    engine = LanceSearch("s3://media-bucket", spec_version, storage_options={...})   # or a folder
    engine.write(owner, rows, replace_items=[item])    # one commit per table touched
    engine.text_search(owner, "ferry", k=50)           # BM25 (native lance FTS, no tantivy)
    engine.vector_search(owner, "visual", v, k=50)     # cosine; exact below ann_min_rows, ANN above
    engine.optimize(owner)                             # compaction + index upkeep, on a schedule

Writes: one `add` (or one `merge_insert` when items are replaced) per table per call, so a batch of items
is one commit per table, not one per row. LanceDB commits on S3 with conditional writes (no lock
table). Indexes: the FTS index is created with a table's first rows (lance searches rows added after it
too, unindexed, until optimize folds them in); the vector index (IVF_PQ by default, cosine) is built by
optimize() once a table holds ann_min_rows; below that every vector query is exact. A scalar BTREE index
on item_id comes with the vector index (item filters and replace/delete stay index lookups).

S3 (moto's or AWS): storage_options as LanceDB takes them, e.g. {"aws_endpoint": "http://127.0.0.1:5000",
"allow_http": "true", "aws_region": "us-east-1", "aws_access_key_id": ..., "aws_secret_access_key": ...}
(omit the keys to use the Lambda role's credentials).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta
from typing import Any

import lancedb  # ~15 s to import on a busy 2-core machine (pydantic validators of its REST client): open
import numpy as np
import pyarrow as pa
from lancedb.index import FTS, BTree, HnswSq, IvfPq

from shared.errors import InvalidInput
from shared.pipeline.keys import ID_RE, is_item_id, person_item_id
from shared.search.engine import PERSONS, SPACES, TEXT, Hit, Row, WriteResult
from shared.search.settings import DEFAULTS, SearchSettings

log = logging.getLogger(__name__)


VERSION_RE = ID_RE  # spec versions are "{label}-{hash}": the id alphabet
COLUMNS = ["id", "kind", "owner_id", "item_id", "channel", "start_s", "end_s", "text"]
MAX_OPEN_OWNERS = 256  # warm handles kept per process (a Lambda serves few owners at a time)


def schema(space: str) -> pa.Schema:
    dims = SPACES[space][1]
    return pa.schema(
        [
            ("id", pa.string()),
            ("kind", pa.string()),
            ("owner_id", pa.string()),
            ("item_id", pa.string()),
            ("channel", pa.string()),
            ("start_s", pa.float64()),
            ("end_s", pa.float64()),
            ("text", pa.string()),
            ("vector", pa.list_(pa.float32(), dims)),
        ]
    )


def rows_table(space: str, rows: Sequence[Row]) -> pa.Table:
    """Rows of one space as an Arrow table of its schema (one contiguous vector buffer)."""
    dims = SPACES[space][1]
    vectors = np.ascontiguousarray(np.stack([r.vector for r in rows]).astype(np.float32, copy=False))
    if vectors.shape != (len(rows), dims):
        raise InvalidInput(f"{space} rows need {dims}-d vectors", field="rows")
    cols: dict[str, Any] = {c: [getattr(r, c) for r in rows] for c in COLUMNS}
    cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dims)
    return pa.table(cols, schema=schema(space))


def _check_owner(owner_id: str) -> str:
    if not isinstance(owner_id, str) or not ID_RE.fullmatch(owner_id):
        raise InvalidInput("must match [A-Za-z0-9_-]{1,64}", field="owner_id")
    return owner_id


def _in_list(item_ids: Collection[str]) -> str:
    """`item_id IN (...)` over validated ids (their alphabet has no quote, so no escaping is needed)."""
    ids = sorted(set(item_ids))
    for i in ids:
        if not is_item_id(i):
            raise InvalidInput("must be item ids ([A-Za-z0-9_-]{1,64}, or a person's @id)", field="item_ids")
    return "item_id IN (" + ", ".join(f"'{i}'" for i in ids) + ")"


class _Tables:
    """One owner's open database and tables (handles are reused while warm)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.tables: dict[str, Any] = {}
        self.indexed: dict[str, set[str]] = {}  # space -> index kinds present ("FTS", "VECTOR", ...)


class LanceSearch:
    """SearchEngine over LanceDB: one spec version's indexes for every owner under `base_uri`."""

    def __init__(
        self,
        base_uri: str,
        spec_version: str,
        *,
        storage_options: Mapping[str, str] | None = None,
        settings: SearchSettings = DEFAULTS,
    ) -> None:
        if not isinstance(spec_version, str) or not VERSION_RE.fullmatch(spec_version):
            raise InvalidInput("must match [A-Za-z0-9_-]{1,64}", field="spec_version")
        self.base_uri = str(base_uri).rstrip("/")
        self.spec_version = spec_version
        self.storage_options = dict(storage_options or {})
        self.settings = settings
        self._local = "://" not in self.base_uri or self.base_uri.startswith("file://")
        self._owners: OrderedDict[str, _Tables] = OrderedDict()
        self._lock = threading.Lock()

    # ---- layout -------------------------------------------------------------------------------
    def owner_uri(self, owner_id: str) -> str:
        return f"{self.base_uri}/search/{self.spec_version}/{_check_owner(owner_id)}"

    def _owner(self, owner_id: str, *, create: bool) -> _Tables | None:
        uri = self.owner_uri(owner_id)
        with self._lock:
            got = self._owners.get(owner_id)
            if got is not None:
                self._owners.move_to_end(owner_id)
                return got
        if self._local and not create and not os.path.isdir(uri.removeprefix("file://")):
            return None  # a read never makes a folder (LanceDB's connect would)
        db = lancedb.connect(
            uri,
            storage_options=self.storage_options or None,
            read_consistency_interval=timedelta(seconds=self.settings.read_consistency_s),
        )
        got = _Tables(db)
        with self._lock:
            got = self._owners.setdefault(owner_id, got)
            while len(self._owners) > MAX_OPEN_OWNERS:
                self._owners.popitem(last=False)
        return got

    def _table(self, owner_id: str, space: str, *, create: bool = False) -> Any | None:
        if space not in SPACES:
            raise InvalidInput(f"must be one of {sorted(SPACES)}", field="space")
        owner = self._owner(owner_id, create=create)
        if owner is None:
            return None
        tbl = owner.tables.get(space)
        if tbl is not None:
            return tbl
        try:
            tbl = owner.db.open_table(space)
        except (ValueError, FileNotFoundError):  # LanceDB: "Table 'x' was not found"
            if not create:
                return None
            tbl = owner.db.create_table(space, schema=schema(space), exist_ok=True)
        owner.tables[space] = tbl
        owner.indexed[space] = self._index_kinds(tbl)
        return tbl

    @staticmethod
    def _index_kinds(tbl: Any) -> set[str]:
        kinds = set()
        for idx in tbl.list_indices():
            cols, itype = list(idx.columns), str(idx.index_type).upper().replace("_", "")  # IVFPQ, FTS, BTREE
            if cols == ["text"] and "FTS" in itype:
                kinds.add("FTS")
            elif cols == ["vector"]:
                kinds.add("VECTOR")
                kinds.add(itype)
            elif cols == ["item_id"]:
                kinds.add("ITEM_ID")
        return kinds

    def _indexed(self, owner_id: str, space: str) -> set[str]:
        owner = self._owners.get(owner_id)
        return owner.indexed.get(space, set()) if owner else set()

    # ---- writes -------------------------------------------------------------------------------
    def write(
        self, owner_id: str, rows: Sequence[Row], *, replace_items: Collection[str] = ()
    ) -> WriteResult:
        _check_owner(owner_id)
        by_space: dict[str, list[Row]] = {}
        for r in rows:
            if r.owner_id != owner_id:
                raise InvalidInput("a row belongs to another owner", field="rows")
            if r.space not in SPACES or not is_item_id(r.item_id):
                raise InvalidInput("a row has an unknown space or a bad item id", field="rows")
            by_space.setdefault(r.space, []).append(r)
        replace = set(replace_items)
        pred = _in_list(replace) if replace else None
        out = WriteResult()
        for space in SPACES:
            new = by_space.get(space)
            tbl = self._table(owner_id, space, create=bool(new))
            if tbl is None:
                continue
            if new:
                data = rows_table(space, new)
                if pred:
                    res = (
                        tbl.merge_insert("id")
                        .when_matched_update_all()
                        .when_not_matched_insert_all()
                        .when_not_matched_by_source_delete(pred)
                        .execute(data)
                    )
                    out.deleted[space] = int(res.num_deleted_rows)
                else:
                    tbl.add(data)
                out.written[space] = len(new)
                out.commits += 1
                if space == TEXT and "FTS" not in self._indexed(owner_id, space):
                    self._create_fts(owner_id, tbl)
            elif pred and tbl.count_rows(pred) > 0:
                out.deleted[space] = int(tbl.delete(pred).num_deleted_rows)
                out.commits += 1
        return out

    def _create_fts(self, owner_id: str, tbl: Any) -> None:
        # English stemming + stop words: "leaves"/"leave" and "ferries"/"ferry" meet; positions are not
        # kept (no phrase queries), which keeps the index small.
        tbl.create_index(
            "text", config=FTS(stem=True, remove_stop_words=True, with_position=False), replace=True
        )
        self._indexed(owner_id, TEXT).add("FTS")

    def delete_items(self, owner_id: str, item_ids: Collection[str]) -> int:
        _check_owner(owner_id)
        if not item_ids:
            return 0
        pred = _in_list(item_ids)
        removed = 0
        for space in SPACES:
            tbl = self._table(owner_id, space)
            if tbl is not None and tbl.count_rows(pred) > 0:
                removed += int(tbl.delete(pred).num_deleted_rows)
        return removed

    def forget(self, owner_id: str) -> None:
        """Let go of the owner's warm handles (opened again on the next call): after a failed write, whose
        cause may be tables another process dropped and wrote again (`se reindex`)."""
        with self._lock:
            self._owners.pop(owner_id, None)

    def drop(self, owner_id: str) -> None:
        owner = self._owner(owner_id, create=False)
        if owner is None:
            return
        for name in list(owner.db.list_tables().tables):
            owner.db.drop_table(name)
        with self._lock:
            self._owners.pop(owner_id, None)

    # ---- reads --------------------------------------------------------------------------------
    def counts(self, owner_id: str) -> dict[str, int]:
        return {
            space: int(tbl.count_rows())
            for space in SPACES
            if (tbl := self._table(owner_id, space)) is not None
        }

    def _hits(self, table: pa.Table, score: str) -> list[Hit]:
        d = table.to_pydict()
        if score == "_distance":  # cosine distance -> similarity
            scores = [1.0 - float(x) for x in d["_distance"]]
        else:
            scores = [float(x) for x in d["_score"]]
        return [
            Hit(
                d["id"][n],
                d["kind"][n],
                d["owner_id"][n],
                d["item_id"][n],
                d["channel"][n],
                float(d["start_s"][n]),
                float(d["end_s"][n]),
                d["text"][n] or "",
                scores[n],
            )
            for n in range(table.num_rows)
        ]

    def vector_query(
        self, owner_id: str, space: str, vector: np.ndarray, *, k: int, item_id: str | None = None
    ):
        """The LanceDB query builder vector_search runs (the bench times it bare beside ours)."""
        tbl = self._table(owner_id, space)
        if tbl is None:
            return None
        dims = SPACES[space][1]
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape != (dims,) or not np.all(np.isfinite(v)):
            raise InvalidInput(f"must be a finite {dims}-d vector", field="vector")
        q = (
            tbl.search(v, vector_column_name="vector")
            .distance_type("cosine")
            .limit(int(k))
            .select([*COLUMNS, "_distance"])
        )
        # ANN parameters always (an exact search ignores them): a warm reader then uses them as soon as
        # another process (the scheduled optimize) has built the index, with no index state cached here
        q = q.nprobes(self.settings.ann_nprobes)
        if self.settings.ann_index == "IVF_PQ":
            q = q.refine_factor(self.refine_factor(k))
        else:
            q = q.ef(self.settings.ann_ef)
        if item_id is not None:
            q = q.where(f"item_id = '{self._item(item_id)}'", prefilter=True)
        return q

    def refine_factor(self, k: int) -> int:
        """LanceDB's refine_factor for a k-row IVF_PQ query: ann_refine_rows candidates re-ranked."""
        return max(1, -(-self.settings.ann_refine_rows // max(1, int(k))))

    def vector_search(
        self, owner_id: str, space: str, vector: np.ndarray, *, k: int, item_id: str | None = None
    ) -> list[Hit]:
        q = self.vector_query(owner_id, space, vector, k=k, item_id=item_id)
        return [] if q is None else self._hits(q.to_arrow(), "_distance")

    def text_search(self, owner_id: str, text: str, *, k: int, item_id: str | None = None) -> list[Hit]:
        tbl = self._table(owner_id, TEXT)
        if tbl is None or not text.strip():
            return []
        if "FTS" not in self._indexed(owner_id, TEXT):  # another writer may have made it since
            self._indexed(owner_id, TEXT).update(self._index_kinds(tbl))
            if "FTS" not in self._indexed(owner_id, TEXT):
                return []
        q = tbl.search(text, query_type="fts", fts_columns="text").limit(int(k)).select([*COLUMNS, "_score"])
        if item_id is not None:
            q = q.where(f"item_id = '{self._item(item_id)}'", prefilter=True)
        return self._hits(q.to_arrow(), "_score")

    def person_vector(self, owner_id: str, person_id: str) -> np.ndarray | None:
        if not isinstance(person_id, str) or not ID_RE.fullmatch(person_id):
            raise InvalidInput("must match [A-Za-z0-9_-]{1,64}", field="person")
        tbl = self._table(owner_id, PERSONS)
        if tbl is None:
            return None
        got = (
            tbl.search()
            .where(f"item_id = '{person_item_id(person_id)}'")
            .limit(1)
            .select(["vector"])
            .to_arrow()
        )
        if got.num_rows == 0:
            return None
        return np.asarray(got.column("vector")[0].values.to_numpy(zero_copy_only=False), dtype=np.float32)

    @staticmethod
    def _item(item_id: str) -> str:
        if not is_item_id(item_id):
            raise InvalidInput("must match [A-Za-z0-9_-]{1,64}", field="item_id")
        return item_id

    # ---- upkeep -------------------------------------------------------------------------------
    def optimize(self, owner_id: str) -> dict:
        """Compaction + index upkeep for each of the owner's tables; builds what is missing."""
        report: dict[str, Any] = {}
        older = timedelta(seconds=self.settings.cleanup_older_than_s)
        for space in SPACES:
            tbl = self._table(owner_id, space)
            if tbl is None:
                continue
            kinds = self._indexed(owner_id, space)
            kinds |= self._index_kinds(tbl)  # fresh: another process may have built one
            built = []
            tbl.optimize(cleanup_older_than=older)
            n = int(tbl.count_rows())
            if space == TEXT and n and "FTS" not in kinds:
                self._create_fts(owner_id, tbl)
                built.append("FTS")
            if space != PERSONS and n >= self.settings.ann_min_rows and "VECTOR" not in kinds:
                self.build_vector_index(owner_id, space)
                built.append(self.settings.ann_index)
            report[space] = {"rows": n, "built": built, "version": int(tbl.version)}
        return report

    def build_vector_index(self, owner_id: str, space: str) -> None:
        """The ANN index (settings.ann_index, cosine) + a BTREE on item_id. optimize() calls it past
        ann_min_rows; the bench calls it directly."""
        tbl = self._table(owner_id, space)
        if tbl is None:
            return
        if self.settings.ann_index == "IVF_PQ":
            # 4-bit codes (16 centroids per sub-vector), dims / 8 sub-vectors: 32 bytes a 512-d vector, as
            # LanceDB's default (8-bit, dims / 16) has. The default's build is mostly training 256
            # centroids for each sub-vector on a 65k-vector sample, a fixed cost whatever the rows (25 s
            # of a 27 s build at 30k rows here; 60-100 s at 100k on this shared 2-vCPU machine);
            # 16 centroids train in ~2 s. Recall comes from the refine step, which re-ranks
            # the ann_refine_rows nearest by their codes on the full vectors (bench_search.py: recall@10
            # vs exact).
            dims = SPACES[space][1]
            config: Any = IvfPq(distance_type="cosine", num_bits=4, num_sub_vectors=dims // 8)
        else:
            config = HnswSq(distance_type="cosine")
        tbl.create_index("vector", config=config, replace=True)
        tbl.create_index("item_id", config=BTree(), replace=True)
        self._indexed(owner_id, space).update(self._index_kinds(tbl))
