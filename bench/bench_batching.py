"""Micro-batching benefit: N concurrent single-text clip_text requests through the worker's batcher,
batched (window 15 ms, max 64, early close as the worker runs it) vs one forward pass per request
(max_batch=1, same code path). "window only" is the batcher with BATCH_EARLY_CLOSE=0: it always
waits out the window.

    python bench/bench_batching.py [--model-dir DIR] [--requests 32] [--repeats 7] [--only dev|full]
                                   [--device cpu|cuda]   (cuda runs fp16)

Models (both load through ClipBackend.load, the worker's loader, random weights):
- dev:  the dev tiny CLIP from MODEL_DIR (text tower width 32, 2 layers): per-call overhead dominates.
- full: a temporary folder with the real ViT-B-32 text tower shape (width 512, 12 layers, 77 tokens)
        and a tiny vision tower, so the text forward pass costs what production's does.
Prints one table: wall time for all N requests, requests/s, forward passes, p50/p95 latency, per
mode the median of interleaved rounds (every mode once per round, so noise hits all alike), and the
batched/unbatched throughput ratio (target >= 3x), also against bare model calls with no scheduler.

Texts have mixed lengths (2 to 70 words, cycling, see `mixed_texts`), as real queries do: a trimmed
batch pass runs to its LONGEST text, so batching is measured where it pays least, not on equal texts.

Text passes are trimmed to the batch's longest end-of-text token (ClipBackend, exact), so a
one-by-one request costs ~17 positions, not 77: a batch-1 pass becomes a small, inefficient matmul
and one batch-32 pass does the same work ~3x faster on this 2-core CPU. Without trimming, 77-token
passes were already efficient at batch 1 and batching gave only ~1.5x. On a GPU a batch-1 pass is
launch-bound and the gain is larger.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shared.settings import model_dir_from
from shared.worker.batching import Arrivals, MicroBatcher


def build_full_text_tower(folder: Path, *, full_vision: bool = False) -> Path:
    """A random-weight CLIP folder with ViT-B-32's text tower and a tiny vision tower (or, with
    full_vision, ViT-B-32's vision tower too), loadable by ClipBackend.load like any baked model."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from shared.models import registry

    cfg = {
        "embed_dim": 512,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32}
        if full_vision
        else {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
    }
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors"
    )
    pp = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": pp}))
    registry.write_manifest(folder, registry.get("clip-vit-b-32"), random=True)
    return folder


async def _run(
    fn: Callable,
    texts: list[str],
    window_ms: float,
    max_batch: int,
    early: bool,
    executor: ThreadPoolExecutor,
) -> dict:
    arrivals = Arrivals()
    batcher = MicroBatcher(
        fn,
        window_ms=window_ms,
        max_batch=max_batch,
        executor=executor,
        name="bench",
        arrivals=arrivals if early else None,
    )
    latencies: list[float] = []

    async def one(text: str) -> None:
        with arrivals.job():  # what Worker.handle does around every job
            started = time.perf_counter()
            await batcher.submit([text])
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(t) for t in texts))
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "wall": wall,
        "passes": batcher.stats.passes,
        "p50": statistics.median(latencies),
        "p95": latencies[max(0, round(0.95 * len(latencies)) - 1)],
    }


MODES = {  # name: (window_ms or None for the CLI's, max_batch, early close)
    "one-by-one": (0.0, 1, False),
    "window only": (None, 64, False),
    "batched": (None, 64, True),
}


WORDS = "a photo of a small dog playing with a red ball in the park near an old tree under a blue sky"
LENGTHS = (2, 4, 7, 11, 16, 24, 35, 50, 70)  # words per text, cycling; CLIP's tokenizer stops at 77 tokens


def mixed_texts(round_no: int, n: int) -> list[str]:
    """n distinct texts of mixed lengths (LENGTHS words, cycling), different in every round."""
    return [
        f"{round_no}-{i}: "
        + " ".join(WORDS.split()[(i + k) % len(WORDS.split())] for k in range(LENGTHS[i % len(LENGTHS)]))
        for i in range(n)
    ]


def measure(fn: Callable, n: int, repeats: int, window_ms: float) -> dict[str, dict]:
    """Every mode once per round, rounds repeated (so machine noise hits all modes alike); per mode
    the run with the median wall time. Also the bare model on the same model thread, no scheduler:
    n single-text calls ("bare single") and one n-text call ("bare batch")."""
    # one long-lived model thread, warmed up, as the worker keeps one per model for its lifetime
    executor = ThreadPoolExecutor(1, thread_name_prefix="model-clip")
    executor.submit(fn, ["warmup"] * 4).result()
    runs: dict[str, list[dict]] = {m: [] for m in (*MODES, "bare single", "bare batch")}
    for r in range(repeats):
        texts = mixed_texts(r, n)
        for mode, (window, max_batch, early) in MODES.items():
            window = window_ms if window is None else window
            runs[mode].append(asyncio.run(_run(fn, texts, window, max_batch, early, executor)))
        for mode, calls in (("bare single", [[t] for t in texts]), ("bare batch", [texts])):
            started = time.perf_counter()
            executor.submit(lambda calls=calls: [fn(c) for c in calls]).result()
            wall = time.perf_counter() - started
            runs[mode].append({"wall": wall, "passes": len(calls), "p50": math.nan, "p95": math.nan})
    executor.shutdown()
    return {m: sorted(rs, key=lambda x: x["wall"])[len(rs) // 2] for m, rs in runs.items()}


def _ms(seconds: float) -> str:
    return f"{'-':>8s}" if math.isnan(seconds) else f"{seconds * 1e3:8.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--window-ms", type=float, default=15.0)
    parser.add_argument("--only", choices=("dev", "full"), default=None)
    parser.add_argument("--device", default="cpu", help="cpu | cuda (fp16 on cuda)")
    args = parser.parse_args(argv)

    import os

    import torch

    from shared.models.clip import ClipBackend
    from shared.models.registry import require_model

    model_dir = Path(args.model_dir) if args.model_dir else model_dir_from(os.environ)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu, or on a GPU machine")
        return 2
    kw = {"device": args.device, "precision": "fp16" if args.device.startswith("cuda") else "fp32"}
    models: list[tuple[str, ClipBackend]] = []
    with tempfile.TemporaryDirectory(prefix="bench-clip-") as tmp:
        if args.only in (None, "dev"):
            models.append(
                ("dev tiny CLIP", ClipBackend.load(require_model(model_dir, "clip-vit-b-32"), **kw))
            )
        if args.only in (None, "full"):
            folder = build_full_text_tower(Path(tmp) / "clip-full-text")
            models.append(("ViT-B-32 text tower", ClipBackend.load(folder, name="clip-vit-b-32", **kw)))

        where = f"{args.device} ({kw['precision']}), torch threads={torch.get_num_threads()}"
        print(f"{args.requests} concurrent single-text clip_text requests on {where}")
        print(
            f"median of {args.repeats} interleaved rounds; batched = window {args.window_ms:g} ms, "
            "max_batch 64, early close\n"
        )
        cols = ("wall ms", "req/s", "passes", "p50 ms", "p95 ms")
        header = f"{'model':22s} {'mode':12s} " + " ".join(f"{c:>8s}" for c in cols)
        print(header)
        print("-" * len(header))
        for label, clip in models:
            clip.embed_texts(["warmup"] * 4)
            res = measure(clip.embed_texts, args.requests, args.repeats, args.window_ms)
            for mode, r in res.items():
                print(
                    f"{label:22s} {mode:12s} {r['wall'] * 1e3:8.1f} {args.requests / r['wall']:8.1f} "
                    f"{r['passes']:8d} {_ms(r['p50'])} {_ms(r['p95'])}"
                )
            batched = res["batched"]["wall"]
            print(
                f"{label:22s} {'ratio':12s} {res['one-by-one']['wall'] / batched:8.2f}x batched vs "
                "one-by-one (target >= 3x)"
            )
            print(
                f"{label:22s} {'':12s} {res['bare single']['wall'] / batched:8.2f}x batched vs bare "
                f"single calls; {res['one-by-one']['wall'] / res['window only']['wall']:.2f}x window only; "
                f"{res['bare single']['wall'] / res['bare batch']['wall']:.2f}x bare batch vs bare single\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
