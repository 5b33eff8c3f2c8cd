"""Search benchmark (issue 21): quality on a labelled corpus, speed at 10k / 100k / 1M rows, cold start, cost.

    .venv/bin/python bench/bench_search.py                       # quality + speed at 10k, 100k + cold start
    .venv/bin/python bench/bench_search.py --skip-quality --sizes 10000,100000,1000000 --work DIR
    options: --s3-sizes 10000,100000 (of --sizes, also on moto's S3; '' for none) --queries 200
             --model-dir DIR (dev models, MiniLM; default <repo>/.models) --bench-models DIR (default
             <repo>/.models/bench-search: MiniLM + the full-size CLIP text tower, built once, minutes)
             --skip-quality --skip-speed --skip-cold --work DIR (keeps and reuses built tables) --json F

(a) Quality. A labelled corpus built here: 24 items ("videos"), each a transcript of ~30 Whisper-like
    segments (3-6 s each) of natural filler sentences from a small grammar, with the labelled
    sentences placed at known times. The transcripts are built directly (no speech synthesis, no
    Whisper: that is the pipeline's bench, bench_whisper.py), windowed by shared.search.rows like the
    pipeline will, and embedded with the REAL MiniLM (ONNX, shared.models.minilm_onnx). Queries:
    paraphrases of the labelled sentences (few or no words in common) and exact-term queries (a name,
    a code, a number: what a user types when they remember one word). For text-only (BM25),
    vector-only (MiniLM) and hybrid (RRF of both): recall@1 and recall@5 (the right item among the
    first 1 / 5 moments) and moment accuracy (the first hit of the right item has a span overlapping
    the labelled sentence's time), per query kind and overall.
(b) Speed, per size N: one owner's tables as the pipeline and optimize() leave them (written in
    250k-row adds, compacted, FTS, the ANN index per table + BTREE): N text rows whose vectors are REAL
    MiniLM vectors of 4,096 grammar sentences + noise (each row says its sentence), and N visual rows
    (512-d) drawn around 256 topics x 16 sub-topics (uniform random vectors defeat any ANN index).
    Queried through the search function's own path: shared.search.api.encoders (the real MiniLM and a
    FULL-SIZE CLIP ViT-B-32 text tower, random weights, built by open_clip and exported by
    shared.models.clip_text_export: the real cost per query), api.query_side (Indexes, Searchers) and
    SearchService (presigned links; only the ledger's reads are an in-memory stand-in). The CLIP
    tower's output is swapped for a vector near the visual centres (BenchClip: its time stays real).
    Per query, in turn, on the same tables: LanceDB's bare vector query (k=10, nprobes and re-ranking
    as the engine's), each encoder, BM25, the whole hybrid query with the lists one after another and
    side by side. ANN recall@10 against exact (numpy) search, and the recall of a list's own k=50
    query. On a local folder, and on moto's S3 (the tables uploaded file for file; moto's server in its
    own process, counting the S3 requests each query makes). Cost per 1M queries on Lambda from the
    measured times (template.yaml's SearchMemorySize, the published prices in PRICES).
(c) Cold start: a fresh interpreter doing the search function's init (shared.search.api.service_from_env:
    LanceDB, both encoders loaded and checked against their probes, clients) and a first hybrid query.

Prints tables (markdown) with the command, the date and the machine. Numbers from this machine only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shared.search.engine import TEXT, TRANSCRIPT_WINDOW, VISUAL, Row  # noqa: E402
from shared.search.query import Searcher  # noqa: E402
from shared.search.rows import ItemArtifacts, item_rows  # noqa: E402
from shared.search.settings import SearchSettings  # noqa: E402

VERSION = "bench-0000000000"

# ---- (a) the labelled corpus ----------------------------------------------------------------------
# (sentence spoken, paraphrase query, exact-term query or None)
LABELLED = [
    (
        "The ferry to the island leaves at a quarter past nine every morning.",
        "what time does the boat depart for the isle",
        "ferry island",
    ),
    (
        "Preheat the oven to two hundred degrees before you put the bread in.",
        "how hot should I make the stove for baking a loaf",
        None,
    ),
    (
        "Our quarterly revenue grew by twelve percent compared to last year.",
        "sales went up this quarter versus the previous year",
        "quarterly revenue",
    ),
    (
        "Never leave a lithium battery charging overnight on your bed.",
        "is it dangerous to charge accumulators while sleeping",
        "lithium",
    ),
    (
        "The museum is closed on Mondays for cleaning and repairs.",
        "which day of the week can't I visit the gallery",
        "museum Mondays",
    ),
    (
        "Water your tomato plants early in the morning so the leaves dry by noon.",
        "best time of day to irrigate vegetables",
        "tomato",
    ),
    (
        "Professor Okonkwo discovered the comet while studying old photographic plates.",
        "who found the comet in archival images",
        "Okonkwo",
    ),
    (
        "If the smoke alarm beeps every minute, the battery needs replacing.",
        "why does my fire detector keep chirping",
        None,
    ),
    (
        "The bridge was built in eighteen eighty-three and took fourteen years.",
        "when was the crossing over the river constructed",
        "1883 bridge",
    ),
    (
        "Please submit your expense reports by the last Friday of the month.",
        "deadline for handing in reimbursement forms",
        "expense reports",
    ),
    (
        "Our dog Biscuit learned to open the fridge door by himself.",
        "the pet figured out how to get into the refrigerator",
        "Biscuit",
    ),
    (
        "Stretch your hamstrings gently after running to avoid injuries.",
        "how to prevent getting hurt after a jog",
        "hamstrings",
    ),
    (
        "The password must contain at least one digit and one symbol.",
        "what are the rules for a valid login secret",
        None,
    ),
    (
        "Invoice number 88-4127 was paid twice by mistake.",
        "a bill got settled two times accidentally",
        "88-4127",
    ),
    (
        "The northern lights are best seen far from city lights in winter.",
        "where to watch the aurora borealis",
        "northern lights",
    ),
    (
        "Add a pinch of salt to the caramel to balance the sweetness.",
        "how to make the toffee sauce less sugary",
        "caramel",
    ),
    (
        "The train to Valparaiso was cancelled because of the strike.",
        "the rail journey didn't run due to workers walking out",
        "Valparaiso",
    ),
    (
        "Back up your photos to an external drive at least once a week.",
        "how often should I copy my pictures somewhere safe",
        None,
    ),
    (
        "The violin solo in the second movement was played by Mireille Tanaka.",
        "who performed the fiddle part in the middle of the symphony",
        "Mireille Tanaka",
    ),
    (
        "Bees communicate the direction of flowers through a waggle dance.",
        "how do insects tell the hive where nectar is",
        "waggle dance",
    ),
    (
        "Turn off the main water valve before you replace the kitchen tap.",
        "first step when swapping a faucet",
        None,
    ),
    (
        "The elevator on the east side has been out of order since Tuesday.",
        "the lift in one wing is broken",
        "elevator",
    ),
    (
        "Children under twelve travel for free on weekends.",
        "kids ride without paying on saturday and sunday",
        None,
    ),
    (
        "The recipe calls for three eggs, but two work if you add yoghurt.",
        "can I use fewer eggs in this dish",
        "yoghurt",
    ),
    (
        "Firmware version 4.2.17 fixes the overheating problem in the router.",
        "which update stops the modem getting too hot",
        "4.2.17",
    ),
    (
        "The glacier has retreated almost a kilometre in the last thirty years.",
        "the ice field shrank a lot over three decades",
        "glacier",
    ),
    (
        "Remember to rotate your tyres every ten thousand kilometres.",
        "how often should wheels be swapped around on a car",
        "tyres",
    ),
    (
        "Our new office in Lisbon opens on the first of March.",
        "when does the Portuguese branch start working",
        "Lisbon",
    ),
    (
        "Sourdough needs at least twelve hours to rise in a cool kitchen.",
        "how long does a fermented loaf take to prove",
        "sourdough",
    ),
    (
        "The goalkeeper saved two penalties in the final minutes of the match.",
        "the keeper stopped a pair of spot kicks late in the game",
        "goalkeeper penalties",
    ),
    (
        "Keep the seedlings under a lamp for sixteen hours a day.",
        "how much artificial light do young plants need",
        "seedlings",
    ),
    (
        "Mr Abernathy asked for the meeting to be moved to Thursday afternoon.",
        "someone wanted to reschedule the appointment to later in the week",
        "Abernathy",
    ),
    (
        "Whales can hear each other's songs across hundreds of kilometres.",
        "how far do sounds of large marine mammals travel",
        "whales",
    ),
    (
        "The warranty does not cover damage caused by dropping the phone.",
        "is a broken handset from a fall repaired for free",
        "warranty",
    ),
    (
        "Climbers start from base camp at two in the morning to avoid avalanches.",
        "why do mountaineers set off in the middle of the night",
        "base camp",
    ),
    (
        "Espresso is brewed by forcing hot water through finely ground beans.",
        "how is strong italian coffee made",
        "espresso",
    ),
]

SUBJECTS = [
    "my neighbour",
    "the manager",
    "our team",
    "the teacher",
    "a friend of mine",
    "the new intern",
    "the council",
    "my sister",
    "the committee",
    "everyone in the room",
    "the visitors",
    "the driver",
]
VERBS = [
    "talked about",
    "complained about",
    "asked about",
    "wrote a note about",
    "laughed at",
    "was thinking about",
    "decided to postpone",
    "kept mentioning",
    "forgot about",
    "argued over",
]
OBJECTS = [
    "the schedule",
    "the weather",
    "the new carpet",
    "the parking spaces",
    "the budget",
    "the holiday plans",
    "the broken printer",
    "the lunch order",
    "the football results",
    "the paint colour",
    "the garden fence",
    "the music in the hall",
    "the delivery",
    "the old photographs",
    "the noise upstairs",
    "the morning ferry",
    "the bread",
    "the battery",
    "the train times",
    "the office move",
]
TAILS = ["yesterday", "for a while", "again this week", "during the break", "after the call", "before dinner",
         "on the way home", "all afternoon", "without much luck", "at some length"]  # fmt: skip


def filler(rng: random.Random) -> str:
    s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}."
    return s[0].upper() + s[1:]


def build_corpus(seed: int = 0, items: int = 24, segments: int = 30):
    """{item: transcript doc}, [(kind, query, item, start, end)]."""
    rng = random.Random(seed)
    docs: dict[str, dict] = {}
    slots = [(f"video{n:02d}", i) for n in range(items) for i in range(segments)]
    rng.shuffle(slots)
    placed = {slot: LABELLED[n] for n, slot in enumerate(slots[: len(LABELLED)])}
    labels = []
    for n in range(items):
        item = f"video{n:02d}"
        t, segs = 0.0, []
        for i in range(segments):
            length = rng.uniform(3.0, 6.0)
            lab = placed.get((item, i))
            text = lab[0] if lab else filler(rng)
            segs.append({"start": round(t, 2), "end": round(t + length, 2), "text": " " + text})
            if lab:
                labels.append(("paraphrase", lab[1], item, t, t + length))
                if lab[2]:
                    labels.append(("exact", lab[2], item, t, t + length))
            t += length + rng.uniform(0.1, 0.8)
        docs[item] = {
            "text": " ".join(s["text"] for s in segs),
            "segments": segs,
            "language": "en",
            "duration": t,
        }
    return docs, labels


def quality(minilm, work: Path) -> list[dict]:
    from shared.search.lance import LanceSearch

    docs, labels = build_corpus()
    engine = LanceSearch(str(work / "quality"), VERSION)
    rows: list[Row] = []
    for item, doc in docs.items():
        rows += item_rows("q", item, ItemArtifacts(transcript=doc), minilm.embed).rows
    engine.write("q", rows, replace_items=list(docs))
    searcher = Searcher(engine, embed_text=minilm.embed)
    out = []
    for mode in ("text", "vector", "hybrid"):
        per: dict[str, list[tuple[int, int, int]]] = {"paraphrase": [], "exact": []}
        for kind, query, item, start, end in labels:
            hits = searcher.search({"owner_id": "q", "text": query, "mode": mode, "k": 5})["hits"]
            items = [h["item_id"] for h in hits]
            first = next((h for h in hits if h["item_id"] == item), None)
            moment = (
                first is not None and first["start_s"] < end and first["end_s"] > start and items[0] == item
            )
            per[kind].append((int(items[:1] == [item]), int(item in items), int(moment)))
        for kind, res in [*per.items(), ("all", per["paraphrase"] + per["exact"])]:
            a = np.array(res)
            out.append({"mode": mode, "queries": kind, "n": len(res), "recall@1": a[:, 0].mean(),
                        "recall@5": a[:, 1].mean(), "moment@1": a[:, 2].mean()})  # fmt: skip
    out.append({"windows": len(rows), "items": len(docs)})
    return out


# ---- (b) speed ------------------------------------------------------------------------------------
FULL_CLIP = "clip-vit-b-32-text"  # the registry name the search function loads from MODEL_DIR


def full_clip_text(model_dir: Path) -> Path:
    """`model_dir/clip-vit-b-32-text`: a FULL-SIZE ViT-B-32 text tower (12 layers, width 512, 77 tokens,
    63 M parameters: the real tower's architecture, so the real cost per query) with random weights (no
    weights can be downloaded here), built by open_clip's own constructor (`create_model("ViT-B-32",
    pretrained=None)`) and exported by the production exporter (shared.models.clip_text_export, its
    parity checks included). Built once (minutes), then reused."""
    import json as _json

    from shared.models import registry

    out = registry.model_path(model_dir, FULL_CLIP)
    stamp = "bench-full-vit-b-32-1"
    if (out / "onnx" / "text.onnx").is_file() and registry.read_manifest(out).get("dev_source") == stamp:
        return out
    import open_clip
    import torch
    from safetensors.torch import save_file

    from shared.models.clip_text_export import export_clip_text

    torch.manual_seed(0)
    ckpt = model_dir / ".clip-vit-b-32-fullsize-checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt / "open_clip_model.safetensors")
    )
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]  # OpenAI's
    cfg = {"model_cfg": open_clip.get_model_config("ViT-B-32"), "preprocess_cfg": {"mean": mean, "std": std}}
    (ckpt / "open_clip_config.json").write_text(_json.dumps(cfg, indent=2) + "\n")
    registry.write_manifest(ckpt, registry.get("clip-vit-b-32"), random=True, dev_source=stamp)
    export_clip_text(ckpt, out, dev_source=stamp)
    shutil.rmtree(ckpt, ignore_errors=True)
    return out


def centres(rng: np.random.Generator, dims: int) -> np.ndarray:
    """256 topics x 16 sub-topics: sub-centre = topic + 0.5 x noise (the noise's norm ~0.5x the topic's)."""
    topics = rng.normal(size=(256, dims)).astype(np.float32)
    return (topics[:, None, :] + 0.5 * rng.normal(size=(256, 16, dims)).astype(np.float32)).reshape(-1, dims)


def clustered(rng: np.random.Generator, subs: np.ndarray, n: int, spread: float = 0.35) -> np.ndarray:
    """Rows around random sub-centres (cosine ~0.92 to their sub-topic's rows, ~0.75 to their topic's,
    ~0.1 to the rest): structure at two scales, like text or image embeddings, unlike uniform noise."""
    v = subs[rng.integers(0, len(subs), n)] + spread * rng.normal(size=(n, subs.shape[1])).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs) * 1000.0, p))


OWNER = "o"
BUCKET = "bench-search"
POOL = 4096  # distinct sentences of the text rows (the grammar has 24,000); queries are other ones
CHUNK = 250_000  # rows per `add`


def grammar() -> list[str]:
    """Every sentence of the filler grammar (24,000), in a fixed shuffled order."""
    out = [f"{s} {v} {o} {t}." for s in SUBJECTS for v in VERBS for o in OBJECTS for t in TAILS]
    random.Random(7).shuffle(out)
    return [s[0].upper() + s[1:] for s in out]


class Corpus:
    """What every size shares: the text rows' sentences and their REAL MiniLM vectors (the text rows are
    those vectors + noise: real MiniLM geometry), the visual table's cluster centres (256 topics x 16
    sub-topics), and the query texts (grammar sentences that no row says word for word)."""

    def __init__(self, minilm, queries: int) -> None:
        sentences = grammar()
        self.pool = sentences[:POOL]
        self.pool_vectors = np.asarray(minilm.embed(self.pool), dtype=np.float32)
        self.queries = [s.rstrip(".") for s in sentences[POOL : POOL + queries]]
        self.c512 = centres(np.random.default_rng(0), 512)


def text_vectors(rng: np.random.Generator, corpus: Corpus, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(sentence index, vector) per row: the sentence's MiniLM vector + noise (cosine ~0.94 to it)."""
    idx = rng.integers(0, len(corpus.pool), n)
    v = corpus.pool_vectors[idx] + (0.35 / np.sqrt(384)) * rng.normal(size=(n, 384)).astype(np.float32)
    return idx, (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


class BenchClip:
    """The search function's CLIP encoder at its real cost: the full-size tower embeds the query (the
    time is real); its output (random weights put every text in one spot) is then swapped for a vector
    near the visual rows' centres, fixed by the text, so the clip list finds rows as a trained one would."""

    def __init__(self, tower, c512: np.ndarray) -> None:
        self.tower, self.c512 = tower, c512

    def vector(self, text: str) -> np.ndarray:
        return clustered(np.random.default_rng(zlib.crc32(text.encode())), self.c512, 1)[0]

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.tower.embed(texts)
        return np.stack([self.vector(t) for t in texts])


def _table(space: str, ids, items, texts, vecs: np.ndarray):
    import pyarrow as pa

    from shared.search.lance import schema

    n, dims = vecs.shape
    kind = TRANSCRIPT_WINDOW if space == TEXT else "frame"
    start = pa.array((np.arange(n) % 30 * 10.0).astype(np.float64))
    cols = {
        "id": pa.array(ids),
        "kind": pa.array([kind] * n),
        "owner_id": pa.array([OWNER] * n),
        "item_id": pa.array(items),
        "channel": pa.array(["transcript" if space == TEXT else "video_clip"] * n),
        "start_s": start,
        "end_s": pa.compute.add(start, 10.0),
        "text": pa.array(texts),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), dims),
    }
    return pa.table(cols, schema=schema(space))


def rows(n: int, corpus: Corpus) -> dict[str, tuple[list[str], np.ndarray, list[str]]]:
    """space -> (ids, vectors, texts), deterministic in n (a rebuild or a reuse sees the same rows)."""
    rng = np.random.default_rng(n)
    idx, tv = text_vectors(rng, corpus, n)
    vv = clustered(rng, corpus.c512, n)
    return {
        TEXT: ([f"i{j // 30}:t:{j}" for j in range(n)], tv, [corpus.pool[i] for i in idx]),
        VISUAL: ([f"i{j // 30}:v:{j}" for j in range(n)], vv, [""] * n),
    }


def build(n: int, corpus: Corpus, folder: Path, settings: SearchSettings) -> dict:
    """The owner's tables in `folder` (LanceSearch's layout): written in 250k-row adds, compacted, the
    FTS index, the ANN index per table (+ BTREE on item_id), as optimize() leaves them. Kept in `folder`
    with build.json: a rerun with the same --work reuses them."""
    from shared.search.lance import LanceSearch

    done = folder / "build.json"
    if done.is_file():
        got = json.loads(done.read_text())
        if got.get("rows") == n and got.get("ann") == settings.ann_index:
            return got | {"reused": True}
    shutil.rmtree(folder, ignore_errors=True)
    engine = LanceSearch(str(folder), VERSION, settings=settings)
    res: dict = {"rows": n, "ann": settings.ann_index}
    write_s = 0.0
    for space, (ids, vecs, texts) in rows(n, corpus).items():
        tbl = engine._table(OWNER, space, create=True)
        for lo in range(0, n, CHUNK):
            hi = min(n, lo + CHUNK)
            data = _table(space, ids[lo:hi], [i.split(":")[0] for i in ids[lo:hi]], texts[lo:hi], vecs[lo:hi])
            t0 = time.perf_counter()
            tbl.add(data)
            write_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        tbl.optimize()
        res[f"{space}_compact_s"] = time.perf_counter() - t0
        if space == TEXT:
            t0 = time.perf_counter()
            engine._create_fts(OWNER, tbl)
            res["fts_build_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        engine.build_vector_index(OWNER, space)
        res[f"{space}_ann_build_s"] = time.perf_counter() - t0
    res["write_rows_per_s"] = 2 * n / write_s
    res["ann_rows_per_s"] = n / res[f"{VISUAL}_ann_build_s"]
    done.write_text(json.dumps(res))
    return res


def exact_top(vecs: np.ndarray, ids: list[str], qs: np.ndarray, k: int) -> list[list[str]]:
    """Exact cosine top-k per query, best first (numpy, in 100k-row blocks)."""
    best_s = np.full((len(qs), 0), -np.inf, np.float32)
    best_i = np.zeros((len(qs), 0), np.int64)
    for lo in range(0, len(vecs), 100_000):
        s = qs @ vecs[lo : lo + 100_000].T
        top = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], axis=1)
        best_i = np.concatenate([best_i, top + lo], axis=1)
        keep = np.argsort(-best_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return [[ids[j] for j in row] for row in best_i]


class BenchDirectory:
    """The service's ledger reads, in memory (DynamoDB is not in these timings): every item a video."""

    def current_version(self, owner_id: str) -> str | None:
        return VERSION

    def media(self, owner_id: str, item_ids):
        from shared.search.service import Media

        return {i: Media(f"uploads/{owner_id}/{i}/source.mp4", "video") for i in item_ids}


def services(env: dict[str, str], minilm, clip: BenchClip):
    """(parallel, sequential) SearchService as shared.search.api builds the search function's: its
    query_side (Indexes, Searchers) over SEARCH_INDEX_URI, the real encoders, presigned links; only the
    ledger is a stand-in (BenchDirectory)."""
    from shared.aws.clients import client
    from shared.aws.storage import Storage
    from shared.search.api import SearchApiSettings, query_side
    from shared.search.service import SearchService

    api = SearchApiSettings.from_env(env)
    storage = Storage(client("s3", env), api.bucket)
    out = []
    for parallel in (True, False):
        searchers = query_side(
            api, env, embed_text=minilm.embed, clip_text=clip, search=SearchSettings(parallel_lists=parallel)
        )
        out.append(
            SearchService(searchers, BenchDirectory(), storage.presign_get, url_expires_s=api.url_expires_s)
        )
    return out


def measure(
    n: int, corpus: Corpus, env: dict[str, str], minilm, clip: BenchClip, s3=None, queries: int | None = None
) -> dict:
    """Warm timings over the owner's tables where env's SEARCH_INDEX_URI points, every call per query
    in turn (same tables, same moment): LanceDB's bare vector query (k=10, the engine's nprobes, refine
    and columns), the two encoders, BM25 alone, the whole hybrid query through SearchService with the lists
    one after another and side by side. Recall@10 of the bare ANN query against exact search."""
    from shared.search.lance import COLUMNS

    par, seq = services(env, minilm, clip)
    engine = par.searchers(VERSION).engine
    st = engine.settings
    vis, txt = engine._table(OWNER, VISUAL), engine._table(OWNER, TEXT)

    def bare(tbl, q):
        return (
            tbl.search(q, vector_column_name="vector").distance_type("cosine").limit(10)
            .nprobes(st.ann_nprobes).refine_factor(engine.refine_factor(10)).select([*COLUMNS, "_distance"])
            .to_arrow()
        )  # fmt: skip

    texts = corpus.queries[:queries]
    q_vis = np.stack([clip.vector(t) for t in texts])
    q_txt = np.asarray(minilm.embed(texts), dtype=np.float32)
    res: dict = {"rows": n, "queries": len(texts)}
    data = rows(n, corpus) if s3 is None else {}  # S3 holds the same files: the same answers
    for space, tbl, qs in ((VISUAL, vis, q_vis), (TEXT, txt, q_txt)):
        if space not in data:
            continue
        ids, vecs, _ = data[space]
        exact = exact_top(vecs, ids, qs, st.candidates)
        top10 = [set(e[:10]) for e in exact]
        got = [set(bare(tbl, q).column("id").to_pylist()) for q in qs]
        res[f"recall@10_{space}"] = float(np.mean([len(a & e) / 10 for a, e in zip(got, top10, strict=True)]))
        # a list's own query: k = candidates (50), as the engine runs it
        got = [{h.id for h in engine.vector_search(OWNER, space, q, k=st.candidates)} for q in qs]
        k = st.candidates
        res[f"list_recall@{k}_{space}"] = float(
            np.mean([len(a & set(e)) / k for a, e in zip(got, exact, strict=True)])
        )
    del data
    calls = {
        "bare_vector": lambda i: bare(vis, q_vis[i]),
        "minilm_embed": lambda i: minilm.embed([texts[i]]),
        "clip_embed": lambda i: clip([texts[i]]),
        "bm25": lambda i: engine.text_search(OWNER, texts[i], k=st.candidates),
        "hybrid_sequential": lambda i: seq.search({"owner_id": OWNER, "text": texts[i]}),
        "hybrid": lambda i: par.search({"owner_id": OWNER, "text": texts[i]}),
    }
    for i in range(3):  # warm up: handles open, indexes cached
        for fn in calls.values():
            fn(i)
    timed: dict[str, list[float]] = {name: [] for name in calls}
    gets: dict[str, int] = {}
    hits = []
    for i in range(len(texts)):
        for name, fn in calls.items():
            before = s3.counts() if s3 and name == "hybrid" else None
            t0 = time.perf_counter()
            out = fn(i)
            timed[name].append(time.perf_counter() - t0)
            if before is not None:
                for k, v in s3.counts().items():
                    gets[k] = gets.get(k, 0) + v - before.get(k, 0)
            if name == "hybrid":
                hits.append(len(out["hits"]))
    for name, xs in timed.items():
        res[f"{name}_p50"], res[f"{name}_p99"] = pct(xs, 50), pct(xs, 99)
        res[f"{name}_mean"] = float(np.mean(xs) * 1000.0)
    res["hybrid_hits_mean"] = float(np.mean(hits))
    if s3:
        res["s3_requests_per_query"] = {k: v / len(texts) for k, v in sorted(gets.items()) if v}
    return res


# ---- moto's S3, with a request counter --------------------------------------------------------------
COUNTING_MOTO = """
import json, sys, threading
sys.path.insert(0, sys.argv[1])
from cheroot.wsgi import Server
from shared.dev.moto_server import moto_app
app, lock, counts = moto_app(), threading.Lock(), {}
def counted(environ, start_response):
    path, query = environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
    if path == "/_bench/counts":
        with lock:
            body = json.dumps(counts).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    method = environ["REQUEST_METHOD"]
    if path.startswith("/" + sys.argv[3]):
        key = path.count("/") > 1 and path.split("/", 2)[2]
        kind = "LIST" if method == "GET" and ("list-type" in query or not key) else method
        with lock:
            counts[kind] = counts.get(kind, 0) + 1
    return app(environ, start_response)
server = Server(("127.0.0.1", int(sys.argv[2])), counted, numthreads=128, server_name="moto")
server.prepare()
print("ready", flush=True)
server.serve()
"""


class CountingS3:
    """moto's server (shared.dev.moto_server's app, a separate process, as the local stack runs it) with
    a count of the S3 requests on the bench bucket by kind (GET, HEAD, LIST, PUT, ...). 128 server
    threads: cheroot ties a thread to each kept-alive connection, and LanceDB keeps more than the local
    stack's 16 open (with 16, requests waited for idle connections to time out: seconds a query)."""

    def __enter__(self) -> CountingS3:
        from shared.dev.localstack import free_port

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", COUNTING_MOTO, str(REPO), str(self.port), BUCKET],
            stdout=subprocess.PIPE,
            text=True,
        )
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("moto's server did not start")
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing"}  # fmt: skip

    def counts(self) -> dict[str, int]:
        import urllib.request

        with urllib.request.urlopen(f"{self.endpoint}/_bench/counts", timeout=10) as r:
            return json.loads(r.read())

    def upload(self, folder: Path) -> float:
        """The owner's tables, file for file, to s3://bench-search/ (the same keys under search/)."""
        from shared.aws.clients import client

        s3 = client("s3", self.env())
        if BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
            s3.create_bucket(Bucket=BUCKET)
        old = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for page in old:
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
        t0 = time.perf_counter()
        for path in sorted((folder / "search").rglob("*")):
            if path.is_file():
                s3.upload_file(str(path), BUCKET, str(path.relative_to(folder)))
        return time.perf_counter() - t0


def speed(
    sizes: list[int],
    s3_sizes: list[int],
    corpus: Corpus,
    minilm,
    clip: BenchClip,
    work: Path,
    s3_queries: int,
    partial: Path | None = None,
    local: bool = True,
) -> list:
    settings = SearchSettings()
    out = []
    base_env = {"MEDIA_BUCKET": BUCKET, "LEDGER_TABLE": "bench", "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # fmt: skip
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(CountingS3()) if s3_sizes else None
        for n in sizes:
            folder = work / f"rows{n}"
            built = build(n, corpus, folder, settings)
            print(f"# {n:,} rows built: {built}", file=sys.stderr, flush=True)
            got = {}
            if local or not s3:
                got = measure(n, corpus, {**base_env, "SEARCH_INDEX_URI": str(folder)}, minilm, clip)
                out.append({"storage": "local folder", **built, **got})
                print(f"# {n:,} rows, local folder: done", file=sys.stderr, flush=True)
                if partial:
                    partial.write_text(json.dumps(out, indent=2, default=float))
            if s3 and n in s3_sizes:
                upload_s = s3.upload(folder)
                env = {**base_env, **s3.env(), "SEARCH_INDEX_URI": f"s3://{BUCKET}"}
                recall = {k: v for k, v in got.items() if "recall" in k}
                got = measure(n, corpus, env, minilm, clip, s3=s3, queries=s3_queries)
                out.append({"storage": "S3 (moto)", **built, "upload_s": upload_s, **recall, **got})
                print(f"# {n:,} rows, S3: done", file=sys.stderr, flush=True)
                if partial:
                    partial.write_text(json.dumps(out, indent=2, default=float))
    return out


# ---- (c) cold start ---------------------------------------------------------------------------------
COLD = """
import time, sys, os
t0 = time.perf_counter()
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")  # as handlers/aws_lambda/search.py
from shared.search import api
t1 = time.perf_counter()
service = api.service_from_env(os.environ)
t2 = time.perf_counter()
out = service.searchers(sys.argv[1]).search({"owner_id": "o", "text": "the manager talked about the ferry"})
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, len(out["hits"]))
"""


def cold_start(model_dir: Path, index: Path, runs: int = 3) -> dict:
    """A fresh interpreter doing what the search function's init does (handlers/aws_lambda/search.py ->
    shared.search.api.service_from_env: settings, LanceDB, both encoders loaded and checked, clients)
    and its first query (the owner's tables opened, a hybrid query; the owner's version is given, not
    read from the ledger: DynamoDB is not here). Median of `runs`; total = process start to answer."""
    env = {**os.environ, "MODEL_DIR": str(model_dir), "SEARCH_INDEX_URI": str(index), "MEDIA_BUCKET": BUCKET,
           "LEDGER_TABLE": "bench", "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "PYTHONPATH": str(REPO)}  # fmt: skip
    got: dict[str, list[float]] = {"import_api_s": [], "init_s": [], "first_query_s": [], "total_s": []}
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", COLD, VERSION],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            check=True,
        )
        total = time.perf_counter() - t0
        a, b, c, _ = out.stdout.split()
        for k, v in zip(got, (float(a), float(b), float(c), total), strict=True):
            got[k].append(v)
    return {k: statistics.median(v) for k, v in got.items()}


# ---- report -----------------------------------------------------------------------------------------
def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} vCPU, Python {platform.python_version()}"


# Published on-demand prices, US East (N. Virginia), as listed on aws.amazon.com/lambda/pricing and
# aws.amazon.com/s3/pricing (S3 Standard) in 2025: x86_64 Lambda duration (first 6 billion GB-s a month)
# and requests; S3 GET/HEAD and LIST requests.
PRICES = {"lambda_gb_s": 0.0000166667, "lambda_request": 0.20 / 1e6, "GET": 0.0004 / 1000,
          "HEAD": 0.0004 / 1000, "LIST": 0.005 / 1000}  # fmt: skip


def search_memory_mb() -> int:
    """The SearchFunction's MemorySize: template.yaml's SearchMemorySize default."""
    text = (REPO / "template.yaml").read_text()
    m = re.search(r"SearchMemorySize:\s*\n\s*Type: Number\s*\n\s*Default: (\d+)", text)
    return int(m.group(1)) if m else 2048


def cost_per_million(ms: float, requests: dict[str, float] | None, memory_mb: int) -> float:
    """USD per 1M queries: Lambda duration at `ms` a query + the request fee + S3 requests a query."""
    lam = 1e6 * (ms / 1000.0 * memory_mb / 1024.0 * PRICES["lambda_gb_s"] + PRICES["lambda_request"])
    s3 = 1e6 * sum(PRICES.get(k, 0.0) * v for k, v in (requests or {}).items())
    return lam + s3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="rows per table, on a local folder")
    ap.add_argument("--s3-sizes", default="10000,100000", help="of --sizes, also on moto's S3 ('' for none)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--s3-queries", type=int, default=50, help="timed queries on S3 (moto serves ~20 GETs/s)")
    ap.add_argument("--model-dir", default=None, help="the dev models (MiniLM); default <repo>/.models")
    ap.add_argument("--bench-models", default=None, help="default <repo>/.models/bench-search")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--s3-only", action="store_true", help="time the --s3-sizes on S3 only (no local rows)")
    ap.add_argument("--work", default=None, help="keep (and reuse) the built tables here")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import lancedb

    from shared.models.minilm_onnx import MiniLMOnnx

    if args.model_dir:
        model_dir = Path(args.model_dir)
    else:
        from shared.models.minilm_export import setup_dev_minilm
        from shared.settings import DEFAULT_MODEL_DIR

        model_dir = setup_dev_minilm(DEFAULT_MODEL_DIR)
    minilm_dir = model_dir if model_dir.name == "minilm-l6-v2" else model_dir / "minilm-l6-v2"
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_search_"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "command": " ".join(
            [".venv/bin/python bench/bench_search.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "lancedb": lancedb.__version__,
        "memory_mb": search_memory_mb(),
    }
    try:
        if not args.skip_quality:
            report["quality"] = quality(MiniLMOnnx.from_folder(minilm_dir), work)
        if not (args.skip_speed and args.skip_cold):
            from shared.search.api import encoders
            from shared.settings import TextSettings

            models = bench_models(Path(args.bench_models or REPO / ".models" / "bench-search"), minilm_dir)
            minilm, tower = encoders(TextSettings.from_env({"MODEL_DIR": str(models)}))
            corpus = Corpus(minilm, args.queries)
            report["threads"] = TextSettings.from_env({"MODEL_DIR": str(models)}).threads
        if not args.skip_speed:
            sizes = [int(x) for x in args.sizes.split(",") if x]
            s3_sizes = [int(x) for x in args.s3_sizes.split(",") if x]
            clip = BenchClip(tower, corpus.c512)
            partial = work / "speed.partial.json"
            report["speed"] = speed(
                sizes, s3_sizes, corpus, minilm, clip, work, args.s3_queries, partial, local=not args.s3_only
            )
        if not args.skip_cold:
            small = work / "rows10000"
            build(10_000, corpus, small, SearchSettings())
            report["cold_start"] = cold_start(models, small)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float))
    return 0


def bench_models(folder: Path, minilm_dir: Path) -> Path:
    """MODEL_DIR of the speed and cold-start parts: the real MiniLM (a link to the dev folder) and the
    full-size CLIP ViT-B-32 text tower (full_clip_text)."""
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "minilm-l6-v2"
    if not link.exists():
        link.symlink_to(minilm_dir.resolve())
    full_clip_text(folder)
    return folder


def _pair(s: dict, name: str) -> str:
    """'visual / text' of a recall (the local run's: S3 serves the same files)."""
    if f"{name}_visual" not in s:
        return "as local"
    return f"{s[name + '_visual']:.3f} / {s[name + '_text']:.3f}"


def _ms(s: dict, c: str) -> str:
    return f"{s[c + '_p50']:.1f} / {s[c + '_p99']:.1f}"


def print_report(r: dict) -> None:
    print(f"command: {r['command']}\ndate: {r['date']}\nmachine: {r['machine']}\nlancedb {r['lancedb']}\n")
    if "quality" in r:
        meta = r["quality"][-1]
        print(f"(a) quality: {meta['items']} items, {meta['windows']} transcript windows, real MiniLM\n")
        print("| mode | queries | n | recall@1 | recall@5 | moment@1 |\n|---|---|---|---|---|---|")
        for q in r["quality"][:-1]:
            cells = " | ".join(f"{q[c]:.2f}" for c in ("recall@1", "recall@5", "moment@1"))
            print(f"| {q['mode']} | {q['queries']} | {q['n']} | {cells} |")
        print()
    if r.get("speed"):
        d = SearchSettings()
        print(
            f"(b) speed: IVF_PQ (4-bit, dims/8 sub-vectors), nprobes {d.ann_nprobes}, the "
            f"{d.ann_refine_rows} nearest by code re-ranked exactly (k=10: refine_factor "
            f"{-(-d.ann_refine_rows // 10)}); warm, ms "
            f"p50 / p99; ONNX threads {r.get('threads')}\n"
        )
        print(
            "| rows/table | storage | write rows/s | ANN build s (visual / text) | visual rows/s | "
            "recall@10 (visual / text) | list recall@50 | bare vector | MiniLM embed | CLIP embed | BM25 | "
            "hybrid, lists in turn | hybrid | hybrid / bare (p50, p99) |"
        )
        print("|---:|---|---:|---:|---:|---:|---:|---|---|---|---|---|---|---:|")
        for s in r["speed"]:
            ratio = (f"{s['hybrid_p50'] / s['bare_vector_p50']:.1f}x, "
                     f"{s['hybrid_p99'] / s['bare_vector_p99']:.1f}x")  # fmt: skip
            print(
                f"| {s['rows']:,} | {s['storage']}, {s['queries']} queries | {s['write_rows_per_s']:,.0f} | "
                f"{s['visual_ann_build_s']:.1f} / {s['text_ann_build_s']:.1f} | {s['ann_rows_per_s']:,.0f} | "
                f"{_pair(s, 'recall@10')} | {_pair(s, 'list_recall@50')} | "
                + " | ".join(
                    _ms(s, c)
                    for c in (
                        "bare_vector",
                        "minilm_embed",
                        "clip_embed",
                        "bm25",
                        "hybrid_sequential",
                        "hybrid",
                    )
                )
                + f" | {ratio} |"
            )
        mem = r["memory_mb"]
        print(f"\n(d) cost per 1M hybrid queries on Lambda ({mem} MB, x86_64, us-east-1 prices as "
              "published: $0.0000166667 per GB-s, $0.20 per 1M requests; S3 GET/HEAD $0.0004 and LIST "
              "$0.005 per 1,000), from the mean and p99 times measured here\n")  # fmt: skip
        print(
            "| rows/table | storage | S3 requests / query | mean ms | USD / 1M (mean) | USD / 1M (at p99) |"
        )
        print("|---:|---|---|---:|---:|---:|")
        for s in r["speed"]:
            req = s.get("s3_requests_per_query")
            reqs = ", ".join(f"{k} {v:.1f}" for k, v in req.items()) if req else "-"
            print(f"| {s['rows']:,} | {s['storage']} | {reqs} | {s['hybrid_mean']:.1f} | "
                  f"{cost_per_million(s['hybrid_mean'], req, mem):.2f} | "
                  f"{cost_per_million(s['hybrid_p99'], req, mem):.2f} |")  # fmt: skip
    if "cold_start" in r:
        c = r["cold_start"]
        print(f"\n(c) cold start (fresh process, median of 3): import shared.search.api "
              f"{c['import_api_s']:.2f} s, "
              f"service_from_env (LanceDB, both encoders, clients) {c['init_s']:.2f} s, first hybrid query "
              f"{c['first_query_s']:.2f} s; process start to answer {c['total_s']:.2f} s")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
