"""A search query, validated, run over one owner's index, fused and merged into moments.

    searcher = Searcher(engine, embed_text=minilm.embed, clip_text=clip_text_tower)   # once per process
    answer = searcher.search({"owner_id": "o1", "text": "when does the ferry leave", "k": 10})

Ranked lists (each at most settings.candidates rows):

    bm25       BM25 over the text table (transcript windows, item title/description)    modes text, hybrid
    text_vec   MiniLM(query) against the text table                                      modes vector, hybrid
    clip_vec   CLIP text tower(query) against the visual table (frames, images, videos)  modes vector, hybrid
    person     the person's query vector against the visual table                        when `person` is set

fused by reciprocal rank (score = sum over lists of w / (rrf_k + rank); w = 1, except a BM25 hit's in
hybrid: (share of the query's terms it contains) ** bm25_coord_power), then hits of one item that
overlap or lie within merge_gap_s merge into one moment (span = union, at most max_moment_s; score =
the best fused score in it; channels = union). Item-level rows (title/description, a video's pooled
vector) have no span of their own: they join the item's best moment, or stand as the item's moment.

Answer: {"hits": [{"owner_id", "item_id", "score", "start_s", "end_s", "channels", "text"}], "took_ms",
"spec_version", "skipped": [...]} (URLs are the caller's). `skipped` names the lists that could not run
and why (no CLIP text encoder configured, the owner has no such table yet, ...).

Tenant isolation: the request's owner is the only owner whose index is opened (the engine's layout),
and every hit is checked to be that owner's. Bad input raises InvalidInput naming the field, never
echoing the value; an owner with no index, or an unknown person, raises NotFound (404).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.errors import InvalidInput
from shared.pipeline.keys import ID_RE
from shared.search.engine import FRAME, ITEM, SCENE, SPACES, TEXT, VISUAL, Hit, SearchEngine
from shared.search.rows import cut_text
from shared.search.settings import DEFAULTS, SearchSettings

log = logging.getLogger(__name__)

Encoder = Callable[[list[str]], np.ndarray]
MODES = ("hybrid", "text", "vector")
REQUEST_FIELDS = ("owner_id", "text", "k", "mode", "item_id", "person")


class NotFound(InvalidInput):
    """The owner has no search index (of the version asked), or no such person."""

    status = 404
    code = "not_found"


@dataclass(frozen=True)
class SearchRequest:
    owner_id: str
    text: str = ""
    k: int = 10
    mode: str = "hybrid"
    item_id: str | None = None
    person: str | None = None


def _id(value: Any, name: str, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise InvalidInput("must match [A-Za-z0-9_-]{1,64}", field=name)
    return value


def parse_request(
    raw: Mapping[str, Any] | SearchRequest, settings: SearchSettings = DEFAULTS
) -> SearchRequest:
    """A request from a dict (an API body, the CLI's flags) or a SearchRequest, checked field by field.
    Messages name the field and the rule, never the value."""
    if isinstance(raw, SearchRequest):
        raw = {f: getattr(raw, f) for f in REQUEST_FIELDS}
    if not isinstance(raw, Mapping):
        raise InvalidInput("must be an object", field="request")
    unknown = set(raw) - set(REQUEST_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown fields (allowed: {', '.join(REQUEST_FIELDS)})", field="request")
    owner_id = _id(raw.get("owner_id"), "owner_id", optional=False)
    item_id = _id(raw.get("item_id"), "item_id", optional=True)
    person = _id(raw.get("person"), "person", optional=True)
    text = raw.get("text", "")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise InvalidInput("must be a string", field="text")
    if len(text) > settings.max_query_chars:
        raise InvalidInput(f"is longer than {settings.max_query_chars} characters", field="text")
    if any(ord(c) < 0x20 and c not in "\t\n\r" for c in text):
        raise InvalidInput("contains control characters", field="text")
    text = " ".join(text.split())
    if not text and person is None:
        raise InvalidInput("is empty (give a text, or a person)", field="text")
    k = raw.get("k", settings.default_k)
    if k is None:
        k = settings.default_k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= settings.max_k:
        raise InvalidInput(f"must be an integer within 1..{settings.max_k}", field="k")
    mode = raw.get("mode") or "hybrid"
    if mode not in MODES:
        raise InvalidInput(f"must be one of {', '.join(MODES)}", field="mode")
    return SearchRequest(owner_id, text, k, mode, item_id, person)  # type: ignore[arg-type]


# ---- fusion and merging (pure) ----------------------------------------------------------------
@dataclass
class Fused:
    hit: Hit
    score: float
    lists: set[str] = field(default_factory=set)


def rrf(
    lists: Mapping[str, Sequence[Hit]],
    rrf_k: int = 60,
    weight: Callable[[str, Hit], float] | None = None,
) -> list[Fused]:
    """Reciprocal rank fusion: each row scores sum over the lists holding it of w / (rrf_k + rank),
    rank from 1, w = weight(list, hit) (default 1). A row is identified by its id (one id can appear in
    several lists: BM25 and MiniLM both rank transcript windows). Best first; ties broken by id."""
    out: dict[str, Fused] = {}
    for name, hits in lists.items():
        seen: set[str] = set()
        for rank, hit in enumerate(hits, start=1):
            if hit.id in seen:
                continue
            seen.add(hit.id)
            f = out.get(hit.id)
            if f is None:
                f = out[hit.id] = Fused(hit, 0.0)
            f.score += (1.0 if weight is None else weight(name, hit)) / (rrf_k + rank)
            f.lists.add(name)
    return sorted(out.values(), key=lambda f: (-f.score, f.hit.id))


_STOP = (
    "a an and are as at be but by can could do does did for from has have how i if in into is it its "
    "me my of on or our should so that the their them then there these they this to too was we were "
    "what when where which who why will with would you your"
)
STOP_WORDS = frozenset(_STOP.split())
TERM_RE = re.compile(r"\w+(?:[-.]\w+)*")  # "88-4127", "4.2.17" stay one term
STEM_CHARS = 5  # a crude stem: the first 5 characters ("leaves", "leave" -> "leave")


def terms(text: str) -> set[str]:
    """A text's content terms: lower case, stop words out, cut to STEM_CHARS."""
    return {w[:STEM_CHARS] for w in TERM_RE.findall(text.lower()) if w not in STOP_WORDS}


def coverage(query_terms: set[str], text: str) -> float:
    """The share of the query's terms the text contains (0..1)."""
    if not query_terms:
        return 0.0
    return len(query_terms & terms(text)) / len(query_terms)


@dataclass
class Moment:
    owner_id: str
    item_id: str
    start_s: float
    end_s: float
    score: float
    channels: set[str] = field(default_factory=set)
    lists: set[str] = field(default_factory=set)
    text: str = ""
    text_score: float = -1.0  # the score of the row whose text is the snippet
    scene: str = ""  # the id of its best scene row: its keyframe is the moment's thumbnail (service.py)
    scene_score: float = -1.0
    at_s: float | None = None  # where playback starts: the best frame inside a scene, else start_s
    at_score: float = -1.0

    def absorb(self, f: Fused, *, span: bool) -> None:
        if span:
            self.start_s, self.end_s = min(self.start_s, f.hit.start_s), max(self.end_s, f.hit.end_s)
        self.score = max(self.score, f.score)
        self.channels.add(f.hit.channel)
        self.lists |= f.lists
        if f.hit.text and f.score > self.text_score:
            self.text, self.text_score = f.hit.text, f.score
        if f.hit.kind == SCENE and f.score > self.scene_score:
            self.scene, self.scene_score = f.hit.id, f.score
        if self.scene and f.hit.kind == FRAME and f.score > self.at_score:
            self.at_s, self.at_score = f.hit.start_s, f.score  # a frame inside the scene: play from it

    def answer(self, snippet_chars: int) -> dict[str, Any]:
        return {
            "owner_id": self.owner_id,
            "item_id": self.item_id,
            "score": round(self.score, 6),
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "at_s": round(self.start_s if self.at_s is None else self.at_s, 3),
            "channels": sorted(self.channels),
            "text": cut_text(self.text, snippet_chars),
            **({"scene": self.scene} if self.scene else {}),
        }


def _moment(f: Fused) -> Moment:
    m = Moment(f.hit.owner_id, f.hit.item_id, f.hit.start_s, f.hit.end_s, f.score)
    m.absorb(f, span=True)
    return m


def merge_moments(fused: Sequence[Fused], settings: SearchSettings = DEFAULTS) -> list[Moment]:
    """Hits of one item become moments, best first.

    A scene row (a video's shot) is a moment of its own whose span is the scene's: the other span hits
    that overlap it (frames, transcript windows) join it without widening it (the best-scoring such
    scene, when several), and the best frame among them is where playback starts (`at_s`). The
    remaining span hits merge while their spans overlap or lie within merge_gap_s and the union stays
    within max_moment_s. Item-level rows join their item's best moment (or stand alone with their own
    span)."""
    by_item: dict[str, list[Fused]] = {}
    for f in fused:
        by_item.setdefault(f.hit.item_id, []).append(f)
    moments: list[Moment] = []
    for group in by_item.values():
        scenes = sorted((_moment(f) for f in group if f.hit.kind == SCENE), key=lambda m: m.start_s)
        spans = sorted(
            (f for f in group if f.hit.kind not in (ITEM, SCENE)), key=lambda f: (f.hit.start_s, f.hit.end_s)
        )
        mine: list[Moment] = []
        for f in spans:
            near = [m for m in scenes if f.hit.start_s < m.end_s and f.hit.end_s > m.start_s]
            if near:
                home = max(near, key=lambda m: (m.score, -m.start_s))
                home.absorb(f, span=False)
                continue
            cur = mine[-1] if mine else None
            if (
                cur is not None
                and f.hit.start_s <= cur.end_s + settings.merge_gap_s
                and max(cur.end_s, f.hit.end_s) - cur.start_s <= settings.max_moment_s
            ):
                cur.absorb(f, span=True)
            else:
                mine.append(_moment(f))
        mine += scenes
        for f in (f for f in group if f.hit.kind == ITEM):
            if mine:
                max(mine, key=lambda m: m.score).absorb(f, span=False)
            else:
                mine.append(_moment(f))
        moments += mine
    moments.sort(key=lambda m: (-m.score, m.item_id, m.start_s))
    return moments


# ---- the searcher -------------------------------------------------------------------------------
def _encode(encoder: Encoder, text: str, dims: int, what: str) -> np.ndarray:
    v = np.asarray(encoder([text]), dtype=np.float32)
    if v.shape != (1, dims) or not np.all(np.isfinite(v)):
        raise InvalidInput(f"the {what} encoder returned a wrong shape (want [1, {dims}])", field=what)
    return v[0]


_ENCODER_NAMES = {"text_vec": "MiniLM", "clip_vec": "CLIP"}
LIST_THREADS = 8  # the pool's threads: a request runs at most 4 lists; jobs never wait on one another
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """One pool per process, made on the first query that runs lists side by side."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=LIST_THREADS, thread_name_prefix="search-list")
        return _POOL


def _call(job: Callable[[], Any]) -> Any:
    return job()


class Searcher:
    """Runs requests over one engine (one spec version). `embed_text`: MiniLM (texts -> [n, 384]);
    `clip_text`: the CLIP text tower (texts -> [n, 512]), optional: without it the clip_vec list is
    skipped (and says so)."""

    def __init__(
        self,
        engine: SearchEngine,
        *,
        embed_text: Encoder | None,
        clip_text: Encoder | None = None,
        settings: SearchSettings = DEFAULTS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.engine = engine
        self.embed_text = embed_text
        self.clip_text = clip_text
        self.settings = settings
        self.clock = clock

    def _plan(self, req: SearchRequest) -> list[tuple[str, str, Callable[[], Any] | None]]:
        """The request's ranked lists in fusion order: (name, table, job); job None: no encoder. A
        job embeds the query (vector lists) and runs the engine's query; the person's returns None for
        an unknown person."""
        s, owner, item = self.settings, req.owner_id, req.item_id
        n = max(s.candidates, req.k)
        engine = self.engine
        plan: list[tuple[str, str, Callable[[], Any] | None]] = []

        def vector_list(encoder: Encoder, space: str, what: str, floor: float) -> Callable[[], list[Hit]]:
            def job() -> list[Hit]:
                v = _encode(encoder, req.text, SPACES[space][1], what)
                hits = engine.vector_search(owner, space, v, k=n, item_id=item)
                return [h for h in hits if h.score >= floor]

            return job

        if req.person is not None:
            person = req.person

            def person_job() -> list[Hit] | None:
                vector = engine.person_vector(owner, person)
                if vector is None:
                    return None
                return engine.vector_search(owner, VISUAL, vector, k=n, item_id=item)

            plan.append(("person", VISUAL, person_job))
        if req.text:
            if req.mode in ("text", "hybrid"):
                plan.append(("bm25", TEXT, lambda: engine.text_search(owner, req.text, k=n, item_id=item)))
            if req.mode in ("vector", "hybrid"):
                plan.append(
                    (
                        "text_vec",
                        TEXT,
                        None
                        if self.embed_text is None
                        else vector_list(self.embed_text, TEXT, "embed_text", s.min_text_similarity),
                    )
                )
                plan.append(
                    (
                        "clip_vec",
                        VISUAL,
                        None
                        if self.clip_text is None
                        else vector_list(self.clip_text, VISUAL, "clip_text", s.min_clip_similarity),
                    )
                )
        return plan

    def search(self, request: Mapping[str, Any] | SearchRequest) -> dict[str, Any]:
        start = self.clock()
        s = self.settings
        req = parse_request(request, s)
        plan = self._plan(req)
        # every list's job (its query embedding and its engine call) starts now, beside the owner's
        # row counts: they are independent (ONNX Runtime and LanceDB release the GIL). A job of a list
        # that then turns out to have no rows is dropped unread, errors included, so the answer, its
        # `skipped` and its errors are the ones running the lists one after another gives.
        jobs = [job for _, _, job in plan if job is not None]
        if s.parallel_lists and len(jobs) > 1:
            pool = _pool()
            running = {id(job): pool.submit(job) for job in jobs}

            def result(job: Callable[[], Any]) -> Any:
                return running[id(job)].result()
        else:
            result = _call
        counts = self.engine.counts(req.owner_id)
        if not counts:
            raise NotFound("has no search index", field="owner_id")
        lists: dict[str, list[Hit]] = {}
        skipped: list[str] = []
        for name, space, job in plan:
            if job is None:
                skipped.append(f"{name}: no {_ENCODER_NAMES[name]} text encoder configured")
                continue
            hits = None
            if name == "person":  # an unknown person is a 404 whatever the owner's tables hold
                hits = result(job)
                if hits is None:
                    raise NotFound("has no query vector (unknown person, or no ready photo)", field="person")
            if not counts.get(space):
                skipped.append(f"{name}: the owner has no {space} rows")
                continue
            lists[name] = result(job) if hits is None else hits
        for name, hits in lists.items():  # defence in depth: the layout already guarantees it
            foreign = [h for h in hits if h.owner_id != req.owner_id]
            if foreign:
                log.error(
                    "search: %d rows of another owner in %s's %s list", len(foreign), req.owner_id, name
                )
                lists[name] = [h for h in hits if h.owner_id == req.owner_id]
        weight = None
        if "bm25" in lists and len(lists) > 1:
            # BM25 evidence counts by the share of the query's terms a hit contains (Lucene's classic
            # "coord" factor): a paraphrase's BM25 hits match one stray word and weigh little, an exact
            # name or code matches whole and weighs fully (bench_search.py measured this against plain
            # RRF: paraphrase recall@1 0.53 -> 0.81, exact terms unchanged at 1.0)
            q_terms, power = terms(req.text), s.bm25_coord_power

            def weight(name: str, hit: Hit) -> float:
                return coverage(q_terms, hit.text) ** power if name == "bm25" else 1.0

        moments = merge_moments(rrf(lists, s.rrf_k, weight), s)[: req.k]
        return {
            "hits": [m.answer(s.snippet_chars) for m in moments],
            "took_ms": round((self.clock() - start) * 1000.0, 3),
            "spec_version": self.engine.spec_version,
            "skipped": skipped,
        }
