"""The admin API: what the `reprocess` function answers on its IAM-authorised function URL.

IAM checks every call's SigV4 signature before the function runs (the local stack's function-URL
server does the same check); the callers are `se reprocess`, `se runs` and the `se admin` console,
all signing with the operator's credentials. There are no per-owner operators: whoever may invoke
the URL may act on every owner.

    POST /reprocess   {"scope", "owner_id"?, "item_id"?, "since"?, "force"?, "dry_run"?}
                      -> 200 dry run | 202 {"status": "queued", "spec_version", "scope", "item_count",
                         "run_id", "message"}  (seed 002's contract; reprocess.py)
    POST /replay      {"owner_id", "item_id"} -> 202, a run of scope item (a quarantined item starts over)
    GET  /runs        -> {"runs": [...]} newest first;  GET /runs/{run_id} -> the run
    GET  /owners      -> {"owners": [{"owner_id", "current_version", "next_version", "items", "settled"}]}
    GET  /items?owner_id=O[&status=S][&limit=N]   -> {"owner_id", "items": [...]}  (owner-index)
    GET  /quarantined?owner_id=O                  -> the same, QUARANTINED items only
    GET  /refusals[?owner_id=O][&limit=N]         -> {"refusals": [{"owner_id" (null: the key named
                      no valid owner), "seq", "at", "reason", "message", "key"}, ...]} newest first

Errors: {"error": {"code", "field"?, "message"}} with 400 / 404 / 405 / 413; messages never repeat
what the caller sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from shared import spec
from shared.errors import InvalidInput
from shared.lambda_text.proxy import MethodNotAllowed
from shared.pipeline import keys
from shared.pipeline.reprocess import NotFound, Reprocessor, Request, parse_request, public_run

MAX_BODY_BYTES = 64 * 1024
MAX_ITEMS = 1000
MAX_REFUSALS = 200  # what GET /refusals answers by default (the console's panel)
ITEM_FIELDS = (
    "item_id",
    "kind",
    "modality",
    "status",
    "attempts",
    "quarantine_reason",
    "last_error",
    "updated_at",
    "person_id",
    "gpu_seconds",
)
CHANNEL_FIELDS = ("status", "attempts", "error", "dims", "gpu_seconds", "spec_version", "updated_at")
RUN_RE = re.compile(r"^[0-9TZ]{16}-[0-9a-f]{8}$")


class Admin:
    def __init__(self, reprocessor: Reprocessor) -> None:
        self.r = reprocessor
        self.p = reprocessor.pipeline
        self.ledger = self.p.ledger

    def route(self, method: str, path: str, query: Mapping[str, str], body: Any) -> tuple[int, dict]:
        parts = [p for p in path.split("/") if p]
        if parts == ["reprocess"]:
            self._only(method, "POST")
            req = parse_request(body)
            if req.dry_run:
                return 200, self.r.dry_run(req)
            return 202, self.r.start(req)
        if parts == ["replay"]:
            self._only(method, "POST")
            if not isinstance(body, dict):
                raise InvalidInput("the request must be a JSON object", field="body")
            owner = _owner_id({"owner_id": body.get("owner_id")})
            item_id = body.get("item_id")
            if not keys.is_item_id(item_id):
                raise InvalidInput("must be an item id", field="item_id")
            return 202, self.r.start(Request("item", owner, item_id))
        if parts == ["runs"]:
            self._only(method, "GET")
            return 200, {"runs": [public_run(r) for r in self.r.runs.list(limit=_limit(query, 50))]}
        if len(parts) == 2 and parts[0] == "runs":
            self._only(method, "GET")
            if not RUN_RE.fullmatch(parts[1]):
                raise InvalidInput("is not a run id", field="run_id")
            run = self.r.runs.get(parts[1])
            if run is None:
                raise NotFound("no such run", field="run_id")
            return 200, public_run(run)
        if parts == ["owners"]:
            self._only(method, "GET")
            limit = _limit(query, MAX_ITEMS)
            owners = []
            for o in self.ledger.owner_states():
                owners.append(_owner(o))
                if len(owners) >= limit:
                    break
            return 200, {"spec_version": spec.SPEC_VERSION, "owners": owners}
        if parts == ["refusals"]:
            self._only(method, "GET")
            owner = _owner_id(query) if "owner_id" in query else None
            limit = _limit(query, MAX_REFUSALS)
            return 200, {"refusals": self.p.refusals.newest(owner, limit)}
        if parts in (["items"], ["quarantined"]):
            self._only(method, "GET")
            owner = _owner_id(query)
            status = "QUARANTINED" if parts == ["quarantined"] else query.get("status")
            if status is not None and status not in (
                "PROCESSING",
                "COMPLETE",
                "PARTIAL",
                "QUARANTINED",
                "REMOVED",
            ):
                raise InvalidInput("must be an item status", field="status")
            return 200, {"owner_id": owner, "items": self.items(owner, status, _limit(query, MAX_ITEMS))}
        raise NotFound("no such route", field="path")

    @staticmethod
    def _only(method: str, allowed: str) -> None:
        if method != allowed:
            raise MethodNotAllowed(f"use {allowed}", field="method")

    def items(self, owner_id: str, status: str | None, limit: int) -> list[dict[str, Any]]:
        """The owner's items (owner-index gives rows item by item), filtered while reading, at most
        `limit` of them."""
        out: list[dict[str, Any]] = []
        current: dict[str, Any] | None = None
        chans: dict[str, Any] = {}
        last = None

        def flush() -> None:
            if current is not None and (status is None or current.get("status") == status):
                out.append({**current, "channels": dict(chans)})

        for r in self.ledger.owner_rows(owner_id):
            if r["item_id"] != last:
                flush()
                if len(out) >= limit:
                    return out
                current, chans, last = None, {}, r["item_id"]
            if r.get("sk") == "ITEM":
                current = {k: r[k] for k in ITEM_FIELDS if r.get(k) is not None}
            elif r.get("channel"):
                chans[r["channel"]] = {k: r[k] for k in CHANNEL_FIELDS if r.get(k) is not None}
        flush()
        return out[:limit]


def _owner(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "owner_id": row.get("manifest_owner"),
        "current_version": row.get("current_version"),
        "next_version": row.get("next_version") if row.get("current_version") != spec.SPEC_VERSION else None,
        "items": row.get("items"),
        "settled": row.get("settled"),
        "switches": row.get("switches", 0),
    }


def _owner_id(query: Mapping[str, str]) -> str:
    owner = query.get("owner_id")
    if owner is None:
        raise InvalidInput("is required", field="owner_id")
    if not keys.ID_RE.fullmatch(owner):
        raise InvalidInput("must match [A-Za-z0-9_-]{1,64}", field="owner_id")
    return owner


def _limit(query: Mapping[str, str], default: int) -> int:
    raw = query.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdecimal() and len(raw) <= 4) or not 1 <= int(raw) <= MAX_ITEMS:
        raise InvalidInput(f"must be a whole number from 1 to {MAX_ITEMS}", field="limit")
    return int(raw)


__all__ = ["MAX_BODY_BYTES", "Admin"]
