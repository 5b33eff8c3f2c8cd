"""Queries: validation (field named, value never echoed), RRF, moment merging, the Searcher over a fake
engine (fake encoders, no LanceDB)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from shared.errors import InvalidInput
from shared.search.engine import FRAME, ITEM, SCENE, TEXT, TRANSCRIPT_WINDOW, VISUAL, Hit, SearchEngine
from shared.search.query import Fused, NotFound, Searcher, merge_moments, parse_request, rrf
from shared.search.settings import SearchSettings

pytestmark = pytest.mark.unit


def hit(
    id_, item="i1", start=0.0, end=10.0, kind=TRANSCRIPT_WINDOW, channel="transcript", text="", owner="o1"
):
    return Hit(id_, kind, owner, item, channel, start, end, text, 1.0)


# ---- validation -------------------------------------------------------------------------------
SECRET = "s3cr3t/../"


@pytest.mark.parametrize(
    "raw,field",
    [
        ({"text": "x"}, "owner_id"),
        ({"owner_id": SECRET, "text": "x"}, "owner_id"),
        ({"owner_id": "o", "text": ""}, "text"),
        ({"owner_id": "o", "text": "   "}, "text"),
        ({"owner_id": "o", "text": SECRET * 100}, "text"),
        ({"owner_id": "o", "text": "a\x00" + SECRET}, "text"),
        ({"owner_id": "o", "text": 5}, "text"),
        ({"owner_id": "o", "text": "x", "k": 0}, "k"),
        ({"owner_id": "o", "text": "x", "k": 51}, "k"),
        ({"owner_id": "o", "text": "x", "k": True}, "k"),
        ({"owner_id": "o", "text": "x", "k": "5"}, "k"),
        ({"owner_id": "o", "text": "x", "mode": SECRET}, "mode"),
        ({"owner_id": "o", "text": "x", "item_id": SECRET}, "item_id"),
        ({"owner_id": "o", "text": "x", "person": SECRET}, "person"),
        ({"owner_id": "o", "text": "x", SECRET: 1}, "request"),
        ("not a mapping", "request"),
    ],
)
def test_bad_requests_name_the_field_and_echo_nothing(raw, field):
    with pytest.raises(InvalidInput) as e:
        parse_request(raw)
    assert e.value.field == field and e.value.status == 400
    assert SECRET not in e.value.public_message and "s3cr3t" not in str(e.value.to_dict())


def test_a_good_request_is_normalised():
    req = parse_request({"owner_id": "o_1", "text": "  when  does\tthe ferry leave ", "k": 5, "mode": "text"})
    assert (req.text, req.k, req.mode, req.item_id, req.person) == (
        "when does the ferry leave",
        5,
        "text",
        None,
        None,
    )
    assert parse_request({"owner_id": "o", "person": "alice"}).text == ""
    assert parse_request({"owner_id": "o", "text": "x", "k": None, "mode": None}).k == 10


# ---- fusion and merging -----------------------------------------------------------------------
def test_rrf_sums_reciprocal_ranks_across_lists():
    a, b, c = hit("a"), hit("b"), hit("c")
    fused = rrf({"bm25": [a, b], "vec": [b, c, b]}, rrf_k=60)
    scores = {f.hit.id: f.score for f in fused}
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["a"] == pytest.approx(1 / 61) and scores["c"] == pytest.approx(1 / 62)
    assert [f.hit.id for f in fused] == ["b", "a", "c"]
    assert fused[0].lists == {"bm25", "vec"}
    assert rrf({}) == []


def _fused(pairs):
    return [Fused(h, s, {"x"}) for h, s in pairs]


def test_overlapping_and_adjacent_hits_of_one_item_merge():
    moments = merge_moments(
        _fused(
            [
                (hit("w0", start=0, end=20, text="first"), 0.02),
                (hit("w1", start=15, end=35, text="second"), 0.03),
                (hit("f1", start=35.5, end=37, kind=FRAME, channel="video_clip"), 0.01),
                (hit("w9", start=100, end=120, text="far"), 0.025),
                (hit("o", item="i2", start=16, end=30, text="other item"), 0.05),
            ]
        )
    )
    assert [(m.item_id, m.start_s, m.end_s) for m in moments] == [
        ("i2", 16, 30),
        ("i1", 0, 37),
        ("i1", 100, 120),
    ]
    best = moments[1]
    assert best.score == 0.03 and best.text == "second" and best.channels == {"transcript", "video_clip"}


def test_a_scene_is_its_own_moment_and_a_frame_inside_it_is_where_playback_starts():
    moments = merge_moments(
        _fused(
            [
                (hit("s1", start=40, end=52, kind=SCENE, channel="scenes"), 0.02),
                (hit("s2", start=52, end=70, kind=SCENE, channel="scenes"), 0.015),
                # a frame inside s1 (the better of two), a window overlapping both scenes (joins the
                # better-scoring s1, not widening it), a frame inside s2, and a window far from any scene
                (hit("f1", start=44, end=44, kind=FRAME, channel="video_clip"), 0.03),
                (hit("f2", start=49, end=49, kind=FRAME, channel="video_clip"), 0.01),
                (hit("w1", start=35, end=60, text="said here"), 0.025),
                (hit("f3", start=61, end=61, kind=FRAME, channel="video_clip"), 0.005),
                (hit("w9", start=100, end=120, text="far"), 0.001),
            ]
        )
    )
    got = [(m.start_s, m.end_s, m.answer(200)["at_s"], m.scene) for m in moments]
    assert got == [(40, 52, 44, "s1"), (52, 70, 61, "s2"), (100, 120, 100, "")]
    assert moments[0].text == "said here" and moments[0].channels == {"scenes", "video_clip", "transcript"}


def test_merging_stops_at_the_max_moment_span():
    hits = [(hit(f"w{n}", start=n * 15, end=n * 15 + 20), 0.01) for n in range(10)]
    moments = merge_moments(_fused(hits), SearchSettings(max_moment_s=60))
    assert len(moments) > 1 and all(m.end_s - m.start_s <= 60 for m in moments)


def test_item_level_rows_join_the_best_moment_without_stretching_it():
    moments = merge_moments(
        _fused(
            [
                (hit("w", start=40, end=60, text="spoken"), 0.02),
                (hit("m", start=0, end=0, kind=ITEM, channel="text_meta", text="Title"), 0.04),
                (hit("p", item="i2", start=0, end=90, kind=ITEM, channel="video_clip"), 0.01),
            ]
        )
    )
    assert [(m.item_id, m.start_s, m.end_s, m.score) for m in moments] == [
        ("i1", 40, 60, 0.04),
        ("i2", 0, 90, 0.01),
    ]
    assert moments[0].channels == {"transcript", "text_meta"} and moments[0].text == "Title"


# ---- the searcher over a fake engine ------------------------------------------------------------
class FakeEngine:
    """Exact search over in-memory rows: what a SearchEngine must answer (the Protocol's shape)."""

    spec_version = "v1-abc"

    def __init__(self, rows):
        self.rows = rows  # owner -> space -> [(Hit, vector)]
        self.opened: list[str] = []

    def counts(self, owner_id):
        self.opened.append(owner_id)
        return {s: len(r) for s, r in self.rows.get(owner_id, {}).items()}

    def vector_search(self, owner_id, space, vector, *, k, item_id=None):
        self.opened.append(owner_id)
        rows = [(h, float(v @ vector)) for h, v in self.rows.get(owner_id, {}).get(space, [])]
        rows = [(h, s) for h, s in rows if item_id is None or h.item_id == item_id]
        return [dataclasses.replace(h, score=s) for h, s in sorted(rows, key=lambda x: -x[1])[:k]]

    def text_search(self, owner_id, text, *, k, item_id=None):
        self.opened.append(owner_id)
        words = set(text.lower().split())
        rows = [
            (h, len(words & set(h.text.lower().split())))
            for h, _ in self.rows.get(owner_id, {}).get(TEXT, [])
        ]
        rows = [(h, s) for h, s in rows if s and (item_id is None or h.item_id == item_id)]
        return [h for h, _ in sorted(rows, key=lambda x: -x[1])[:k]]

    def person_vector(self, owner_id, person_id):
        return self.persons.get(person_id) if hasattr(self, "persons") else None

    def write(self, owner_id, rows, *, replace_items=()):
        raise NotImplementedError

    def delete_items(self, owner_id, item_ids):
        raise NotImplementedError

    def optimize(self, owner_id):
        return {}

    def drop(self, owner_id):
        pass


def onehot(dims, i):
    v = np.zeros(dims, np.float32)
    v[i] = 1
    return v


def encoder(dims):
    return lambda texts: np.stack([onehot(dims, sum(map(ord, t)) % dims) for t in texts])


def engine():
    e = FakeEngine(
        {
            "o1": {
                TEXT: [
                    (
                        hit("a:t:0", item="a", start=0, end=20, text="the ferry leaves at noon"),
                        onehot(384, 1),
                    ),
                    (hit("b:t:0", item="b", start=0, end=20, text="lunch menu"), onehot(384, 2)),
                ],
                VISUAL: [
                    (
                        hit("a:v:1", item="a", start=5, end=10, kind=FRAME, channel="video_clip"),
                        onehot(512, 3),
                    )
                ],
            },
            "o2": {
                TEXT: [(hit("x:t:0", item="x", owner="o2", text="the ferry leaves at noon"), onehot(384, 1))]
            },
        }
    )
    e.persons = {"alice": onehot(512, 3)}
    return e


def test_searcher_fuses_merges_and_reports_what_it_skipped():
    e = engine()
    assert isinstance(e, SearchEngine)
    out = Searcher(e, embed_text=encoder(384)).search({"owner_id": "o1", "text": "ferry noon", "k": 5})
    assert set(out) == {"hits", "took_ms", "spec_version", "skipped"}
    assert out["spec_version"] == "v1-abc" and out["took_ms"] >= 0
    assert out["skipped"] == ["clip_vec: no CLIP text encoder configured"]
    top = out["hits"][0]
    assert (top["owner_id"], top["item_id"], top["start_s"], top["end_s"]) == ("o1", "a", 0.0, 20.0)
    assert top["text"] == "the ferry leaves at noon" and top["channels"] == ["transcript"]
    assert set(e.opened) == {"o1"}


def test_person_search_ranks_visual_rows_by_the_person_vector():
    out = Searcher(engine(), embed_text=None).search({"owner_id": "o1", "person": "alice"})
    assert [(h["item_id"], h["start_s"], h["channels"]) for h in out["hits"]] == [("a", 5.0, ["video_clip"])]


def test_unknown_owner_and_person_are_404s():
    s = Searcher(engine(), embed_text=encoder(384))
    with pytest.raises(NotFound) as e:
        s.search({"owner_id": "nobody", "text": "ferry"})
    assert e.value.field == "owner_id" and e.value.status == 404
    with pytest.raises(NotFound) as e:
        s.search({"owner_id": "o1", "person": "bob"})
    assert e.value.field == "person"


def test_foreign_rows_are_dropped_even_if_an_engine_returned_them():
    e = engine()
    e.rows["o1"][TEXT].append((hit("z:t:0", item="z", owner="o2", text="ferry ferry"), onehot(384, 1)))
    out = Searcher(e, embed_text=encoder(384)).search({"owner_id": "o1", "text": "ferry", "mode": "text"})
    assert {h["owner_id"] for h in out["hits"]} == {"o1"}


def test_modes_pick_their_lists():
    e = engine()
    s = Searcher(e, embed_text=encoder(384), clip_text=encoder(512))
    text_only = s.search({"owner_id": "o1", "text": "lunch", "mode": "text"})
    assert [h["item_id"] for h in text_only["hits"]] == ["b"]
    vec = s.search({"owner_id": "o1", "text": "lunch", "mode": "vector", "item_id": "a"})
    assert vec["hits"] == [] and vec["skipped"] == []  # item a has nothing like "lunch"
    anything = Searcher(
        e,
        embed_text=encoder(384),
        clip_text=encoder(512),
        settings=SearchSettings(min_text_similarity=-1.0, min_clip_similarity=-1.0),
    )
    vec = anything.search({"owner_id": "o1", "text": "lunch", "mode": "vector", "item_id": "a"})
    assert {h["item_id"] for h in vec["hits"]} == {"a"}


def test_vector_rows_below_the_similarity_floor_stay_out_of_a_hybrid_answer():
    """Rank fusion ignores scores: without a floor the nearest of unrelated frames (cosine 0 here)
    would rank with the transcript window that says the words."""
    e = engine()
    e.rows["o1"][VISUAL].append(
        (hit("c:v:0", item="c", start=0, end=5, kind=FRAME, channel="video_clip"), onehot(512, 9))
    )
    clip = encoder(512)
    out = Searcher(e, embed_text=encoder(384), clip_text=clip).search(
        {"owner_id": "o1", "text": "ferry noon"}
    )
    assert [h["item_id"] for h in out["hits"]] == ["a"]  # the window (BM25); no unrelated frame
    q = clip(["ferry noon"])[0]
    e.rows["o1"][VISUAL].append(
        (hit("d:v:0", item="d", start=0, end=5, kind=FRAME, channel="video_clip"), q)  # looks like it
    )
    out = Searcher(e, embed_text=encoder(384), clip_text=clip).search(
        {"owner_id": "o1", "text": "ferry noon"}
    )
    assert {h["item_id"] for h in out["hits"]} == {"a", "d"}


def test_a_wrong_encoder_shape_is_refused():
    s = Searcher(engine(), embed_text=lambda t: np.ones((1, 7), np.float32))
    with pytest.raises(InvalidInput) as e:
        s.search({"owner_id": "o1", "text": "x", "mode": "vector"})
    assert e.value.field == "embed_text"


def test_terms_and_coverage():
    from shared.search.query import coverage, terms

    assert terms("When does the Ferry leave?") == {"ferry", "leave"}
    assert terms("invoice 88-4127, firmware 4.2.17") == {"invoi", "88-41", "firmw", "4.2.1"}
    assert coverage(terms("ferry leaves"), "the ferry leaves at noon") == 1.0
    assert coverage(terms("boat departs midday"), "the boat is blue") == pytest.approx(1 / 3)
    assert coverage(set(), "anything") == 0.0


def test_hybrid_weighs_bm25_hits_by_query_term_coverage():
    # a BM25 hit with one stray word must not outrank the vector list's best hit in hybrid
    stray = hit("s", item="s", text="the boat is blue")
    right = hit("r", item="r", text="the ferry leaves at noon")
    vec = [right, hit("x", item="x"), hit("y", item="y"), stray]
    plain = rrf({"bm25": [stray], "text_vec": vec})
    assert plain[0].hit.id == "s"
    cov = rrf(
        {"bm25": [stray], "text_vec": vec},
        weight=lambda name, h: (1 / 3) ** 3 if name == "bm25" else 1.0,
    )
    assert cov[0].hit.id == "r"


# ---- the lists run side by side -------------------------------------------------------------------
REQUESTS = [
    {"owner_id": "o1", "text": "ferry noon", "k": 5},
    {"owner_id": "o1", "text": "lunch", "mode": "vector"},
    {"owner_id": "o1", "text": "lunch menu", "mode": "text"},
    {"owner_id": "o1", "text": "ferry", "person": "alice"},
    {"owner_id": "o1", "person": "alice", "item_id": "a"},
    {"owner_id": "o2", "text": "ferry noon"},  # no visual table: skipped, said so
]


@pytest.mark.parametrize("clip", [True, False])
def test_parallel_lists_answer_exactly_as_sequential_ones(clip):
    def run(parallel):
        s = Searcher(
            engine(),
            embed_text=encoder(384),
            clip_text=encoder(512) if clip else None,
            settings=SearchSettings(parallel_lists=parallel, min_clip_similarity=-1.0),
            clock=lambda: 0.0,
        )
        return [s.search(r) for r in REQUESTS]

    assert run(True) == run(False)


def test_the_lists_of_one_query_run_at_the_same_time():
    """Every list's embedding and index query must be in flight together: each waits at a barrier the
    others must reach too (one after another, the first would time out)."""
    import threading

    barrier = threading.Barrier(3, timeout=5)

    class Slow(FakeEngine):
        def vector_search(self, *a, **kw):
            barrier.wait()
            return super().vector_search(*a, **kw)

        def text_search(self, *a, **kw):
            barrier.wait()
            return super().text_search(*a, **kw)

    e = engine()
    slow = Slow(e.rows)
    slow.persons = e.persons
    s = Searcher(slow, embed_text=encoder(384), clip_text=encoder(512))
    out = s.search({"owner_id": "o1", "text": "ferry noon"})
    assert out["hits"][0]["item_id"] == "a" and out["skipped"] == []


def test_errors_and_404s_are_the_sequential_ones_when_lists_run_side_by_side():
    def bad(texts):
        raise InvalidInput("the encoder failed", field="embed_text")

    s = Searcher(engine(), embed_text=bad, clip_text=encoder(512))
    with pytest.raises(InvalidInput) as e:
        s.search({"owner_id": "o1", "text": "ferry"})
    assert e.value.field == "embed_text"
    # o2 has no visual rows: the clip list's failure is never read, the answer is BM25 + MiniLM's
    s = Searcher(engine(), embed_text=encoder(384), clip_text=bad)
    out = s.search({"owner_id": "o2", "text": "ferry noon"})
    assert out["skipped"] == ["clip_vec: the owner has no visual rows"]
    with pytest.raises(NotFound) as e:
        s.search({"owner_id": "o1", "text": "ferry", "person": "bob"})
    assert e.value.field == "person"
