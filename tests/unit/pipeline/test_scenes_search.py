"""Scenes in search (issue 23, items 2-4) on the in-memory stack and a real LanceDB in a temp folder: a
video's scenes become visual rows (CLIP keyframes) and text rows (scene_text: the words said in each
scene), found by BM25, by MiniLM and by a person's vector, each moment answered with its scene's
keyframe as `thumbnail_url`. Person similarity is computed at query time against the scene rows, so a
person added after the video was indexed finds it with no GPU job and no rewrite of the video's rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared import spec
from shared.pipeline import keys
from shared.pipeline.core import artifact_key
from shared.search.engine import SCENE, TEXT, VISUAL
from shared.search.indexes import read_pointer
from shared.search.service import Media, Searchers, SearchService
from shared.vectors import load_npy, npy_bytes

from .test_search_index import CLIP, MINILM, SearchMachine

CHANNELS = (
    "video_clip",
    "transcript",
    "text_transcript",
    "scenes",
    "scene_text",
    "image_clip",
    "person_query",
)


class LedgerDirectory:
    """shared.aws.search_directory's reads, over the memory ledger and storage."""

    def __init__(self, sm: SearchMachine) -> None:
        self.sm = sm

    def current_version(self, owner_id: str) -> str | None:
        return read_pointer(self.sm.storage, owner_id)

    def media(self, owner_id: str, item_ids: Sequence[str]) -> dict[str, Media]:
        out = {}
        for item_id in item_ids:
            row = self.sm.ledger.item(owner_id, item_id)
            if row is not None:
                out[item_id] = Media(
                    row.get("media_key"), row.get("modality") or "", row.get("status") == "REMOVED"
                )
        return out


def service(sm: SearchMachine) -> SearchService:
    searchers = Searchers(sm.indexes.engine, embed_text=MINILM.embed, clip_text=CLIP.embed)
    return SearchService(searchers, LedgerDirectory(sm), sm.storage.presign_get, cache_s=0)


def thumbnail(owner: str, item: str, index: int) -> str:
    return "memory://" + keys.thumbnail_key(spec.SPEC_VERSION, "scenes", owner, item, index)


def test_a_videos_scenes_are_rows_found_by_their_words_with_their_keyframes(tmp_path) -> None:
    sm = SearchMachine(tmp_path, channels=CHANNELS)
    sm.put("uploads/o/clip/v.mp4")
    sm.settle("o", "clip")
    assert sm.item("o", "clip")["status"] == "COMPLETE"
    engine = sm.engine()
    # text: 1 transcript window + 4 scene texts; visual: pooled + 4 frames + 4 scenes
    assert engine.counts("o") == {TEXT: 5, VISUAL: 9}
    scene_hits = [h for h in engine.text_search("o", "load", k=10) if h.kind == SCENE]
    assert [(h.id, h.text, h.start_s, h.end_s) for h in scene_hits] == [
        ("clip:scene_text:3", "for load", 0.5, 0.75)
    ]
    answer = service(sm).search({"owner_id": "o", "text": "tests", "mode": "text"})
    (hit,) = answer["hits"]
    # the transcript window that says it joins the scene that says it: one hit, the scene's span
    assert set(hit["channels"]) == {"scene_text", "transcript"} and hit["thumbnail_url"] == thumbnail(
        "o", "clip", 3
    )
    assert (hit["start_s"], hit["end_s"], hit["text"]) == (0.75, 1.0, "tests")
    assert hit["media_url"] == "memory://uploads/o/clip/v.mp4#t=0.75" and hit["modality"] == "video"
    # MiniLM finds a scene by its words (the fake embedder: the same text, the same vector)
    vec = service(sm).search({"owner_id": "o", "text": "transcript", "mode": "vector"})["hits"]
    assert vec[0]["thumbnail_url"] == thumbnail("o", "clip", 1)


def test_a_person_added_later_finds_the_scenes_they_appear_in_without_a_gpu_job(tmp_path) -> None:
    sm = SearchMachine(tmp_path, channels=CHANNELS)
    sm.put("uploads/o/clip/v.mp4")
    sm.settle("o", "clip")
    jobs, writes = len(sm.runpod.jobs), len(sm.index.writes)
    video_rows = sm.ledger.rows("o", "clip")[1]
    # a reference photo of someone who looks like scene 2's keyframe (the canned photo vector, replaced
    # before the person's vector is built from it)
    scenes = load_npy(sm.storage.objects[artifact_key("scenes", "o", "clip")][0], "scenes")
    sm.put("persons/o/ann/face.png")
    photo = keys.photo_item_id("ann", "face.png")
    sm.webhook("o", photo, sm.runpod.finish(sm.job("o", photo)))
    sm.storage.put(artifact_key("image_clip", "o", photo), npy_bytes(scenes[2]))
    for _ in range(3):  # the person's vector, then the manifest and the index
        sm.sweep()
    assert len(sm.runpod.jobs) == jobs + 1  # the photo's image_clip only: the video ran nothing again
    assert sm.ledger.rows("o", "clip")[1] == video_rows
    assert all(items == ["@ann"] for _, items in sm.index.writes[writes:])  # the video's rows untouched
    answer = service(sm).search({"owner_id": "o", "person": "ann", "k": 3})
    top = answer["hits"][0]
    assert top["item_id"] == "clip" and "scenes" in top["channels"]
    assert top["thumbnail_url"] == thumbnail("o", "clip", 1)  # scene 2: its keyframe is the person's look
    # the scene's similarity to the person is the cosine of their vectors, as the visual list ranks it
    hits = sm.engine().vector_search("o", VISUAL, scenes[2], k=3)
    assert hits[0].id == "clip:scenes:2" and np.isclose(hits[0].score, 1.0, atol=1e-4)
