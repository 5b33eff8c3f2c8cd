"""SearchService's own logic on in-memory parts (a stand-in Searcher and Directory, a fake clock): the
owner's version and the items' sources cached for cache_s, links built per hit, removed or unknown items
dropped, highlights. The real parts together: tests/integration/search/test_search_api.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from shared.errors import InvalidInput
from shared.search.query import NotFound, SearchRequest
from shared.search.service import Media, SearchService, fragment, highlights

pytestmark = pytest.mark.unit


class Clock:
    t = 1000.0

    def __call__(self) -> float:
        return self.t


class Directory:
    def __init__(self) -> None:
        self.versions: dict[str, str | None] = {"o1": "v1"}
        self.items = {
            "vid": Media("uploads/o1/vid/a.mp4", "video"),
            "shot": Media("uploads/o1/shot/b.mp4", "video"),
            "img": Media("uploads/o1/img/p.png", "image"),
            "meta": Media(None, "text"),
            "gone": Media("uploads/o1/gone/g.mp4", "video", removed=True),
        }
        self.reads: list[Any] = []

    def current_version(self, owner_id: str) -> str | None:
        self.reads.append(("version", owner_id))
        return self.versions.get(owner_id)

    def media(self, owner_id: str, item_ids: Sequence[str]) -> dict[str, Media]:
        self.reads.append(("media", tuple(item_ids)))
        return {i: self.items[i] for i in item_ids if i in self.items}


class StandIn:
    """What a Searcher answers, for the items asked."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.requests: list[SearchRequest] = []

    def search(self, req: SearchRequest) -> dict[str, Any]:
        self.requests.append(req)
        hits = [
            {
                "owner_id": "o1",
                "item_id": i,
                "score": 1.0,
                "start_s": s,
                "end_s": s + 5,
                "at_s": s,
                "channels": [],
                "text": t,
            }
            for i, s, t in (
                ("vid", 12.5, "The Ferry leaves at noon; ferries leave hourly."),
                ("shot", 30.0, "the ferry in the fog"),
                ("img", 0.0, ""),
                ("meta", 0.0, "Ferry timetable"),
                ("gone", 3.0, "the ferry"),
                ("unknown", 1.0, "ferry"),
            )
        ]
        hits[1]["scene"] = "shot:scene_text:3"  # the moment holds a scene row (query.Moment)
        return {"hits": hits, "took_ms": 0.1, "spec_version": self.version, "skipped": []}


@pytest.fixture
def parts() -> tuple[SearchService, Directory, Clock, dict[str, StandIn]]:
    directory, clock, made = Directory(), Clock(), {}

    def searchers(version: str) -> StandIn:
        return made.setdefault(version, StandIn(version))

    def presign(key: str, expires_s: int) -> str:
        return f"https://s3.example/{key}?X-Amz-Expires={expires_s}&X-Amz-Signature=sig"

    service = SearchService(searchers, directory, presign, url_expires_s=600, cache_s=30, clock=clock)
    return service, directory, clock, made


def test_hits_get_links_and_the_dead_are_dropped(parts) -> None:
    service, _, _, made = parts
    out = service.search({"owner_id": "o1", "text": "when does the ferry leave", "k": 5})
    by_item = {h["item_id"]: h for h in out["hits"]}
    assert list(by_item) == ["vid", "shot", "img", "meta"]  # removed and unknown items are not answered
    vid, img, meta = by_item["vid"], by_item["img"], by_item["meta"]
    # a scene's moment shows its keyframe (scene 3 is thumbnail 2), presigned like the media; the row id
    # the Searcher named it by is not part of the answer
    shot = by_item["shot"]
    assert (
        shot["thumbnail_url"]
        == "https://s3.example/thumbnails/v1/scenes/o1/shot/2.jpg?X-Amz-Expires=600&X-Amz-Signature=sig"
    )
    assert "scene" not in shot and shot["media_url"].endswith(
        "shot/b.mp4?X-Amz-Expires=600&X-Amz-Signature=sig#t=30"
    )
    assert [h["modality"] for h in out["hits"]] == ["video", "video", "image", "text"]
    assert (
        vid["media_url"]
        == "https://s3.example/uploads/o1/vid/a.mp4?X-Amz-Expires=600&X-Amz-Signature=sig#t=12.5"
    )
    assert "thumbnail_url" not in vid
    assert img["thumbnail_url"] + "#t=0" == img["media_url"]
    assert meta["media_url"] is None and "thumbnail_url" not in meta
    text = vid["text"]
    # query.terms' rule: the first 5 characters ("ferries" is not "ferry", "leaves" is "leave")
    assert [text[a:b] for a, b in vid["highlights"]] == ["Ferry", "leaves", "leave"]
    assert img["highlights"] == [] and out["spec_version"] == "v1"
    assert made["v1"].requests[0].text == "when does the ferry leave"  # parsed once, passed as a request


def test_the_ledger_is_read_once_per_cache_time(parts) -> None:
    service, directory, clock, made = parts
    service.search({"owner_id": "o1", "text": "ferry"})
    service.search({"owner_id": "o1", "text": "ferry"})
    assert [r[0] for r in directory.reads] == ["version", "media"]
    directory.versions["o1"] = "v2"  # the owner switched: seen once the cache time has passed
    assert service.search({"owner_id": "o1", "text": "ferry"})["spec_version"] == "v1"
    clock.t += 31
    assert service.search({"owner_id": "o1", "text": "ferry"})["spec_version"] == "v2"
    assert [r[0] for r in directory.reads] == ["version", "media", "version", "media"]
    assert set(made) == {"v1", "v2"}


def test_an_owner_with_no_version_is_404_and_bad_input_never_reads(parts) -> None:
    service, directory, _, _ = parts
    with pytest.raises(NotFound) as e:
        service.search({"owner_id": "nobody", "text": "x"})
    assert (e.value.status, e.value.field) == (404, "owner_id")
    directory.reads.clear()
    with pytest.raises(InvalidInput) as e:
        service.search({"owner_id": "o1", "text": "x", "k": 0})
    assert e.value.field == "k" and directory.reads == []


@pytest.mark.parametrize(
    ("start", "want"), [(0, "#t=0"), (40.0, "#t=40"), (12.5, "#t=12.5"), (3.14159, "#t=3.142"), (-1, "#t=0")]
)
def test_fragment(start: float, want: str) -> None:
    assert fragment(start) == want


def test_highlights_count_code_points_and_skip_stop_words() -> None:
    text = "🚀 Le café: the CAFÉ of 88-4127 and the"
    spans = highlights("the café 88-4127", text)
    assert [text[a:b] for a, b in spans] == ["café", "CAFÉ", "88-4127"]
    assert highlights("", text) == [] and highlights("ferry", "") == []
