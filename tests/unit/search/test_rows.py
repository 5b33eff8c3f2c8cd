"""Rows from artifacts: windowing, frames and their times, item rows, bounds, ids (fake embedder)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from shared.errors import ConfigError, InvalidInput
from shared.search import rows as R
from shared.search.engine import FRAME, IMAGE, ITEM, PERSON, PERSONS, TEXT, TRANSCRIPT_WINDOW, VISUAL
from shared.search.settings import SearchSettings

pytestmark = pytest.mark.unit


def fake_embed(texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), 384), np.float32)
    for n, t in enumerate(texts):
        out[n, hash(t) % 384] = 1.0
    return out


def unit(dims: int, seed: int = 0, n: int | None = None) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(dims,) if n is None else (n, dims)).astype(np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def segs(n: int, length: float = 4.0, gap: float = 0.5) -> list[dict]:
    return [
        {"start": i * (length + gap), "end": i * (length + gap) + length, "text": f"s{i}"} for i in range(n)
    ]


def test_windows_span_target_overlap_and_cover_every_segment():
    s = SearchSettings()
    windows = R.transcript_windows(segs(40), s)
    assert len(windows) > 1
    for w in windows[:-1]:
        assert s.window_target_s <= w.end_s - w.start_s <= s.window_max_s
    for a, b in itertools.pairwise(windows):
        assert b.start_s < a.end_s  # they overlap ...
        assert b.start_s > a.start_s  # ... and advance
        assert a.end_s - b.start_s <= s.window_overlap_s + 4.5  # by about the overlap (one segment)
    covered = {t for w in windows for t in w.text.split()}
    assert covered == {f"s{i}" for i in range(40)}


def test_windows_keep_a_long_segment_alone_and_never_split_one():
    long = [
        {"start": 0, "end": 3, "text": "a"},
        {"start": 3, "end": 50, "text": "b"},
        {"start": 50, "end": 52, "text": "c"},
    ]
    windows = R.transcript_windows(long)
    assert [w.text for w in windows] == ["a", "b", "c"]
    assert (windows[1].start_s, windows[1].end_s) == (3, 50)


def test_windows_drop_bad_segments_and_sort():
    bad = [
        {"start": 5, "end": 6, "text": "late"},
        {"start": 0, "end": 1, "text": "early"},
        {"start": "x", "end": 1, "text": "no time"},
        {"start": 2, "end": 1, "text": "backwards"},
        {"start": float("nan"), "end": 1, "text": "nan"},
        {"start": 1, "end": 2, "text": "   "},
        "not a segment",
    ]
    (w,) = R.transcript_windows(bad)
    assert w.text == "early late" and (w.start_s, w.end_s) == (0, 6)
    assert R.transcript_windows("nope") == []


def test_windows_are_bounded_in_count_and_text():
    s = SearchSettings(max_windows_per_item=3, max_text_chars=20)
    many = [{"start": i * 30.0, "end": i * 30.0 + 25, "text": "word " * 50} for i in range(10)]
    windows = R.transcript_windows(many, s)
    assert len(windows) == 3
    assert all(len(w.text) <= 20 for w in windows)


def test_transcript_rows_embed_once_and_carry_times():
    calls = []

    def embed(texts):
        calls.append(len(texts))
        return fake_embed(texts)

    rows = R.transcript_rows("o1", "i1", {"segments": segs(12)}, embed)
    assert calls == [len(rows)]
    assert all(r.space == TEXT and r.kind == TRANSCRIPT_WINDOW and r.channel == "transcript" for r in rows)
    assert [r.id for r in rows] == [f"i1:transcript:{n}" for n in range(len(rows))]
    assert all(abs(np.linalg.norm(r.vector) - 1) < 1e-5 for r in rows)


def test_transcript_rows_refuse_a_wrong_embedder_shape():
    with pytest.raises(InvalidInput) as e:
        R.transcript_rows("o1", "i1", {"segments": segs(3)}, lambda t: np.ones((len(t), 5), np.float32))
    assert e.value.field == "embed"


def test_video_rows_derive_uniform_times_like_the_worker():
    from shared.media.video import target_timestamps

    m = np.vstack([unit(512, 0)[None], unit(512, 1, 16)])
    rows = R.video_rows("o1", "v1", m, duration_s=32.0)
    item, frames = rows[0], rows[1:]
    assert item.kind == ITEM and (item.start_s, item.end_s) == (0.0, 32.0) and item.id == "v1:video_clip:0"
    assert len(frames) == 16 and all(r.kind == FRAME and r.space == VISUAL for r in frames)
    centres = [(r.start_s + r.end_s) / 2 for r in frames]
    np.testing.assert_allclose(centres, target_timestamps(32.0, 16), atol=1e-3)
    assert frames[0].start_s == 0.0 and frames[-1].end_s == 32.0
    np.testing.assert_allclose(frames[3].vector, m[4], atol=1e-6)


def test_video_rows_use_given_timestamps_and_thin_to_the_cap():
    m = np.vstack([unit(512, 0)[None], unit(512, 1, 10)])
    ts = [1.0 * i for i in range(10)]
    notes: list[str] = []
    rows = R.video_rows(
        "o1", "v1", m, timestamps=ts, settings=SearchSettings(max_frames_per_item=4), notes=notes
    )
    assert len(rows) == 1 + 4 and notes
    assert rows[1].start_s == 0.0 and rows[-1].start_s == pytest.approx(7.5)  # frames 0, 3, 6, 9


def test_video_rows_without_times_keep_only_the_pooled_row():
    notes: list[str] = []
    rows = R.video_rows("o1", "v1", unit(512, 0, 5), notes=notes)
    assert [r.kind for r in rows] == [ITEM] and notes


@pytest.mark.parametrize(
    "matrix,timestamps",
    [
        (np.ones((3, 384)), None),
        (np.ones(512), None),
        (np.ones((3, 512)), [1.0]),
        (np.ones((3, 512)), [1, float("inf")]),
    ],
)
def test_video_rows_refuse_bad_shapes(matrix, timestamps):
    with pytest.raises(InvalidInput):
        R.video_rows("o1", "v1", matrix, timestamps=timestamps, duration_s=10)


def test_item_rows_from_every_artifact():
    art = R.ItemArtifacts(
        transcript={"segments": segs(8), "duration": 36.0},
        video_clip=np.vstack([unit(512, 0)[None], unit(512, 1, 4)]),
        text_meta=unit(384, 2),
        meta={"title": "Ferry  times", "description": "When the boat leaves", "other": "x"},
    )
    out = R.item_rows("o1", "v1", art, fake_embed)
    kinds = [r.kind for r in out.rows]
    assert kinds.count(FRAME) == 4 and kinds.count(ITEM) == 2 and TRANSCRIPT_WINDOW in kinds
    meta = next(r for r in out.rows if r.channel == "text_meta")
    assert meta.text == "Ferry times — When the boat leaves" and meta.space == TEXT
    frames = [r for r in out.rows if r.kind == FRAME]
    assert frames[-1].end_s == 36.0  # frames fall back on the transcript's duration
    assert len({r.id for r in out.rows}) == len(out.rows)


def test_image_and_person_rows():
    (img,) = R.image_rows("o1", "p1", unit(512, 3))
    assert (img.kind, img.space, img.channel) == (IMAGE, VISUAL, "image_clip")
    (person,) = R.person_rows("o1", "alice", unit(512, 4))
    assert (person.kind, person.space, person.item_id) == (PERSON, PERSONS, "@alice")


@pytest.mark.parametrize("owner,item", [("o/1", "i"), ("o", "../x"), ("", "i"), ("o", "i" * 65), ("o", None)])
def test_ids_are_validated_without_echo(owner, item):
    with pytest.raises(InvalidInput) as e:
        R.image_rows(owner, item, unit(512))
    assert e.value.field in ("owner_id", "item_id")
    assert "../x" not in str(e.value) and "o/1" not in str(e.value)


def test_zero_and_nan_vectors_are_refused():
    with pytest.raises(InvalidInput):
        R.image_rows("o", "i", np.zeros(512))
    with pytest.raises(InvalidInput):
        R.meta_rows("o", "i", np.full(384, np.nan), {})


def test_load_transcript():
    assert R.load_transcript(b'{"segments": []}') == {"segments": []}
    for bad in (b"nope", b"[]", b'{"text": "x"}'):
        with pytest.raises(InvalidInput):
            R.load_transcript(bad)


@pytest.mark.parametrize(
    "kw",
    [
        {"window_target_s": 40.0, "window_max_s": 30.0},
        {"window_overlap_s": 15.0},
        {"max_k": 0},
        {"max_k": 10, "default_k": 20},
        {"candidates": True},
        {"max_windows_per_item": 2.5},
        {"ann_index": "FLAT"},
    ],
)
def test_settings_are_bounded(kw):
    with pytest.raises(ConfigError):
        SearchSettings(**kw)


def test_scene_rows_span_their_scenes_and_name_their_thumbnails():
    from shared.search.engine import SCENE

    rng = np.random.default_rng(5)
    m = rng.standard_normal((4, 512)).astype(np.float32)
    spans = [[0, 2.5], [2.5, 7.25], [7.25, 9.0]]
    notes: list[str] = []
    rows = R.scene_rows("own", "vid", m, spans, notes=notes)
    assert [(r.id, r.kind, r.space, r.channel) for r in rows] == [
        (f"vid:scenes:{i}", SCENE, VISUAL, "scenes") for i in (1, 2, 3)
    ]
    assert [(r.start_s, r.end_s) for r in rows] == [(0.0, 2.5), (2.5, 7.25), (7.25, 9.0)]
    np.testing.assert_allclose(rows[1].vector, m[2] / np.linalg.norm(m[2]), atol=1e-6)
    assert R.scene_thumbnail_key("v1", "own", "vid", rows[0].id) == "thumbnails/v1/scenes/own/vid/0.jpg"
    assert R.scene_thumbnail_key("v1", "own", "vid", "vid:video_clip:1") is None
    assert R.scene_rows("own", "vid", m, None, notes=notes) == [] and notes == [
        "scenes: left out (no spans kept)"
    ]
    with pytest.raises(InvalidInput):
        R.scene_rows("own", "vid", m, spans[:2])
    with pytest.raises(InvalidInput):
        R.scene_rows("own", "vid", m, [[0, 1], [3, 2], [3, 4]])
    few = R.scene_rows("own", "vid", m, spans, settings=SearchSettings(max_frames_per_item=2))
    assert [r.id for r in few] == ["vid:scenes:1", "vid:scenes:3"]
    built = R.item_rows("own", "vid", R.ItemArtifacts(scenes=m, scene_spans=spans), lambda t: None)
    assert [r.kind for r in built.rows] == [SCENE] * 3


def test_scene_text_rows_carry_each_scenes_words_for_bm25_and_minilm():
    from shared.search.engine import SCENE

    clip, mini = unit(512, 1, 4), unit(384, 2, 4)
    spans = [[0, 2.0], [2.0, 4.0], [4.0, 9.0]]
    doc = {
        "segments": [{"start": 0.0, "end": 2.0, "text": "the ferry"}, {"start": 5, "end": 6, "text": "noon"}]
    }
    art = R.ItemArtifacts(transcript=doc, scenes=clip, scene_text=mini, scene_spans=spans)
    rows = [r for r in R.item_rows("own", "vid", art, fake_embed).rows if r.kind == SCENE]
    visual = {r.id: r for r in rows if r.space == VISUAL}
    text = {r.id: r for r in rows if r.space == TEXT}
    # every scene is a visual row (its words its text); only scenes with words are text rows
    assert [(r.text, r.start_s, r.end_s) for r in visual.values()] == [
        ("the ferry", 0.0, 2.0),
        ("", 2.0, 4.0),
        ("noon", 4.0, 9.0),
    ]
    assert list(text) == ["vid:scene_text:1", "vid:scene_text:3"]
    assert [(r.text, r.channel, r.start_s, r.end_s) for r in text.values()] == [
        ("the ferry", "scene_text", 0.0, 2.0),
        ("noon", "scene_text", 4.0, 9.0),
    ]
    np.testing.assert_allclose(text["vid:scene_text:3"].vector, mini[3], atol=1e-6)  # the artifact's row
    # a scene text row shows the scenes channel's keyframe of the same scene
    assert (
        R.scene_thumbnail_key("v1", "own", "vid", "vid:scene_text:3") == "thumbnails/v1/scenes/own/vid/2.jpg"
    )
    for other in ("vid:scene_text:0", "vid:text_meta:1", "vid:nope:1", "other:scenes:1", "vid:scenes:x"):
        assert R.scene_thumbnail_key("v1", "own", "vid", other) is None
    # without the transcript the text rows have nothing to be found by; thinning keeps the same scenes
    bare = R.item_rows("own", "vid", R.ItemArtifacts(scene_text=mini, scene_spans=spans), fake_embed)
    assert bare.rows == []
    few = SearchSettings(max_frames_per_item=2)
    thin = R.item_rows("own", "vid", art, fake_embed, few).rows
    assert sorted(r.id for r in thin if r.kind == SCENE) == [
        "vid:scene_text:1",
        "vid:scene_text:3",
        "vid:scenes:1",
        "vid:scenes:3",
    ]
    with pytest.raises(InvalidInput):  # a text matrix of other rows than the spans: refused, not guessed
        R.item_rows(
            "own", "vid", R.ItemArtifacts(transcript=doc, scene_text=mini[:3], scene_spans=spans), fake_embed
        )
