"""One owner's query -> the owner's current index -> moments with links that play them (issue 21, item 2).

    service = SearchService(searchers, directory, presign)          # once per process (a Lambda's init)
    answer = service.search({"owner_id": "o1", "text": "when does the ferry leave", "k": 10})

Steps, each one call:

1. `parse_request` (shared.search.query): bad input is InvalidInput naming the field, the value never
   echoed; nothing below runs.
2. The owner's current spec version from the `Directory` (the ledger's owner row: the blue/green switch
   the manifests use), trusted by a warm container for `cache_s`. None yet: NotFound (404, owner_id).
3. That version's `Searcher` (`Searchers`: one engine and Searcher per version, the last few kept warm;
   an owner's query opens only that owner's tables).
4. The hits' items from the Directory in one read (each item's current source key, its modality, whether
   it was removed), cached like the version. A hit whose item is gone or removed is dropped: the index
   lags a removal by one settle. `media_url` is the source presigned for `url_expires_s` plus
   `#t={at_s}` (Media Fragments: the player starts at the moment: the hit's start, or inside a scene the
   best-matching frame's time); `thumbnail_url`: a moment holding
   a scene row (a video's shot: scenes, scene_text) shows that scene's keyframe JPEG (the best-scoring
   scene's, presigned like the media), an image its own URL; other moments have none. An item with no
   source (meta.json only) has `media_url: null`. `modality`: the item's (video, audio, image, text),
   so a client plays a video and shows an image. `highlights`: the spans of the snippet's words that
   match the query's terms.

Answer: the Searcher's `{"hits", "spec_version", "skipped"}`, each hit with its URLs, `took_ms` the
whole request's. Presigned URLs are credentials: this module never logs one.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from shared.search.engine import SearchEngine
from shared.search.query import (
    STEM_CHARS,
    STOP_WORDS,
    TERM_RE,
    Encoder,
    NotFound,
    Searcher,
    SearchRequest,
    parse_request,
    terms,
)
from shared.search.rows import scene_thumbnail_key
from shared.search.settings import DEFAULTS, SearchSettings

MAX_CACHED_OWNERS = 4_096
MAX_CACHED_ITEMS = 20_000
IMAGE = "image"


@dataclass(frozen=True)
class Media:
    """What a hit's link needs of its item (the ledger's item row)."""

    key: str | None  # the item's current source object (uploads/...), None for a meta.json-only item
    modality: str  # image | video | audio | text
    removed: bool = False


class Directory(Protocol):
    """The reads a query needs besides the index (shared.aws.search_directory.LedgerDirectory)."""

    def current_version(self, owner_id: str) -> str | None: ...

    def media(self, owner_id: str, item_ids: Sequence[str]) -> dict[str, Media]:
        """The items the directory knows, by id (an unknown id is absent)."""
        ...


Presign = Callable[[str, int], str]  # (key, expires_s) -> URL: shared.aws.storage.Storage.presign_get


def fragment(start_s: float) -> str:
    """`#t=` for a moment's start: seconds, at most 3 decimals, no trailing zeros ("#t=12.5")."""
    text = f"{max(0.0, float(start_s)):.3f}".rstrip("0").rstrip(".")
    return f"#t={text or '0'}"


def highlights(query: str, text: str) -> list[list[int]]:
    """[start, end) character spans of `text`'s words that match a term of `query` by the rule BM25's
    coverage weight uses (shared.search.query.terms: lower case, stop words out, the first STEM_CHARS
    characters), for a client to mark without re-implementing it."""
    wanted = terms(query)
    spans = []
    for m in TERM_RE.finditer(text):
        word = m.group().lower()
        if word not in STOP_WORDS and word[:STEM_CHARS] in wanted:
            spans.append([m.start(), m.end()])
    return spans


class _Expiring:
    """A bounded map whose entries expire after `ttl_s` (a warm container's view of the ledger)."""

    def __init__(self, ttl_s: float, limit: int, clock: Callable[[], float]) -> None:
        self.ttl_s, self.limit, self.clock = ttl_s, limit, clock
        self._data: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any) -> tuple[bool, Any]:
        got = self._data.get(key)
        if got is None or got[0] < self.clock():
            return False, None
        return True, got[1]

    def put(self, key: Any, value: Any) -> None:
        self._data[key] = (self.clock() + self.ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.limit:
            self._data.popitem(last=False)


class Searchers:
    """One Searcher per spec version over `open_engine(version)`, the `keep` most recently used kept
    (an owner reads one version; two are live around a switch)."""

    def __init__(
        self,
        open_engine: Callable[[str], SearchEngine],
        *,
        embed_text: Encoder | None,
        clip_text: Encoder | None,
        settings: SearchSettings = DEFAULTS,
        keep: int = 4,
    ) -> None:
        self.open_engine = open_engine
        self.embed_text, self.clip_text = embed_text, clip_text
        self.settings = settings
        self.keep = keep
        self._by_version: OrderedDict[str, Searcher] = OrderedDict()

    def __call__(self, version: str) -> Searcher:
        got = self._by_version.get(version)
        if got is None:
            got = Searcher(
                self.open_engine(version),
                embed_text=self.embed_text,
                clip_text=self.clip_text,
                settings=self.settings,
            )
            self._by_version[version] = got
            while len(self._by_version) > self.keep:
                self._by_version.popitem(last=False)
        self._by_version.move_to_end(version)
        return got


class SearchService:
    """The search API's one call, over injected parts (see the module docstring)."""

    def __init__(
        self,
        searchers: Callable[[str], Searcher],
        directory: Directory,
        presign: Presign,
        *,
        url_expires_s: int = 3600,
        cache_s: float = 30.0,
        settings: SearchSettings = DEFAULTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.searchers = searchers
        self.directory = directory
        self.presign = presign
        self.url_expires_s = int(url_expires_s)
        self.settings = settings
        self.clock = clock
        self._versions = _Expiring(cache_s, MAX_CACHED_OWNERS, clock)
        self._media = _Expiring(cache_s, MAX_CACHED_ITEMS, clock)

    def version(self, owner_id: str) -> str:
        found, version = self._versions.get(owner_id)
        if not found:
            version = self.directory.current_version(owner_id)
            self._versions.put(owner_id, version)
        if version is None:
            raise NotFound("has no search index", field="owner_id")
        return version

    def search(self, raw: Mapping[str, Any] | SearchRequest) -> dict[str, Any]:
        start = self.clock()
        req = parse_request(raw, self.settings)
        answer = self.searchers(self.version(req.owner_id)).search(req)
        answer["hits"] = self._linked(req.owner_id, answer["hits"], req.text, answer["spec_version"])
        answer["took_ms"] = round((self.clock() - start) * 1000.0, 3)
        return answer

    def _items(self, owner_id: str, item_ids: Sequence[str]) -> dict[str, Media]:
        out: dict[str, Media] = {}
        missing = []
        for item_id in dict.fromkeys(item_ids):
            found, media = self._media.get((owner_id, item_id))
            if found:
                if media is not None:
                    out[item_id] = media
            else:
                missing.append(item_id)
        if missing:
            got = self.directory.media(owner_id, missing)
            for item_id in missing:
                media = got.get(item_id)
                self._media.put((owner_id, item_id), media)
                if media is not None:
                    out[item_id] = media
        return out

    def _linked(
        self, owner_id: str, hits: list[dict[str, Any]], query: str, version: str
    ) -> list[dict[str, Any]]:
        items = self._items(owner_id, [h["item_id"] for h in hits])
        out = []
        for hit in hits:
            media = items.get(hit["item_id"])
            scene = hit.pop("scene", None)
            if media is None or media.removed:
                continue
            url = self.presign(media.key, self.url_expires_s) if media.key else None
            hit["media_url"] = url + fragment(hit["at_s"]) if url else None
            hit["modality"] = media.modality
            thumb = scene_thumbnail_key(version, owner_id, hit["item_id"], scene) if scene else None
            if thumb is not None:
                hit["thumbnail_url"] = self.presign(thumb, self.url_expires_s)
            elif url and media.modality == IMAGE:
                hit["thumbnail_url"] = url
            hit["highlights"] = highlights(query, hit["text"])
            out.append(hit)
        return out
