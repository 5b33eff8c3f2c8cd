"""Search benchmark (issue 21): quality on a labelled corpus, speed at 10k / 100k (/ 1M) rows, cold start.

    .venv/bin/python bench/bench_search.py                       # quality + speed at 10k, 100k (~6 min here)
    .venv/bin/python bench/bench_search.py --sizes 10000         # quick
    .venv/bin/python bench/bench_search.py --sizes 10000,100000,1000000 --json out.json
    options: --model-dir DIR (default <repo>/.models, filled by `se setup-models`) --queries 200
             --skip-quality --skip-speed --ann IVF_PQ|IVF_HNSW_SQ --work DIR (default a temp folder)

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
(b) Speed, per size N, on a local folder: an owner index with N text rows (grammar sentences +
    MiniLM-like 384-d vectors) and N visual rows (512-d), vectors drawn around 256 topics x 16
    sub-topics (`clustered`; uniform random 512-d vectors defeat any ANN index and say nothing).
    Write rows/s (one batch), the ANN index build (rows/s), then over --queries held-out query
    vectors drawn around the same centres: ANN recall@10 against exact search (numpy), and warm
    p50/p99 of: LanceDB's bare vector query (the same table, nprobes/refine as the engine),
    LanceSearch.vector_search, BM25 alone, MiniLM embedding one query, and the whole hybrid query
    through Searcher.search with the real MiniLM embedding the query text (the CLIP text tower is not
    exported yet: a random vector seeded by the text stands in, costing ~0).
(c) Cold start: a fresh interpreter importing shared.search.lance + query, then open + first query.

Prints a table (markdown) with the command, the date and the machine. Numbers from this machine only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
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


def speed(n: int, minilm, work: Path, queries: int, ann: str) -> dict:
    from shared.search.lance import LanceSearch, rows_table

    rng = np.random.default_rng(n)
    pyrng = random.Random(n)
    settings = SearchSettings(ann_min_rows=min(n, 50_000), ann_index=ann, cleanup_older_than_s=0)
    engine = LanceSearch(str(work / f"speed{n}"), VERSION, settings=settings)
    owner = "o"
    res: dict = {"rows": n}
    c512, c384 = centres(rng, 512), centres(rng, 384)
    write_s = 0.0
    chunk = 100_000
    for space, cents in ((VISUAL, c512), (TEXT, c384)):
        for lo in range(0, n, chunk):
            m = min(chunk, n - lo)
            vecs = clustered(rng, cents, m)
            items = [f"i{(lo + j) // 30}" for j in range(m)]
            texts = [filler(pyrng) for _ in range(m)] if space == TEXT else [""] * m
            kind = TRANSCRIPT_WINDOW if space == TEXT else "frame"
            rows = [
                Row(
                    f"{it}:{space}:{lo + j}",
                    space,
                    kind,
                    owner,
                    it,
                    "bench",
                    float(j),
                    float(j + 1),
                    texts[j],
                    vecs[j],
                )
                for j, it in enumerate(items)
            ]
            table = rows_table(space, rows)
            t0 = time.perf_counter()
            tbl = engine._table(owner, space, create=True)
            tbl.add(table)
            write_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    engine._create_fts(owner, engine._table(owner, TEXT))
    res["fts_build_s"] = time.perf_counter() - t0
    res["write_rows_per_s"] = 2 * n / write_s
    # exact answers first (numpy over the stored vectors), then the ANN index
    vis = engine._table(owner, VISUAL).to_arrow().select(["id", "vector"])
    ids = np.array(vis.column("id").to_pylist())
    base = np.asarray(vis.column("vector").combine_chunks().values.to_numpy()).reshape(-1, 512)
    qs = clustered(rng, c512, queries)
    exact = [set(ids[np.argsort(-(base @ q))[:10]]) for q in qs]
    del base
    t0 = time.perf_counter()
    engine.build_vector_index(owner, VISUAL)
    res["ann_build_s"] = time.perf_counter() - t0
    res["ann_rows_per_s"] = n / res["ann_build_s"]
    engine.build_vector_index(owner, TEXT)
    engine.optimize(owner)
    tbl = engine._table(owner, VISUAL)

    def bare(q):
        return (
            tbl.search(q, vector_column_name="vector").distance_type("cosine").limit(10)
            .nprobes(settings.ann_nprobes).refine_factor(settings.ann_refine_factor).to_arrow()
        )  # fmt: skip

    got = [set(bare(q).column("id").to_pylist()) for q in qs]
    res["recall@10"] = float(np.mean([len(a & e) / 10 for a, e in zip(got, exact, strict=True)]))

    def clip_text(texts):  # stand-in for the CLIP text tower (not exported yet): a vector seeded by the text
        out = np.stack([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=512) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    searcher = Searcher(engine, embed_text=minilm.embed, clip_text=clip_text, settings=settings)
    words = [filler(pyrng).rstrip(".") for _ in range(queries)]
    timed = {"bare_vector": [], "engine_vector": [], "bm25": [], "minilm_embed": [], "hybrid_total": []}
    for i in range(3):  # warm up
        (
            bare(qs[i]),
            engine.vector_search(owner, VISUAL, qs[i], k=10),
            searcher.search({"owner_id": owner, "text": words[i]}),
        )
    for i, q in enumerate(qs):
        calls = {
            "bare_vector": (bare, q),
            "engine_vector": (lambda v: engine.vector_search(owner, VISUAL, v, k=10), q),
            "bm25": (lambda t: engine.text_search(owner, t, k=50), words[i]),
            "minilm_embed": (lambda t: minilm.embed([t]), words[i]),
            "hybrid_total": (lambda t: searcher.search({"owner_id": owner, "text": t, "k": 10}), words[i]),
        }
        for name, (fn, arg) in calls.items():
            t0 = time.perf_counter()
            fn(arg)
            timed[name].append(time.perf_counter() - t0)
    for name, xs in timed.items():
        res[f"{name}_p50"], res[f"{name}_p99"] = pct(xs, 50), pct(xs, 99)
    return res


COLD = """
import time, sys
t0 = time.perf_counter()
from shared.search.lance import LanceSearch
from shared.search.query import Searcher
t1 = time.perf_counter()
e = LanceSearch(sys.argv[1], sys.argv[2])
s = Searcher(e, embed_text=None)
out = s.search({"owner_id": "q", "text": "ferry island", "mode": "text"})
t2 = time.perf_counter()
print(t1 - t0, t2 - t1, len(out["hits"]))
"""


def cold_start(work: Path, runs: int = 3) -> dict:
    imports, opens = [], []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", COLD, str(work / "quality"), VERSION],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        )
        a, b, _ = out.stdout.split()
        imports.append(float(a))
        opens.append(float(b))
    return {"import_s": statistics.median(imports), "open_first_query_s": statistics.median(opens)}


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--ann", default="IVF_PQ", choices=("IVF_PQ", "IVF_HNSW_SQ"))
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--work", default=None)
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
    minilm = MiniLMOnnx.from_folder(
        model_dir if model_dir.name == "minilm-l6-v2" else model_dir / "minilm-l6-v2"
    )
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_search_"))
    report: dict = {
        "command": " ".join(
            [".venv/bin/python bench/bench_search.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "lancedb": lancedb.__version__,
    }
    try:
        if not args.skip_quality:
            report["quality"] = quality(minilm, work)
            report["cold_start"] = cold_start(work)
        if not args.skip_speed:
            report["speed"] = []
            for n in (int(s) for s in args.sizes.split(",")):
                report["speed"].append(speed(n, minilm, work, args.queries, args.ann))
                print(f"# {n} rows done", file=sys.stderr, flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print_report(report, args.ann)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float))
    return 0


def print_report(r: dict, ann: str) -> None:
    print(f"command: {r['command']}\ndate: {r['date']}\nmachine: {r['machine']}\nlancedb {r['lancedb']}\n")
    if "quality" in r:
        meta = r["quality"][-1]
        print(f"(a) quality: {meta['items']} items, {meta['windows']} transcript windows, real MiniLM\n")
        print("| mode | queries | n | recall@1 | recall@5 | moment@1 |\n|---|---|---|---|---|---|")
        for q in r["quality"][:-1]:
            cells = " | ".join(f"{q[c]:.2f}" for c in ("recall@1", "recall@5", "moment@1"))
            print(f"| {q['mode']} | {q['queries']} | {q['n']} | {cells} |")
        c = r["cold_start"]
        print(f"\n(c) cold start (fresh process, median of 3): import {c['import_s']:.2f} s, "
              f"open + first BM25 query {c['open_first_query_s']:.2f} s\n")  # fmt: skip
    if r.get("speed"):
        d = SearchSettings()
        knobs = f"nprobes {d.ann_nprobes}, refine {d.ann_refine_factor}"
        print(f"(b) speed, local folder, {ann} ({knobs}), ms p50 / p99\n")
        cols = ["bare_vector", "engine_vector", "bm25", "minilm_embed", "hybrid_total"]
        print(
            "| rows/table | write rows/s | ANN build rows/s | FTS build s | recall@10 | "
            + " | ".join(cols)
            + " |"
        )
        print("|---" * (5 + len(cols)) + "|")
        for s in r["speed"]:
            cells = " | ".join(f"{s[c + '_p50']:.1f} / {s[c + '_p99']:.1f}" for c in cols)
            print(f"| {s['rows']:,} | {s['write_rows_per_s']:,.0f} | {s['ann_rows_per_s']:,.0f} | "
                  f"{s['fts_build_s']:.1f} | {s['recall@10']:.3f} | {cells} |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
