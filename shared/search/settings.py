"""Search settings: one frozen dataclass, every field bounded (a bad value is a ConfigError at start).

Windowing (transcript -> moments), per-item caps, query bounds, fusion and merging, index lifecycle.
The defaults are the ones the bench (bench/bench_search.py) was run with.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from shared.errors import ConfigError

# (low, high) for each numeric field, inclusive (parallel_lists, ann_index: checked below).
BOUNDS: dict[str, tuple[float, float]] = {
    "window_target_s": (5.0, 60.0),
    "window_max_s": (5.0, 120.0),
    "window_overlap_s": (0.0, 30.0),
    "max_windows_per_item": (1, 20_000),
    "max_frames_per_item": (1, 4_096),
    "max_text_chars": (16, 20_000),
    "max_query_chars": (8, 2_000),
    "max_k": (1, 200),
    "default_k": (1, 200),
    "candidates": (1, 1_000),
    "rrf_k": (1, 1_000),
    "bm25_coord_power": (0.0, 8.0),
    "min_text_similarity": (-1.0, 1.0),
    "min_clip_similarity": (-1.0, 1.0),
    "merge_gap_s": (0.0, 60.0),
    "max_moment_s": (1.0, 3_600.0),
    "snippet_chars": (16, 2_000),
    "ann_min_rows": (256, 100_000_000),
    "ann_nprobes": (1, 1_024),
    "ann_refine_rows": (1, 10_000),
    "ann_ef": (10, 10_000),
    "read_consistency_s": (0.0, 3_600.0),
    "cleanup_older_than_s": (0.0, 30 * 86_400.0),
}

ANN_INDEX_TYPES = ("IVF_PQ", "IVF_HNSW_SQ")


@dataclass(frozen=True)
class SearchSettings:
    # transcript windows: Whisper segments merged into windows of about 10-30 s, overlapping
    window_target_s: float = 20.0  # a window takes segments until it spans this much ...
    window_max_s: float = 30.0  # ... never past this (a lone longer segment is a window of its own)
    window_overlap_s: float = 5.0  # the next window starts at the first segment starting >= end - overlap
    # per-item caps (a row builder never makes more)
    max_windows_per_item: int = 2_000  # ~11 h of transcript at 20 s windows
    max_frames_per_item: int = 256  # video_clip samples 16 today
    max_text_chars: int = 2_000  # per row's text (a window, an item's title + description)
    # query
    max_query_chars: int = 512
    max_k: int = 50
    default_k: int = 10
    candidates: int = 50  # rows each ranked list contributes to the fusion (>= k is sensible)
    rrf_k: int = 60  # reciprocal rank fusion: score = sum w / (rrf_k + rank)
    bm25_coord_power: float = 3.0  # hybrid: a BM25 hit's w = (share of query terms it has) ** this; 0: plain
    # a vector list keeps only rows at least this similar (cosine) to the query: rank fusion ignores
    # scores, so without a floor the nearest of unrelated rows ranks with the best hit of another list.
    # CLIP ViT-B-32 text->image: a matching caption ~0.25-0.35, an unrelated one ~0.1-0.2. MiniLM: a
    # paraphrase ~0.4-0.8, unrelated text ~0-0.15 (bench_search.py: 0.2 cut paraphrase recall@5 from
    # 0.94 to 0.92, 0.1 left it). Person search (image->image) has no floor.
    min_text_similarity: float = 0.1
    min_clip_similarity: float = 0.2
    merge_gap_s: float = 1.0  # hits of one item this close (or overlapping) merge into one moment ...
    max_moment_s: float = 60.0  # ... while the merged span stays within this
    snippet_chars: int = 280
    # run a request's ranked lists (their query embeddings and index queries) side by side, on a
    # process-wide pool; False: one after another. The answer is the same either way.
    parallel_lists: bool = True
    # index lifecycle
    ann_min_rows: int = 50_000  # below this, exact (flat) search; optimize() builds the ANN index past it
    ann_index: str = "IVF_PQ"  # or IVF_HNSW_SQ
    ann_nprobes: int = 32  # IVF partitions probed per query
    # IVF_PQ: the nearest this many rows by their codes are re-ranked on the full vectors (a query of k
    # rows asks LanceDB for refine_factor = ceil(this / k)), whatever k: a list's k=50 query costs as
    # much as a k=10 one and ranks its first 10 as that one does. bench_search.py, 1M text rows (real
    # MiniLM vectors of 4,096 sentences + noise: ~250 near-duplicates each), recall@10 vs exact:
    # 300 -> 0.88, 600 -> 0.95, 1000 -> 0.975.
    ann_refine_rows: int = 1_000
    ann_ef: int = 100  # HNSW search breadth
    read_consistency_s: float = 5.0  # a warm reader sees other writers' commits within this
    cleanup_older_than_s: float = 3_600.0  # optimize() drops table versions older than this

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name not in BOUNDS:
                continue
            value = getattr(self, f.name)
            low, high = BOUNDS[f.name]
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ConfigError(f"search setting {f.name}={value!r} must be within {low}..{high}")
            if f.type == "int" and not isinstance(value, int):
                raise ConfigError(f"search setting {f.name}={value!r} must be an integer")
        if self.window_target_s > self.window_max_s:
            raise ConfigError("search settings need window_target_s <= window_max_s")
        if self.window_overlap_s >= self.window_target_s / 2:
            raise ConfigError("search setting window_overlap_s must be below half of window_target_s")
        if self.default_k > self.max_k:
            raise ConfigError("search setting default_k must be <= max_k")
        if not isinstance(self.parallel_lists, bool):
            raise ConfigError("search setting parallel_lists must be true or false")
        if self.ann_index not in ANN_INDEX_TYPES:
            raise ConfigError(f"search setting ann_index must be one of {ANN_INDEX_TYPES}")


DEFAULTS = SearchSettings()  # the module-level default every function takes
