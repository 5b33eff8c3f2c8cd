"""Adversarial images vs an ordinary photo: seconds and peak RSS per input, and clip_text latency
while they run. Every input goes through the worker's own clip_image job (Worker.handle, TTA on,
default settings: PANORAMA_MAX_TILES 2, MAX_IMAGE_ASPECT 8, MAX_IMAGE_PIXELS 50 MP, JOB_MAX_PIXELS
400 MP, FULL_DECODE_MAX_PIXELS 1.5 MP, INFLATE_MAX_PIXELS 33.2 MP). The 50 MP input comes as a JPEG
(decoded at 1/8 straight from the DCT) and as a PNG (refused from its header: a PNG is inflated in
full, serially); an 8K PNG at that limit is streamed through libvips strip by strip into the box
reduce (smooth gradients, so they fit MAX_IMAGE_BYTES); formats only Pillow decodes, at full size,
come as a BMP at the 1.5 MP limit and a GIF of 4 MP (refused from its header).

    python -m bench.bench_adversarial [--model full|dev] [--queries 60] [--repeat 1] [--only NAME,...]

Per input: a fresh process loads the model, runs one ordinary job to warm up, then the input once
(its first run: the one-time setup of the code paths it takes, e.g. libvips' PNG loader; that peak
above the process is reported apart, "1st run"), then --repeat times (the median seconds, the
highest peak); it reports wall seconds, peak RSS (sampled every 2 ms) above the warmed-up process
and in total, and what the worker did (outcome, image views through the model, decoded pixels, per
run), so each row's RSS is its own. The ordinary photo's row is measured the same way.
Latency: one process, clip_text queries one after another (p50/p99 over --queries) while nothing
else runs (idle), while ordinary photos are submitted back to back, and while the adversarial inputs
are; the three take turns (--rounds), so the machine's noise falls on each alike. Models (random
weights, loaded by ClipBackend.load): "full" has ViT-B-32's shapes (text and vision), so model work
costs what production's does on this CPU; "dev" is the tiny test model.
Targets (issue 9): no input over 2x the ordinary 4000x3000 photo; query p99 under load within 2x idle.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ORDINARY = "photo 4000x3000"


def inputs(folder: Path) -> dict[str, list[Path]]:
    """name -> image files of one job, written once into `folder`."""
    from bench.bench_gpu_clip import make_jpegs
    from shared.dev.media import make_image_bytes, png_with_claimed_size

    def one(name: str, make) -> Path:
        path = folder / name
        if not path.exists():  # made once, by the parent: a child's RSS is its own work only
            path.write_bytes(make())
        return path

    photo = one("photo.jpg", lambda: make_jpegs(1, 4000, 3000)[0])
    return {
        ORDINARY: [photo],
        "1x20000": [one("1x20000.png", lambda: make_image_bytes((1, 20000)))],
        "20000x1": [one("20000x1.png", lambda: make_image_bytes((20000, 1)))],
        "2x2": [one("2x2.png", lambda: make_image_bytes((2, 2)))],
        "50 MP 8656x5776": [one("50mp.jpg", lambda: make_jpegs(1, 8656, 5776)[0])],
        "50 MP PNG 8656x5776": [one("50mp.png", lambda: gradient_image(8656, 5776, "PNG"))],
        "8K PNG 7680x4320 (at INFLATE_MAX_PIXELS)": [
            one("8k.png", lambda: gradient_image(7680, 4320, "PNG"))
        ],
        "panorama 8:1 8000x1000": [one("pano8.jpg", lambda: make_jpegs(1, 8000, 1000)[0])],
        "BMP 1224x1224 (full decode, at the limit)": [
            one("1.5mp.bmp", lambda: gradient_image(1224, 1224, "BMP"))
        ],
        "GIF 2000x2000 (full decode)": [one("4mp.gif", lambda: gradient_image(2000, 2000, "GIF"))],
        "panorama 9:1 9000x1000": [one("pano9.jpg", lambda: make_jpegs(1, 9000, 1000)[0])],
        "claims 20000x20000": [one("claims.png", lambda: png_with_claimed_size(20000, 20000))],
        "32 x claims 30 MP": [one("claims30.png", lambda: png_with_claimed_size(6000, 5000))] * 32,
        "32 x photo 4000x3000": [photo] * 32,
    }


def gradient_image(width: int, height: int, fmt: str) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    shape = (height, width)
    rgb = np.stack([np.broadcast_to(x, shape), np.broadcast_to(y, shape), (x + y) / 2], -1)
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def job(files: list[Path]) -> dict:
    images = [{"base64": base64.b64encode(f.read_bytes()).decode()} for f in files]
    return {"task": "clip_image", "images": images, "tta": True}


def build_model(kind: str, folder: Path) -> Path:
    if kind == "dev":
        from shared.dev.models import setup_dev_models
        from shared.settings import DEFAULT_MODEL_DIR

        return setup_dev_models(DEFAULT_MODEL_DIR, ["clip-vit-b-32"])["clip-vit-b-32"]
    from bench.bench_batching import build_full_text_tower

    target = folder / "clip-full"
    return target if target.exists() else build_full_text_tower(target, full_vision=True)


def make_worker(model: Path):
    from shared.models.clip import ClipBackend
    from shared.worker.models import Models
    from shared.worker.settings import WorkerSettings
    from shared.worker.worker import Worker

    settings = WorkerSettings.from_env({"WORKER_TASKS": "clip_text,clip_image"}, cuda_available=lambda: False)
    return Worker(settings, Models(clip=ClipBackend.load(model, name="clip-vit-b-32")))


def rss_mb() -> float:
    """Resident set size now (ru_maxrss cannot be used: loading the model sets a peak no job reaches)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


class PeakRSS:
    """Samples rss_mb() every 2 ms on a thread while the block runs; `.peak` is the highest seen."""

    def __enter__(self) -> PeakRSS:
        import threading

        self.peak, self._stop = rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def run_one(name: str, folder: Path, model: Path, repeat: int = 1) -> dict:
    worker = make_worker(model)
    all_inputs = inputs(folder)
    asyncio.run(worker.handle({"id": "warm", "input": job(all_inputs[ORDINARY])}))
    payload = job(all_inputs[name])
    base = rss_mb()
    with PeakRSS() as first:  # the input's first run in this process: one-time setup of its code paths
        asyncio.run(worker.handle({"id": f"{name}-first", "input": payload}))
    first_mb = first.peak - base
    base = rss_mb()
    views, decoded = worker.models.clip.views_encoded, worker.budget.stats.decoded
    seconds, peak = [], base
    for i in range(repeat):
        started = time.perf_counter()
        with PeakRSS() as rss:
            out = asyncio.run(worker.handle({"id": f"{name}-{i}", "input": payload}))
        seconds.append(time.perf_counter() - started)
        peak = max(peak, rss.peak)
    outcome = out["error"]["code"] if "error" in out else f"{len(out['vectors'])} vector(s)"
    return {
        "seconds": statistics.median(seconds),
        "rss_mb": peak - base,
        "rss_total_mb": peak,
        "rss_first_mb": first_mb,
        "outcome": outcome,
        "views": (worker.models.clip.views_encoded - views) // repeat,
        "decoded_mp": (worker.budget.stats.decoded - decoded) / repeat / 1e6,
    }


def latency(
    folder: Path, model: Path, queries: int, rounds: int = 4
) -> dict[str, tuple[float, float, float]]:
    """clip_text p50/p99 seconds idle, under ordinary photos and under the adversarial inputs, and the
    background image jobs finished per second meanwhile (what the queries' priority costs them). The
    three conditions take turns, `rounds` times (queries / rounds each turn), so a noisy spell on a
    shared machine lands on all three alike instead of on whichever ran then."""
    worker = make_worker(model)
    all_inputs = inputs(folder)
    ordinary = [job(all_inputs[ORDINARY])]
    adversarial = [job(f) for n, f in all_inputs.items() if n != ORDINARY and not n.startswith("32 x photo")]
    conditions = {"idle": [], "ordinary photos": ordinary, "adversarial inputs": adversarial}
    times: dict[str, list[float]] = {name: [] for name in conditions}
    jobs = dict.fromkeys(conditions, 0)
    busy = dict.fromkeys(conditions, 0.0)

    async def measure(name: str, load: list[dict], n: int, first: int) -> list[float]:
        stop = asyncio.Event()

        async def background() -> None:
            i = 0
            while not stop.is_set():
                await worker.handle({"id": f"bg{i}", "input": load[i % len(load)]})
                i += 1
                jobs[name] += 1

        tasks = [asyncio.create_task(background()) for _ in range(2 if load else 0)]
        await asyncio.sleep(0.2 if load else 0)
        began = time.perf_counter()
        out = []
        for i in range(first, first + n):
            started = time.perf_counter()
            done = await worker.handle(
                {"id": f"q{i}", "input": {"task": "clip_text", "texts": [f"query {i}"]}}
            )
            if "vectors" not in done:
                raise RuntimeError(done)
            out.append(time.perf_counter() - started)
        stop.set()
        await asyncio.gather(*tasks)
        busy[name] += time.perf_counter() - began
        return out

    asyncio.run(worker.handle({"id": "warm", "input": ordinary[0]}))
    for r in range(rounds):
        n = queries // rounds + (r < queries % rounds)
        for name, load in conditions.items():
            times[name] += asyncio.run(measure(name, load, n, len(times[name])))

    def p50_p99(samples: list[float]) -> tuple[float, float]:
        samples = sorted(samples)
        return statistics.median(samples), samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]

    return {name: (*p50_p99(samples), jobs[name] / busy[name]) for name, samples in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("full", "dev"), default="full")
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--only", default="", help="comma-separated input names (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per input: median seconds, max RSS")
    parser.add_argument("--dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=4, help="latency: turns of idle/photos/adversarial")
    parser.add_argument("--latency", action="store_true", help="only the clip_text latency, as JSON")
    args = parser.parse_args(argv)
    folder = Path(args.dir or tempfile.mkdtemp(prefix="bench-adversarial-"))
    folder.mkdir(parents=True, exist_ok=True)
    model = build_model(args.model, folder)
    if args.one:
        print(json.dumps(run_one(args.one, folder, model, args.repeat)))
        return 0
    if args.latency:
        print(json.dumps(latency(folder, model, args.queries, args.rounds)))
        return 0

    names = [n for n in inputs(folder) if not args.only or n in args.only.split(",")]
    load_before = os.getloadavg()[0]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])}
    me = [sys.executable, "-m", "bench.bench_adversarial", "--model", args.model, "--dir", str(folder)]

    def child(*extra: str) -> dict:
        done = subprocess.run([*me, *extra], env=env, capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    order = [ORDINARY, *[n for n in names if n != ORDINARY]]
    rows = {name: child("--one", name, "--repeat", str(args.repeat)) for name in order}
    lat = child("--latency", "--queries", str(args.queries), "--rounds", str(args.rounds))
    ref = rows[ORDINARY]
    print(
        f"\nclip_image, TTA on, model '{args.model}' on CPU, one process per input, median of "
        f"{args.repeat} run(s); load avg {load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n"
    )
    print(
        "| input | outcome | views | decoded MP | seconds | x photo | peak RSS +MB | x photo | peak RSS MB "
        "| 1st run +MB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['outcome']} | {r['views']} | {r['decoded_mp']:.1f} | {r['seconds']:.3f} | "
            f"{r['seconds'] / ref['seconds']:.2f} | {r['rss_mb']:.0f} | "
            f"{r['rss_mb'] / max(ref['rss_mb'], 1):.2f} | {r['rss_total_mb']:.0f} | {r['rss_first_mb']:.0f} |"
        )
    idle_p99 = lat["idle"][1]
    print(
        f"\nclip_text latency, {args.queries} sequential queries per condition in {args.rounds} alternating "
        "rounds (2 background job loops under load)\n"
    )
    print("| while | p50 ms | p99 ms | p99 x idle | image jobs/s meanwhile |")
    print("|---|---:|---:|---:|---:|")
    for name, (p50, p99, jobs_per_s) in lat.items():
        print(f"| {name} | {p50 * 1e3:.1f} | {p99 * 1e3:.1f} | {p99 / idle_p99:.2f} | {jobs_per_s:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
