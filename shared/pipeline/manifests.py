"""Manifests (seed 004, section 6.3): one parquet per (spec version, owner), one row per
(item, channel) of that spec version, rebuilt from the ledger after an item completes.

A single S3 PutObject is atomic (a reader sees the old object or the new one, never half of one).
Rebuilds of one owner can race (two items completing at once); the later writer always reads the
ledger after its own item's final write, and `rebuild` runs again from the sweeper for any owner
whose `manifest_dirty` generation is ahead of what was written, so the last manifest is complete.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from shared import spec
from shared.models import registry

SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),  # seed 004's canonical id: owner_id/item_id here
        ("owner_id", pa.string()),
        ("item_id", pa.string()),
        ("source_hash", pa.string()),
        ("captured_at", pa.string()),
        ("modality", pa.string()),
        ("channel", pa.string()),
        ("embedding_key", pa.string()),
        ("embedding_dim", pa.int32()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("preprocess_version", pa.string()),
        ("status", pa.string()),
        ("processed_at", pa.timestamp("ms", tz="UTC")),
        ("sha256", pa.string()),
        ("spec_version", pa.string()),
    ]
)


def _revision(channel: str) -> str:
    model = spec.CHANNELS[channel].model
    return registry.get(model).revision if model else "derived"


def manifest_rows(rows: Iterable[Mapping[str, Any]], spec_version: str | None = None) -> list[dict]:
    """Manifest rows from an owner's ledger rows: channel rows of this spec version (default: the
    deployed one), with their item. A removed item's rows are left out (its artifacts stay in S3, but
    readers no longer find it)."""
    spec_version = spec_version or spec.SPEC_VERSION
    items: dict[str, Mapping[str, Any]] = {}
    channels: list[Mapping[str, Any]] = []
    for r in rows:
        if r.get("sk") == "ITEM":
            items[r["item_id"]] = r
        elif r.get("spec_version") == spec_version and r.get("channel") in spec.CHANNELS:
            channels.append(r)
    out = []
    import datetime as dt

    for r in sorted(channels, key=lambda r: (r["item_id"], r["channel"])):
        item = items.get(r["item_id"], {})
        if item.get("status") == "REMOVED":
            continue
        ch = spec.CHANNELS[r["channel"]]
        processed = r.get("updated_at")
        ts = dt.datetime.fromisoformat(processed.replace("Z", "+00:00")) if processed else None
        out.append(
            {
                "video_id": f"{r['owner_id']}/{r['item_id']}",
                "owner_id": r["owner_id"],
                "item_id": r["item_id"],
                "source_hash": r.get("input_hash", ""),
                "captured_at": item.get("media_mtime") or item.get("meta_mtime") or "",
                "modality": ch.modality,
                "channel": ch.name,
                "embedding_key": r.get("artifact_key", ""),
                "embedding_dim": int(r["dims"]) if r.get("dims") is not None else None,
                "model_name": r.get("model") or (ch.model or "derived"),
                "model_version": _revision(ch.name),
                "preprocess_version": ch.fingerprint,
                "status": r.get("status", ""),
                "processed_at": ts,
                "sha256": r.get("sha256", ""),
                "spec_version": spec_version,
            }
        )
    return out


def to_parquet(rows: list[dict]) -> bytes:
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_parquet(data: bytes) -> list[dict]:
    return pq.read_table(io.BytesIO(data)).to_pylist()
