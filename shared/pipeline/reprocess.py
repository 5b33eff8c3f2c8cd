"""Reprocessing (seed 002, with this project's serverless shape): bring items up to the deployed spec.

A request `{"scope": "item" | "owner" | "all", "owner_id"?, "item_id"?, "since"?, "force"?, "dry_run"?}`
is planned page by page from the ledger: owner-index for an owner, owners-index then owner-index for
`all` (never a scan, never every row in memory). Each item gets seed 004's delta rule plus two
reprocess rules: what failed earlier runs again, and `force` re-runs everything (once per run: the
run's id is recorded on what it forced). Results of an older spec version whose channel recipe did
not change are carried (copied beside the new version), not recomputed.

- A dry run plans every page within the call and changes nothing: items and channels that would
  run, why, and the GPU seconds and cost they would take (each channel's own last measured seconds
  on that item, else the mean measured for that channel in the same pass).
- A real run records a run row (ledger.Runs), plans pages itself for REPROCESS_SYNC_S, then chains the
  remaining pages through the reprocess queue; every item that needs work becomes one queue message,
  handled on its own (`run_item`), so one item's failure never stops the run. Items with a dispatch
  in flight are skipped and counted; one whose dispatch is past its deadline (no job of it can still
  run on RunPod) is freed by its item message and dispatched again. Each item counts once in its run
  (`Runs.mark_item` / `count_item`); the run finishes when planning is done and every item is counted.
- The same request again while its run is open returns that run (resuming its planning if it
  stalled), so a double submit or a restart after a crash makes no second GPU job.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from shared import spec
from shared.errors import EmbeddingError, InvalidInput
from shared.pipeline import keys, plan
from shared.pipeline.ledger import (
    ITEM_SK,
    MAX_ITEM_ROWS,
    OSK_SEGMENTS,
    OWNER_KEY,
    PERSON,
    PK,
    QUARANTINED,
    REMOVED,
    SK,
    Runs,
)
from shared.timestamps import iso_epoch, now_iso

log = logging.getLogger(__name__)

SCOPES = {"item": "item", "video": "item", "owner": "owner", "all": "all"}  # "video": seed 002's name
PLAN_STALL_S = 120.0  # an open run whose planning has not moved for this long is resumed by a resubmit
MAX_SINCE_CHARS = 40


class NotFound(InvalidInput):
    code = "not_found"
    status = 404


@dataclass(frozen=True)
class Request:
    scope: str
    owner_id: str | None = None
    item_id: str | None = None
    since: str | None = None  # ISO-8601 UTC, normalised
    force: bool = False
    dry_run: bool = False

    def key(self) -> str:
        """What makes two requests the same run (the spec version included)."""
        blob = json.dumps(
            [self.scope, self.owner_id, self.item_id, self.since, self.force, spec.SPEC_VERSION]
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


def parse_request(body: Any) -> Request:
    """Seed 002's request, validated field by field; InvalidInput names the field and never repeats
    what the caller sent."""
    if not isinstance(body, dict):
        raise InvalidInput("the request must be a JSON object", field="body")
    known = {"scope", "owner_id", "item_id", "video_id", "since", "force", "dry_run"}
    extra = sorted(k for k in body if k not in known)
    if extra:
        raise InvalidInput(f"unknown field; allowed: {', '.join(sorted(known))}", field="body")
    raw_scope = body.get("scope")
    if not isinstance(raw_scope, str) or raw_scope not in SCOPES:
        raise InvalidInput("must be one of item, owner, all (video: the same as item)", field="scope")
    scope = SCOPES[raw_scope]
    item_raw = body.get("item_id", body.get("video_id"))
    owner = _id(body.get("owner_id"), "owner_id") if body.get("owner_id") is not None else None
    item = _id(item_raw, "item_id") if item_raw is not None else None
    if scope in ("item", "owner") and owner is None:
        raise InvalidInput(f"is required for scope {scope}", field="owner_id")
    if scope == "item" and item is None:
        raise InvalidInput("is required for scope item", field="item_id")
    if scope != "item" and item is not None:
        raise InvalidInput("is only allowed with scope item", field="item_id")
    if scope == "all" and owner is not None:
        raise InvalidInput("is not allowed with scope all (use scope owner)", field="owner_id")
    for flag in ("force", "dry_run"):
        if flag in body and not isinstance(body[flag], bool):
            raise InvalidInput("must be true or false", field=flag)
    return Request(
        scope,
        owner,
        item,
        _since(body.get("since")),
        bool(body.get("force", False)),
        bool(body.get("dry_run", False)),
    )


def _id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not keys.ID_RE.fullmatch(value):
        raise InvalidInput("must match [A-Za-z0-9_-]{1,64}", field=what)
    return value


def _since(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_SINCE_CHARS:
        raise InvalidInput("must be an ISO-8601 time, e.g. 2026-01-01T00:00:00Z", field="since")
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)
        t = t.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise InvalidInput("must be an ISO-8601 time, e.g. 2026-01-01T00:00:00Z", field="since") from None
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


# ---------------------------------------------------------------------- planning


@dataclass
class PagePlan:
    """What one page of the ledger needs. `work`: (owner, item) of every item to send."""

    items: int = 0
    planned: int = 0
    skipped_in_flight: int = 0
    skipped_current: int = 0
    channels: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    gpu_seconds: float = 0.0
    gpu_by_channel: dict[str, float] = field(default_factory=dict)  # measured part, per channel
    work: list[tuple[str, str]] = field(default_factory=list)
    unmeasured: dict[str, int] = field(default_factory=dict)  # GPU channel -> runs with no measurement

    def add(self, other: PagePlan) -> None:
        for k in ("items", "planned", "skipped_in_flight", "skipped_current"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for mine, theirs in ((self.channels, other.channels), (self.reasons, other.reasons)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        for k, v in other.unmeasured.items():
            self.unmeasured[k] = self.unmeasured.get(k, 0) + v
        self.gpu_seconds += other.gpu_seconds
        for k, v in other.gpu_by_channel.items():
            self.gpu_by_channel[k] = self.gpu_by_channel.get(k, 0.0) + v
        self.work.extend(other.work)

    def counts(self) -> dict[str, int]:
        return {
            "items": self.items,
            "planned": self.planned,
            "skipped": self.skipped_in_flight + self.skipped_current,
            "skipped_in_flight": self.skipped_in_flight,
            "skipped_current": self.skipped_current,
        }


# what planning reads of the ledger's rows (the page reader fetches only these): an item row's state
# and inputs, a channel row's decision fields and measured seconds
PLAN_FIELDS: tuple[str, ...] = (
    "owner_id",
    "item_id",
    "channel",
    "kind",
    "updated_at",
    "run_counted",
    "dispatch_state",
    "claimed_at",
    "submitted_at",
    "gpu_seconds",
    *plan.ROW_FIELDS,
    *plan.INPUT_FIELDS,
)


class Reprocessor:
    fields: tuple[str, ...] | None = PLAN_FIELDS  # None: whole rows

    def __init__(self, pipeline: Any, sqs: Any = None) -> None:
        self.pipeline = pipeline
        self.ledger = pipeline.ledger
        self.runs = Runs(pipeline.ledger)
        self.settings = pipeline.settings
        self.sqs = sqs
        self.clock = pipeline.clock
        self.measured: dict[str, list[float]] = {}  # GPU channel -> seconds measured in this pass

    # ------------------------------------------------------------------ reading the scope in pages

    def pages(self, req: Request, cursor: str = "") -> Iterator[tuple[list[tuple[dict, dict]], str | None]]:
        """([(item row, {channel: row})], next cursor or None) page by page from `cursor`: one item, one
        owner's owner-index pages, or (scope all) every owner's in owner-id order."""
        if req.scope == "item":
            item, rows = self.ledger.rows(req.owner_id, req.item_id)
            yield ([(item, rows)] if item else []), None
            return

        def next_owner(after: str | None) -> str | None:
            if req.scope == "owner":
                return req.owner_id if after is None else None
            return self.ledger.next_owner(after)  # owners-index from where we are, one owner a read

        state = json.loads(cursor) if cursor else {"owner": next_owner(None), "start": None}
        if not state.get("owner"):
            yield [], None
            return
        while state and state.get("owner"):
            owner = state["owner"]
            groups, start = self._owner_page(owner, state.get("start"))
            if start is not None:
                state = {"owner": owner, "start": start}
            else:
                following = next_owner(owner)
                state = {"owner": following, "start": None} if following else None
            yield groups, (json.dumps(state, sort_keys=True) if state else None)

    def _owner_page(
        self, owner: str, start: dict | None, segment: tuple[str, str] | None = None
    ) -> tuple[list[tuple[dict, dict]], dict | None]:
        """One owner-index page, whole items only: rows come item by item (osk "{item_id}#{sk}"); an item
        cut by the page end is read again at the start of the next page. `segment`: one of
        OSK_SEGMENTS (the owner's items whose ids start there)."""
        # a page holds at least one whole item: one cut by the page end is read again on the next,
        # which a page of only that item could never finish
        limit = max(MAX_ITEM_ROWS, self.settings.reprocess_page_rows)
        rows, more = self.ledger.owner_page(owner, start, limit, self.fields, segment)
        by_item: dict[str, list[dict]] = {}
        for r in rows:
            by_item.setdefault(r["item_id"], []).append(r)
        order = list(by_item)
        if more and len(order) > 1:
            last = order.pop()  # may continue on the next page: read it whole there
            rows_before = [r for r in rows if r["item_id"] != last]
            tail = rows_before[-1]
            nxt: dict | None = {k: tail[k] for k in (PK, SK, OWNER_KEY, "osk")}
        else:
            nxt = {k: rows[-1][k] for k in (PK, SK, OWNER_KEY, "osk")} if more and rows else None
        groups = []
        for item_id in order:
            item = next((r for r in by_item[item_id] if r[SK] == ITEM_SK), None)
            if item is None:
                continue
            chans = {r["channel"]: r for r in by_item[item_id] if r.get("channel")}
            groups.append((item, chans))
        return groups, nxt

    def _slices(
        self, req: Request, stop: threading.Event
    ) -> Iterator[Callable[[], Iterable[list[tuple[dict, dict]]]]]:
        """The scope as slices in ledger order, each its pages when called: the item; the owner in
        OSK_SEGMENTS (whole, when read in one stream); every owner, one slice each. Once `stop` is
        set, no slice reads another page."""
        if req.scope == "item":
            yield lambda: [groups for groups, _ in self.pages(req)]
            return
        if req.scope == "owner":
            segments = OSK_SEGMENTS if self.settings.reprocess_read_streams > 1 else (None,)
            for segment in segments:
                yield lambda segment=segment: self._owner_pages(req.owner_id, segment, stop)
            return
        owner = self.ledger.next_owner(None)
        while owner:
            yield lambda owner=owner: self._owner_pages(owner, None, stop)
            owner = self.ledger.next_owner(owner)

    def _owner_pages(
        self, owner: str, segment: tuple[str, str] | None = None, stop: threading.Event | None = None
    ) -> Iterator[list[tuple[dict, dict]]]:
        """An owner's pages (of `segment`, one of OSK_SEGMENTS, when given) from the first, until the
        last or until `stop` is set."""
        start: dict | None = None
        while stop is None or not stop.is_set():
            groups, start = self._owner_page(owner, start, segment)
            yield groups
            if start is None:
                return

    def _planned(self, req: Request) -> PagePlan:
        """A dry run's plan of the whole scope: its slices read and planned REPROCESS_READ_STREAMS at a
        time, and merged page by page in ledger order, so the answer is the one reading in order gives
        (counts exactly; GPU seconds up to float rounding, as one owner's slices end their pages
        elsewhere than one read of it). At most that many slices are in flight; the first failure
        stops the others before their next read and is the dry run's error."""
        total = PagePlan()
        self.measured = {}
        stop = threading.Event()

        def plan_slice(pages: Callable[[], Iterable[list[tuple[dict, dict]]]]) -> list:
            out = []
            for groups in pages():
                seen: dict[str, list[float]] = {}
                out.append((self.plan_page(req, groups, bool(req.force), collect=False, measured=seen), seen))
            return out

        def merge(planned: list) -> None:
            for page, seen in planned:
                total.add(page)
                for ch, seconds in seen.items():
                    self.measured.setdefault(ch, []).extend(seconds)

        streams = self.settings.reprocess_read_streams
        with ThreadPoolExecutor(max_workers=streams, thread_name_prefix="dry-run") as pool:
            pending: deque = deque()
            try:
                for pages in self._slices(req, stop):
                    future = pool.submit(plan_slice, pages)
                    future.add_done_callback(lambda f: f.exception() is not None and stop.set())
                    pending.append(future)
                    if len(pending) >= streams:
                        merge(pending.popleft().result())
                while pending:
                    merge(pending.popleft().result())
            finally:
                stop.set()  # a failed read ends the others at their next page
        return total

    def plan_page(
        self,
        req: Request,
        groups: list[tuple[dict, dict]],
        force: bool | str,
        run_id: str | None = None,
        collect: bool = True,
        measured: dict[str, list[float]] | None = None,
    ) -> PagePlan:
        """Plan one page. `run_id`: the run planning it (a page planned again after a crash finds its
        items already marked by this run: they are planned again, never counted as skipped).
        `collect`: keep the (owner, item) of what needs work (a dry run keeps only counts).
        `measured`: where the page's measured GPU seconds go (default: this pass's, self.measured)."""
        p = PagePlan()
        seen: dict[str, list[float]] = {}
        for _item, rows in groups:
            for ch, r in rows.items():
                if (
                    r.get("gpu_seconds")
                    and spec.CHANNELS.get(ch)
                    and spec.CHANNELS[ch].runs_on == spec.RUNPOD
                ):
                    seen.setdefault(ch, []).append(float(r["gpu_seconds"]))
        for item, rows in groups:
            self._plan_item(req, item, rows, force, p, run_id, collect)
        target = self.measured if measured is None else measured
        for ch, seconds in seen.items():
            target.setdefault(ch, []).extend(seconds)
        return p

    def _plan_item(
        self,
        req: Request,
        item: dict,
        rows: dict,
        force: bool | str,
        p: PagePlan,
        run_id: str | None = None,
        collect: bool = True,
    ) -> None:
        if item.get("status") == REMOVED:
            return
        if req.since and str(item.get("updated_at", "")) < req.since:
            return
        p.items += 1
        if run_id and run_id in (item.get("run_id"), item.get("run_counted")):
            # this run sent it already (its page is planned again after a crash): sent again, and the
            # item handler's mark makes that a no-op; it counts as planned, once, with this page
            p.planned += 1
            if collect:
                p.work.append((item["owner_id"], item["item_id"]))
            return
        if item.get("dispatch_state") in ("CLAIMED", "SUBMITTED"):
            if not self.pipeline.policy.overdue(item, self.clock()):
                p.skipped_in_flight += 1
                return
            # past its deadline: the item's message frees it (run_item), its channels then run again
            rows = {
                c: {**r, "status": plan.PENDING} if r.get("status") == plan.DISPATCHED else r
                for c, r in rows.items()
            }
        if item.get("kind") == PERSON:
            stale = (rows.get("person_query") or {}).get("spec_version") != spec.SPEC_VERSION
            if req.force or stale or item.get("status") == QUARANTINED:
                self._count(
                    p, item, "person_query", "forced" if req.force else "fingerprint_changed", collect
                )
            else:
                p.skipped_current += 1
            return
        decisions = plan.needed(
            plan.inputs(item), rows, self.settings.channels, force=force, retry_failed=True
        )
        todo = [d for d in decisions if d.run or d.reason == "carry"]
        if not todo:
            p.skipped_current += 1
            return
        p.planned += 1
        if collect:
            p.work.append((item["owner_id"], item["item_id"]))
        for d in todo:
            p.channels[d.channel] = p.channels.get(d.channel, 0) + 1
            p.reasons[d.reason] = p.reasons.get(d.reason, 0) + 1
            if d.run and spec.CHANNELS[d.channel].runs_on == spec.RUNPOD:
                own = (rows.get(d.channel) or {}).get("gpu_seconds")
                if own:
                    p.gpu_seconds += float(own)
                    p.gpu_by_channel[d.channel] = p.gpu_by_channel.get(d.channel, 0.0) + float(own)
                else:
                    p.unmeasured[d.channel] = p.unmeasured.get(d.channel, 0) + 1

    def _count(self, p: PagePlan, item: dict, channel: str, reason: str, collect: bool = True) -> None:
        p.planned += 1
        if collect:
            p.work.append((item["owner_id"], item["item_id"]))
        p.channels[channel] = p.channels.get(channel, 0) + 1
        p.reasons[reason] = p.reasons.get(reason, 0) + 1

    def _estimate(self, p: PagePlan) -> float:
        """GPU seconds of what has no own measurement: the channel's mean measured in this pass (added to
        p.gpu_by_channel); returns that extra."""
        extra = 0.0
        for ch, n in p.unmeasured.items():
            seen = self.measured.get(ch) or []
            if seen:
                more = n * sum(seen) / len(seen)
                extra += more
                p.gpu_by_channel[ch] = p.gpu_by_channel.get(ch, 0.0) + more
        return extra

    # ------------------------------------------------------------------ the API

    def dry_run(self, req: Request) -> dict[str, Any]:
        total = self._planned(req)
        self._require_items(req, total)
        gpu = round(total.gpu_seconds + self._estimate(total), 3)
        return {
            "status": "dry_run",
            "spec_version": spec.SPEC_VERSION,
            "scope": req.scope,
            "item_count": total.planned,
            "items_in_scope": total.items,
            "channel_count": sum(total.channels.values()),
            "channels": dict(sorted(total.channels.items())),
            "reasons": dict(sorted(total.reasons.items())),
            "skipped": {"in_flight": total.skipped_in_flight, "current": total.skipped_current},
            "gpu_seconds": gpu,
            "gpu_seconds_by_channel": {k: round(v, 3) for k, v in sorted(total.gpu_by_channel.items())},
            "cost_usd": round(gpu * self.settings.gpu_price_per_s, 4),
            "gpu_price_per_s": self.settings.gpu_price_per_s,
            "message": (
                f"Would reprocess {total.planned} item(s), {sum(total.channels.values())} channel run(s), "
                f"about {gpu:.1f} GPU s (${gpu * self.settings.gpu_price_per_s:.2f}) "
                f"under spec version {spec.SPEC_VERSION}"
            ),
        }

    def _require_items(self, req: Request, total: PagePlan) -> None:
        if total.items == 0 and req.scope == "owner" and not req.since:
            raise NotFound("the owner has no items", field="owner_id")
        if total.items == 0 and req.scope == "item":
            raise NotFound("no such item", field="item_id")

    def start(self, req: Request) -> dict[str, Any]:
        """Start (or return, or resume) the run of this request; plan for REPROCESS_SYNC_S, queue the rest."""
        if req.scope == "item" and self.ledger.item(req.owner_id, req.item_id) is None:
            raise NotFound("no such item", field="item_id")
        if req.scope == "owner" and not req.since and not self._owner_has_items(req.owner_id):
            raise NotFound("the owner has no items", field="owner_id")
        if not self.settings.reprocess_queue_url or self.sqs is None:
            raise InvalidInput("this function has no reprocess queue (REPROCESS_QUEUE_URL)")
        rkey = req.key()
        run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock())) + "-" + uuid.uuid4().hex[:8]
        existing = self.runs.claim_request(rkey, run_id)  # one open run per request, atomically
        if (
            existing
            and self.runs.get(existing) is None
            and self.clock() - _run_started(existing) > PLAN_STALL_S
        ):
            # the claimer died before it recorded its run: the request is free again
            self.runs._release_request({"run_id": existing, "request_key": rkey})
            existing = self.runs.claim_request(rkey, run_id)
        if existing:
            run = self.runs.get(existing) or {"run_id": existing, "scope": req.scope}
            stalled = (
                run.get("started_at")
                and not run.get("planning_done")
                and self.clock() - (iso_epoch(run.get("updated_at")) or 0.0) > PLAN_STALL_S
            )
            if stalled:
                self.runs.touch(existing)
                self._send([{"kind": "page", "run_id": existing, "cursor": run.get("cursor", "")}])
            return self._answer(run, "resumed" if stalled else "already running")
        now = now_iso(self.clock())
        self.runs.create(
            {
                "run_id": run_id,
                "request_key": rkey,
                "spec_version": spec.SPEC_VERSION,
                **{k: v for k, v in asdict(req).items() if v is not None and k != "dry_run"},
                "status": "planning",
                "planning_done": False,
                "cursor": "",
                "channels": {},
                "reasons": {},
                "gpu_seconds_estimate": 0.0,
                "started_at": now,
                "updated_at": now,
            }
        )
        log.info("reprocess run %s: scope %s, spec version %s", run_id, req.scope, spec.SPEC_VERSION)
        run = self.plan_run(run_id, "", budget_s=self.settings.reprocess_sync_s)
        return self._answer(run or self.runs.get(run_id) or {"run_id": run_id}, "queued")

    def _owner_has_items(self, owner_id: str) -> bool:
        return any(i.get("status") != REMOVED for groups in self._owner_pages(owner_id) for i, _ in groups)

    def _answer(self, run: Mapping[str, Any], how: str) -> dict[str, Any]:
        planned = int(run.get("planned", 0))
        done = bool(run.get("planning_done"))
        version, rid = run.get("spec_version"), run.get("run_id")
        msg = (
            f"Queued embedding reprocessing for {planned} item(s) using spec version {version}"
            if done
            else f"Planning continues in the background ({planned} item(s) so far); follow run {rid}"
        )
        if how != "queued":
            msg = f"The same request is {how} as run {run.get('run_id')}: " + msg
        return {
            "status": "queued",
            "spec_version": run.get("spec_version", spec.SPEC_VERSION),
            "scope": run.get("scope"),
            "item_count": planned if done else None,
            "run_id": run.get("run_id"),
            "message": msg,
            "run": public_run(run),
        }

    def plan_run(self, run_id: str, cursor: str, budget_s: float) -> dict[str, Any] | None:
        """Plan pages of a run from `cursor`, sending their items; after `budget_s`, hand the next page to
        the queue. A page is recorded once (the run's cursor must still be the page's)."""
        run = self.runs.get(run_id)
        if run is None or run.get("planning_done") or run.get("cursor", "") != cursor:
            return run  # a redelivered or superseded page message
        req = Request(
            run["scope"], run.get("owner_id"), run.get("item_id"), run.get("since"), bool(run.get("force"))
        )
        force: bool | str = run_id if req.force else False
        started = time.monotonic()
        self.measured = {}
        for groups, nxt in self.pages(req, cursor):
            p = self.plan_page(req, groups, force, run_id=run_id)
            gpu = p.gpu_seconds + self._estimate(p)
            self._send([{"kind": "item", "run_id": run_id, "owner_id": o, "item_id": i} for o, i in p.work])
            run = self.runs.page_done(run_id, cursor, nxt, p.counts(), p.channels, p.reasons, gpu)
            if run is None:
                return self.runs.get(run_id)  # another planner recorded this page first
            if nxt is None:
                return run
            cursor = nxt
            if time.monotonic() - started > budget_s:
                self._send([{"kind": "page", "run_id": run_id, "cursor": cursor}])
                return run
        return run

    def _send(self, bodies: list[dict[str, Any]]) -> None:
        for i in range(0, len(bodies), 10):
            batch = bodies[i : i + 10]
            entries = [{"Id": str(n), "MessageBody": json.dumps(b)} for n, b in enumerate(batch)]
            resp = self.sqs.send_message_batch(QueueUrl=self.settings.reprocess_queue_url, Entries=entries)
            failed = resp.get("Failed") or []
            if failed:
                from shared.errors import StoreError

                raise StoreError(f"{len(failed)} reprocess message(s) were not queued")

    # ------------------------------------------------------------------ queue messages

    def on_message(self, body: Mapping[str, Any], receive_count: int = 1) -> str:
        kind = body.get("kind")
        run_id = body.get("run_id")
        if not isinstance(run_id, str) or len(run_id) > 64:
            raise InvalidInput("the message has no run id", field="run_id")
        if kind == "page":
            cursor = body.get("cursor") or ""
            if not isinstance(cursor, str) or len(cursor) > 4096:
                raise InvalidInput("the page cursor is not valid", field="cursor")
            self.plan_run(run_id, cursor, budget_s=self.settings.reprocess_sync_s)
            return "page"
        if kind == "item":
            owner = _id(body.get("owner_id"), "owner_id")
            item_id = body.get("item_id")
            if not keys.is_item_id(item_id):
                raise InvalidInput("must be an item id", field="item_id")
            return self.run_item(
                run_id, owner, item_id, last_try=receive_count >= self.settings.reprocess_max_receives
            )
        raise InvalidInput("unknown message kind", field="kind")

    def run_item(self, run_id: str, owner_id: str, item_id: str, *, last_try: bool = False) -> str:
        run = self.runs.get(run_id)
        if run is None:
            raise InvalidInput("no such run", field="run_id")
        mark = self.runs.mark_item(run_id, owner_id, item_id)
        if mark == "counted":
            return "duplicate"
        if mark == "other":
            self.runs.count_other(run_id, owner_id, item_id)  # another open run holds it and does the work
            return "skipped"
        try:
            if self.pipeline.free_overdue(owner_id, item_id):
                log.info(
                    "reprocess %s: %s/%s's dispatch was past its deadline: freed", run_id, owner_id, item_id
                )
            item = self.ledger.item(owner_id, item_id)
            if item is not None and item.get("status") == QUARANTINED:
                self.ledger.reopen(owner_id, item_id)  # a replay starts with fresh attempts
            if item is not None and item.get("kind") == PERSON:
                self.pipeline.persons.mark(owner_id, item_id, force=run_id if run.get("force") else None)
                return "person"  # counted when the sweeper has rebuilt it
            out = self.pipeline.advance(
                owner_id, item_id, force=run_id if run.get("force") else False, retry_failed=True
            )
        except EmbeddingError as e:
            if e.retryable and not last_try:
                raise
            log.warning("reprocess %s: %s/%s failed: %s", run_id, owner_id, item_id, e.public_message)
            self.runs.count_item(run_id, owner_id, item_id, "failed")
            return "failed"
        except Exception:
            if not last_try:
                raise
            log.exception("reprocess %s: %s/%s internal fault", run_id, owner_id, item_id)
            self.runs.count_item(run_id, owner_id, item_id, "failed")
            return "failed"
        waiting = bool(out.rows and (out.rows[0] or {}).get("dispatch_state"))  # a retry's backoff
        if out.action in ("noop", "lambda", "skipped") and not waiting:
            # finished here (or nothing left): counted now unless completion already counted it
            self.runs.count_item(run_id, owner_id, item_id, "skipped" if out.action == "skipped" else "done")
        return out.action


def public_run(run: Mapping[str, Any]) -> dict[str, Any]:
    """A run as the API shows it (no internal fields)."""
    hidden = {PK, SK, "request_key", "cursor"}
    out = {k: v for k, v in run.items() if k not in hidden}
    out.setdefault("dry_run", False)
    return out


def _run_started(run_id: str) -> float:
    try:
        return dt.datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return 0.0


__all__ = ["NotFound", "Reprocessor", "Request", "parse_request", "public_run"]
