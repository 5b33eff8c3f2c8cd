"""The search index kept by the pipeline (shared.pipeline.search_sync + shared.search.indexer), on the
memory adapters and a real LanceDB in a temp folder: written once an item settles, in one batch and
idempotent; a removed item leaves it; a failed write never wedges an item; a new spec version's tables
fill beside the old ones and queries switch only once they hold every item; optimize on a schedule;
`reindex_search`; the worker's frame times kept (validated) for the frame rows."""

from __future__ import annotations

import dataclasses
import json
from types import MappingProxyType

import numpy as np
import pytest

from shared import spec
from shared.dev.fakes import FakeBackend
from shared.errors import InvalidInput
from shared.pipeline import keys
from shared.search.engine import FRAME, PERSONS, TEXT, VISUAL
from shared.search.indexer import ArtifactIndex
from shared.search.indexes import Indexes, open_searcher, read_pointer
from shared.search.query import NotFound

from .test_state_machine import Machine

MINILM, CLIP = FakeBackend(384), FakeBackend(512)
META = {"title": "Ferry timetable", "description": "when the boat leaves the harbour"}


class Spy(ArtifactIndex):
    """The real writer, counting its calls; `fail` makes every write raise (a LanceDB or S3 fault)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.writes: list[tuple[str, list[str]]] = []
        self.optimized = 0
        self.fail: Exception | None = None

    def write(self, spec_version, owner_id, items):
        if self.fail is not None:
            raise self.fail
        self.writes.append((spec_version, sorted(items)))
        return super().write(spec_version, owner_id, items)

    def optimize(self, spec_version, owner_id):
        self.optimized += 1
        return super().optimize(spec_version, owner_id)


class SearchMachine(Machine):
    def __init__(self, root, **settings) -> None:
        super().__init__(**settings)
        self.indexes = Indexes(str(root))
        self.index = Spy(self.indexes, self.storage, MINILM.embed)
        self.p.search = self.index

    def put(self, key: str, data: bytes = b"\x00" * 64) -> None:
        self.storage.put(key, data)
        self.p.on_s3_record(
            {"eventName": "ObjectCreated:Put", "s3": {"object": {"key": key, "size": len(data)}}}
        )

    def remove(self, key: str) -> None:
        self.storage.delete(key)
        self.p.on_s3_record({"eventName": "ObjectRemoved:Delete", "s3": {"object": {"key": key}}})

    def settle(self, owner: str, item: str) -> None:
        """The item's job answers (its webhook), then the sweeper writes the manifest and the index."""
        self.webhook(owner, item, self.runpod.finish(self.job(owner, item)))
        self.sweep()

    def sweep(self, step_s: float = 1.0) -> dict[str, int]:
        self.clock.t += step_s
        return self.p.sweep(workers=1)

    def alarm(self, owner: str) -> float | None:
        """When the owner's search alarm goes off (None: not set)."""
        row = self.ledger.table.get({"pk": f"{owner}#~", "sk": "SEARCH"}, consistent=True) or {}
        return row.get("due_at") if row.get("sweep") else None

    def engine(self, version: str | None = None):
        return self.indexes.engine(version or spec.SPEC_VERSION)

    def search(self, owner: str, **request):
        s = open_searcher(owner, indexes=self.indexes, storage=self.storage, embed_text=MINILM.embed)
        return s.search({"owner_id": owner, **request})


@pytest.fixture
def sm(tmp_path) -> SearchMachine:
    return SearchMachine(tmp_path)


def test_a_settled_item_is_indexed_once_in_one_batch_with_the_workers_frame_times(sm: SearchMachine) -> None:
    sm.put("uploads/o/clip/v.mp4")
    sm.put("uploads/o/clip/meta.json", json.dumps(META).encode())
    sm.settle("o", "clip")
    item = sm.item("o", "clip")
    assert item["status"] == "COMPLETE" and item["search_indexed"].startswith(spec.SPEC_VERSION + ":")
    assert sm.index.writes == [(spec.SPEC_VERSION, ["clip"])]
    engine = sm.engine()
    assert engine.counts("o") == {TEXT: 2, VISUAL: 5}  # a transcript window, the meta; pooled + 4 frames
    frames = sorted(
        (h.start_s, h.end_s)
        for h in engine.vector_search("o", VISUAL, CLIP.embed(["x"])[0], k=9)
        if h.kind == FRAME
    )
    # the worker's pts (0.125, 0.375, ...), each frame standing for the time halfway to its neighbours
    assert frames == [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]
    assert read_pointer(sm.storage, "o") == spec.SPEC_VERSION
    hits = sm.search("o", text="ferry harbour", mode="text")["hits"]
    assert [(h["item_id"], h["channels"]) for h in hits] == [("clip", ["text_meta"])]
    # nothing changed: later rebuilds write nothing (the ledger says what the tables hold)
    sm.p.mark_manifest("o")
    sm.sweep()
    assert len(sm.index.writes) == 1
    # a new meta.json: the item settles again and its rows are replaced, not added to
    sm.put("uploads/o/clip/meta.json", json.dumps({"title": "Bus timetable"}).encode())
    sm.sweep()
    assert len(sm.index.writes) == 2 and engine.counts("o") == {TEXT: 2, VISUAL: 5}
    assert sm.search("o", text="bus", mode="text")["hits"][0]["text"] == "Bus timetable"
    assert sm.search("o", text="ferry", mode="text")["hits"] == []


def test_a_removed_item_leaves_the_index(sm: SearchMachine) -> None:
    for item in ("a", "b"):
        sm.put(f"uploads/o/{item}/v.mp4")
        sm.settle("o", item)
    assert sm.engine().counts("o") == {TEXT: 2, VISUAL: 10}
    sm.remove("uploads/o/a/v.mp4")
    sm.sweep()
    assert sm.engine().counts("o") == {TEXT: 1, VISUAL: 5}
    assert "search_indexed" not in sm.item("o", "a") or sm.item("o", "a")["search_indexed"] is None
    assert {h["item_id"] for h in sm.search("o", text="canned transcript", mode="text")["hits"]} == {"b"}


def test_a_new_source_of_another_kind_replaces_the_items_rows(sm: SearchMachine) -> None:
    sm.put("uploads/o/x/v.mp4")
    sm.settle("o", "x")
    sm.put("uploads/o/x/p.png")  # the latest upload wins; the video's channel rows stay in the ledger
    sm.settle("o", "x")
    assert sm.engine().counts("o") == {TEXT: 0, VISUAL: 1}  # the image, no frame or window of the video


def test_a_failed_index_write_never_wedges_the_item_and_is_retried(sm: SearchMachine) -> None:
    sm.put("uploads/o/a/v.mp4")
    sm.index.fail = OSError("S3 is down")
    sm.settle("o", "a")
    assert sm.item("o", "a")["status"] == "COMPLETE"  # settled all the same
    assert not sm.item("o", "a").get("search_indexed")
    assert sm.ledger.owner_state("o")["search_pending"] == 1 and sm.alarm("o") == pytest.approx(
        sm.clock.t + 60
    )
    sm.index.fail = None
    sm.sweep(step_s=30)  # not due yet
    assert sm.engine().counts("o") == {}
    assert sm.sweep(step_s=31) == {"search_alarm": 1}  # the alarm marks the manifest ...
    sm.sweep()  # ... and its rebuild writes the index
    assert sm.engine().counts("o") == {TEXT: 1, VISUAL: 5}
    assert sm.alarm("o") == pytest.approx(sm.clock.t + 600)  # what is left: the optimize of that write
    assert sm.ledger.owner_state("o")["search_pending"] == 0


def test_an_artifact_that_cannot_be_read_is_left_out_with_a_note_not_retried(sm: SearchMachine) -> None:
    sm.put("uploads/o/a/v.mp4")
    sm.webhook("o", "a", sm.runpod.finish(sm.job("o", "a")))
    sm.storage.put(keys.transcript_key(spec.SPEC_VERSION, "o", "a"), b"not json")
    sm.sweep()
    item = sm.item("o", "a")
    assert item["search_indexed"] and "transcript: is not valid JSON" in item["search_note"]
    assert sm.engine().counts("o") == {VISUAL: 5}  # the frames are there all the same
    sm.p.mark_manifest("o")
    sm.sweep()
    assert len(sm.index.writes) == 1


def test_batches_are_capped_and_the_rest_follow_at_the_next_sweep(tmp_path) -> None:
    sm = SearchMachine(tmp_path, search_batch_items=2)
    for item in ("a", "b", "c"):
        sm.put(f"uploads/o/{item}/p.png")
        sm.webhook("o", item, sm.runpod.finish(sm.job("o", item)))
    sm.sweep()
    assert sm.index.writes == [(spec.SPEC_VERSION, ["a", "b"])]
    assert sm.ledger.owner_state("o")["search_pending"] == 1
    sm.sweep()
    assert sm.index.writes[1] == (spec.SPEC_VERSION, ["c"]) and sm.engine().counts("o") == {VISUAL: 3}


def test_optimize_runs_on_its_schedule(tmp_path) -> None:
    sm = SearchMachine(tmp_path, search_optimize_writes=3, search_optimize_every_s=600.0)
    for n in range(3):
        sm.put(f"uploads/o/i{n}/p.png")
        sm.settle("o", f"i{n}")
        assert sm.index.optimized == (1 if n == 2 else 0)  # the third write
    sm.put("uploads/o/i3/p.png")
    sm.settle("o", "i3")
    assert sm.index.optimized == 1
    state = sm.ledger.owner_state("o")
    assert state["search_writes"] == 1 and sm.alarm("o") == pytest.approx(state["search_optimized_at"] + 600)
    sm.sweep(step_s=600)  # the last write is optimized once its period is over, with nothing new
    sm.sweep()
    assert sm.index.optimized == 2 and sm.ledger.owner_state("o")["search_writes"] == 0
    assert sm.alarm("o") is None and "sweep" not in sm.ledger.owner_state("o")  # nothing left to do


def new_recipe(monkeypatch, channel: str) -> tuple[str, str]:
    old = spec.SPEC_VERSION
    ch = spec.CHANNELS[channel]
    changed = dataclasses.replace(ch, preprocessing=MappingProxyType({**ch.preprocessing, "x": 1}))
    chans = MappingProxyType({**spec.CHANNELS, channel: changed})
    monkeypatch.setattr(spec, "CHANNELS", chans)
    monkeypatch.setattr(spec, "SPEC_VERSION", spec.spec_version(chans))
    return old, spec.SPEC_VERSION


def test_a_new_spec_versions_tables_fill_beside_the_old_and_queries_switch_when_complete(
    sm: SearchMachine, monkeypatch
) -> None:
    for item in ("a", "b", "gone"):
        sm.put(f"uploads/o/{item}/p.png")
        sm.settle("o", item)
    old, new = new_recipe(monkeypatch, "image_clip")
    sm.p.advance("o", "a")  # a reprocess's item message: image_clip runs again, under the new version
    sm.settle("o", "a")
    assert sm.engine(new).counts("o") == {VISUAL: 1}  # the new version's tables fill ...
    assert sm.engine(old).counts("o") == {VISUAL: 3}  # ... beside the old ones, which queries still read
    assert (
        read_pointer(sm.storage, "o") == old and sm.search("o", text="x", mode="text")["spec_version"] == old
    )
    # removed meanwhile: it leaves the tables queries read now, not only the new ones
    sm.storage.delete("uploads/o/gone/p.png")
    sm.p.on_s3_record(
        {"eventName": "ObjectRemoved:Delete", "s3": {"object": {"key": "uploads/o/gone/p.png"}}}
    )
    sm.sweep()
    assert sm.engine(old).counts("o") == {VISUAL: 2} and read_pointer(sm.storage, "o") == old
    # the last item settles under the new version but its index write fails: no switch yet
    sm.index.fail = OSError("S3 is down")
    sm.p.advance("o", "b")
    sm.settle("o", "b")
    assert sm.ledger.owner_state("o")["current_version"] == old and read_pointer(sm.storage, "o") == old
    sm.index.fail = None
    sm.sweep(step_s=61)  # the alarm ...
    sm.sweep()  # ... and the rebuild
    assert sm.ledger.owner_state("o")["current_version"] == new and read_pointer(sm.storage, "o") == new
    assert sm.engine(new).counts("o") == {VISUAL: 2}
    sm.indexes._current.clear()  # the reader's pointer cache (5 s)
    assert sm.search("o", text="x", mode="text")["spec_version"] == new


def test_persons_are_indexed_and_searchable(sm: SearchMachine) -> None:
    sm.put("uploads/o/clip/v.mp4")
    sm.settle("o", "clip")
    sm.put("persons/o/ann/face.png")
    photo = keys.photo_item_id("ann", "face.png")
    sm.webhook("o", photo, sm.runpod.finish(sm.job("o", photo)))
    for _ in range(3):  # the person's vector, then the manifest and the index
        sm.sweep()
    assert sm.engine().counts("o")[PERSONS] == 1
    assert not sm.item("o", photo).get("search_indexed")  # a reference photo is not a moment
    answer = sm.search("o", person="ann", k=3)
    assert answer["hits"] and {h["item_id"] for h in answer["hits"]} == {"clip"}
    with pytest.raises(NotFound):
        sm.search("o", person="bob")


def test_reindex_rebuilds_from_the_artifacts(sm: SearchMachine) -> None:
    for item in ("a", "b"):
        sm.put(f"uploads/o/{item}/v.mp4")
        sm.settle("o", item)
    engine = sm.engine()
    engine.drop("o")  # lost
    done = []
    out = sm.p.reindex_search("o", progress=lambda d, t: done.append((d, t)))
    assert (out["items"], out["rows"], out["current"], out["left_out"]) == (2, 12, True, {})
    assert done == [(2, 2)] and engine.counts("o") == {TEXT: 2, VISUAL: 10}
    assert sm.index.writes[-1] == (spec.SPEC_VERSION, ["a", "b"])
    with pytest.raises(InvalidInput) as e:
        sm.p.reindex_search("o", "2020-01-01-deadbeef")
    assert e.value.field == "spec_version"
    with pytest.raises(InvalidInput) as e:
        sm.p.reindex_search("nobody")
    assert e.value.status == 404 and e.value.field == "owner_id"
    with pytest.raises(InvalidInput) as e:
        sm.p.reindex_search("../o")
    assert e.value.field == "owner_id"
    assert engine.counts("o") == {TEXT: 2, VISUAL: 10}  # bad requests changed nothing
    # a rebuild cut short by a failed write: no item stays marked as indexed, the sweeper finishes it
    sm.index.fail = OSError("S3 is down")
    with pytest.raises(OSError):
        sm.p.reindex_search("o")
    assert engine.counts("o") == {} and not any(sm.item("o", i).get("search_indexed") for i in "ab")
    sm.index.fail = None
    sm.sweep()
    assert engine.counts("o") == {TEXT: 2, VISUAL: 10}


def test_the_pointer_and_open_searcher_refuse_what_is_not_theirs(sm: SearchMachine) -> None:
    with pytest.raises(InvalidInput) as e:
        sm.search("../x", text="x")
    assert e.value.field == "owner_id" and e.value.status == 400
    with pytest.raises(NotFound):
        sm.search("o", text="x")  # no index yet
    sm.storage.put(keys.search_current_key("o"), b'{"spec_version": "../../etc"}')
    assert read_pointer(sm.storage, "o") is None
    assert np.isfinite(sm.clock()) and sm.engine().counts("o") == {}
