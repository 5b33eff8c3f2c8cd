"""LanceSearch on a temp folder (real LanceDB 0.41): write / replace / delete / query, BM25, hybrid
against either list alone, tenant isolation, persons, optimize with the ANN index, the import guard."""

from __future__ import annotations

import numpy as np
import pytest

from shared.search.engine import TEXT, VISUAL, SearchEngine
from shared.search.query import NotFound, Searcher
from shared.search.rows import ItemArtifacts, item_rows, person_rows
from shared.search.settings import DEFAULTS, SearchSettings
from tests.integration.search.corpus import ITEMS, QUERIES, SEG_STEP, fake_minilm, transcript

pytestmark = pytest.mark.integration

VERSION = "2026-12-01-abc123"


@pytest.fixture(scope="module")
def lance():
    from shared.search import lance

    return lance


def build(lance, root, owner="o1", settings=DEFAULTS):
    engine = lance.LanceSearch(str(root), VERSION, settings=settings)
    rows = []
    for item in ITEMS:
        rows += item_rows(owner, item, ItemArtifacts(transcript=transcript(item)), fake_minilm, settings).rows
    engine.write(owner, rows, replace_items=list(ITEMS))
    return engine


def top1(searcher, owner, query, mode):
    hits = searcher.search({"owner_id": owner, "text": query, "mode": mode, "k": 5})["hits"]
    return hits[0] if hits else None


def found(hit, item, seg):
    start = seg * SEG_STEP
    return (
        hit is not None
        and hit["item_id"] == item
        and hit["start_s"] <= start + 1
        and hit["end_s"] >= start + 1
    )


def test_write_query_replace_delete(lance, tmp_path):
    engine = build(lance, tmp_path)
    assert isinstance(engine, SearchEngine)
    assert engine.counts("o1") == {TEXT: 12}
    assert (tmp_path / "search" / VERSION / "o1" / "text.lance").is_dir()
    hits = engine.text_search("o1", "ferry", k=5)
    assert [(h.item_id, h.start_s, h.kind) for h in hits] == [("trip", 25.0, "transcript_window")]
    assert engine.text_search("o1", "ferries", k=5)[0].item_id == "trip"  # stemmed
    only_home = engine.text_search("o1", "the", k=5, item_id="home")  # stop word: nothing
    assert only_home == []
    assert {h.item_id for h in engine.text_search("o1", "floods keys", k=5, item_id="home")} == {"home"}
    # replace one item with fewer rows: its old rows go, in the same write
    doc = {"segments": [{"start": 0, "end": 10, "text": "a brand new ferry schedule"}]}
    res = engine.write(
        "o1", item_rows("o1", "trip", ItemArtifacts(transcript=doc), fake_minilm).rows, replace_items=["trip"]
    )
    # (row trip:transcript:0 is rewritten in place; rows 1-3 are deleted)
    assert res.written == {TEXT: 1} and res.deleted == {TEXT: 3} and res.commits == 1
    assert engine.counts("o1") == {TEXT: 9}
    assert [h.text for h in engine.text_search("o1", "ferry", k=5)] == ["a brand new ferry schedule"]
    # an item replaced by nothing, then deleted
    engine.write("o1", [], replace_items=["home"])
    assert engine.counts("o1") == {TEXT: 5}
    assert engine.delete_items("o1", ["office", "nope"]) == 4
    assert engine.counts("o1") == {TEXT: 1}
    engine.drop("o1")
    assert engine.counts("o1") == {}


def test_hybrid_beats_either_list_alone(lance, tmp_path):
    searcher = Searcher(build(lance, tmp_path), embed_text=fake_minilm)
    score = {
        mode: sum(found(top1(searcher, "o1", q, mode), item, seg) for q, item, seg in QUERIES)
        for mode in ("text", "vector", "hybrid")
    }
    assert score["hybrid"] > score["text"] and score["hybrid"] > score["vector"], score
    assert score["hybrid"] == len(QUERIES), score


def test_no_cross_owner_hit(lance, tmp_path):
    engine = build(lance, tmp_path, "alice")
    build(lance, tmp_path, "bob")
    searcher = Searcher(engine, embed_text=fake_minilm)
    for mode in ("text", "vector", "hybrid"):
        out = searcher.search({"owner_id": "bob", "text": "ferry leaves noon", "mode": mode, "k": 50})
        assert out["hits"] and {h["owner_id"] for h in out["hits"]} == {"bob"}
    with pytest.raises(NotFound):
        searcher.search({"owner_id": "carol", "text": "ferry"})
    assert not (tmp_path / "search" / VERSION / "carol").exists()  # a read never makes a folder


def clustered(n, dims, seed=0, centres=8, spread=0.15):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dims))
    v = c[rng.integers(0, centres, n)] + spread * rng.normal(size=(n, dims))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_frames_persons_and_optimize_keeps_results(lance, tmp_path):
    settings = SearchSettings(ann_min_rows=512, cleanup_older_than_s=1, max_frames_per_item=1000)
    engine = build(lance, tmp_path, settings=settings)
    frames = clustered(1 + 700, 512, seed=1)
    rows = item_rows(
        "o1", "film", ItemArtifacts(video_clip=frames, duration_s=700.0), fake_minilm, settings
    ).rows
    engine.write("o1", rows[:400], replace_items=["film"])
    engine.write("o1", rows[400:])  # a second fragment
    engine.write("o1", person_rows("o1", "alice", frames[123]))
    assert engine.counts("o1") == {TEXT: 12, VISUAL: 701, "persons": 1}
    np.testing.assert_allclose(engine.person_vector("o1", "alice"), frames[123], atol=1e-6)
    assert engine.person_vector("o1", "bob") is None
    searcher = Searcher(engine, embed_text=fake_minilm, settings=settings)
    before = searcher.search({"owner_id": "o1", "person": "alice", "k": 3})
    assert before["hits"][0]["item_id"] == "film"
    assert (
        before["hits"][0]["start_s"] <= 122.5 <= before["hits"][0]["end_s"]
    )  # frame 123 of 700 at 0.5 s + 1 s each
    queries = [frames[i] for i in (5, 250, 600)]
    exact = [[h.id for h in engine.vector_search("o1", VISUAL, q, k=10)] for q in queries]
    text_before = [h.id for h in engine.text_search("o1", "invoice", k=5)]

    report = engine.optimize("o1")
    assert report[VISUAL]["built"] == ["IVF_PQ"] and report[VISUAL]["rows"] == 701
    kinds = {str(i.index_type) for i in engine._table("o1", VISUAL).list_indices()}
    assert kinds == {"IvfPq", "BTree"}, kinds
    assert "IVFPQ" in engine._indexed("o1", VISUAL)
    stats = engine._table("o1", VISUAL).stats()
    assert stats["fragment_stats"]["num_fragments"] == 1  # compacted
    after = searcher.search({"owner_id": "o1", "person": "alice", "k": 3})
    assert after["hits"][0] == before["hits"][0] | {"score": after["hits"][0]["score"]}
    ann = [[h.id for h in engine.vector_search("o1", VISUAL, q, k=10)] for q in queries]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ann, exact, strict=True)])
    assert recall >= 0.9, recall
    assert [h.id for h in engine.text_search("o1", "invoice", k=5)] == text_before
    assert engine.optimize("o1")[VISUAL]["built"] == []  # idempotent
    # a fresh process (a cold Lambda) sees the indexes too
    cold = lance.LanceSearch(str(tmp_path), VERSION, settings=settings)
    assert [h.id for h in cold.vector_search("o1", VISUAL, queries[0], k=10)] == ann[0]


def test_odd_text_queries_do_not_break_bm25(lance, tmp_path):
    engine = build(lance, tmp_path)
    for q in ['ferry AND "noon', "a:b (c) ~ * ? \\", "'; DROP TABLE text; --", "ünïcödé ferry", "x" * 512]:
        engine.text_search("o1", q, k=5)


def test_lancedb_is_the_pinned_release(lance):
    assert lance.lancedb.__version__ == "0.41.0"


def test_the_same_engine_on_moto_s3(lance):
    """s3:// with storage options (the local stack's S3 now, AWS later): write, replace, query, optimize,
    under search/{spec_version}/{owner_id}/ in the media bucket."""
    import boto3

    from shared.dev.localstack import REGION, MotoServer
    from shared.search.rows import image_rows

    with MotoServer(in_process=True) as moto:
        creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        s3 = boto3.client("s3", endpoint_url=moto.endpoint, region_name=REGION, **creds)
        s3.create_bucket(Bucket="search-media")
        opts = {"aws_endpoint": moto.endpoint, "allow_http": "true", "aws_region": REGION, **creds}
        engine = lance.LanceSearch("s3://search-media", VERSION, storage_options=opts)
        v = clustered(2, 512, seed=3)
        engine.write(
            "o1",
            image_rows("o1", "img1", v[0]) + image_rows("o1", "img2", v[1]),
            replace_items=["img1", "img2"],
        )
        engine.write("o1", image_rows("o1", "img1", v[1]), replace_items=["img1"])  # replaced in place
        assert engine.counts("o1") == {VISUAL: 2} and engine.counts("o2") == {}
        hits = engine.vector_search("o1", VISUAL, v[1], k=2)  # both now hold v[1]
        assert {h.item_id for h in hits} == {"img1", "img2"} and min(h.score for h in hits) > 0.999
        assert engine.optimize("o1")[VISUAL]["rows"] == 2
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="search-media")["Contents"]]
        assert keys and all(k.startswith(f"search/{VERSION}/o1/visual.lance/") for k in keys)
