"""Scenes channel benchmark: seconds per video-minute on CPU, by stage, on synthetic videos with known cuts.

    .venv/bin/python -m bench.bench_scenes                       # 1 and 5 min, 640x360 at 30 fps
    .venv/bin/python -m bench.bench_scenes --minutes 1 --size 320x180 --repeats 1

Videos: `shared.dev.media.make_shot_video` (PyAV, libx264), shots of 2-8 s (pans and stills, every
tenth a cross-fade), made once and cached under .cache/bench/. Stages, each as the worker runs it
(`shared.worker.channels.scenes`, the spec's settings):

    decode    probe + the PyAV sampler: SCENE_ANALYSIS_FRAMES frames at the spec's analysis side
    detect    PySceneDetect's AdaptiveDetector over those frames, then the shot shaping
    clip      the keyframes through a full-size ViT-B-32 image tower (open_clip, random weights: no
              weights are reachable here, the compute is the real model's), one batch, torch on CPU
    jpeg      the keyframe thumbnails (Pillow, q85)

Wall seconds (median of --repeats) and CPU seconds of this process (decoder threads included: steadier
on a shared machine). Cut recall counts detected boundaries within one analysis-frame period of a true
hard cut. Prints a markdown table with the command, the date and the machine.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from shared.dev.media import make_shot_video
from shared.media import probe, sample_frames
from shared.settings import REPO_ROOT
from shared.worker.channels.base import Decoded
from shared.worker.channels.scenes import RUNNER, jpeg
from shared.worker.settings import WorkerSettings

CACHE = REPO_ROOT / ".cache" / "bench"


def shots_for(minutes: float, fps: int, seed: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    total, out = round(minutes * 60 * fps), []
    while sum(n for _, n in out) < total:
        kind = "fade" if out and len(out) % 10 == 9 else ("static" if rng.random() < 0.3 else "pan")
        n = int(fps * (rng.uniform(0.5, 1.0) if kind == "fade" else rng.uniform(2.0, 8.0)))
        out.append((kind, max(1, min(n, total - sum(m for _, m in out)))))
    if out[-1][0] == "fade":
        out[-1] = ("pan", out[-1][1])
    return out


def video(minutes: float, fps: int, size: tuple[int, int], block: int = 8) -> tuple[Path, list[float]]:
    """The cached video and its hard cuts' times (make_shot_video's rule: a shot that follows another
    directly, not through a fade, starts with a cut)."""
    shots = shots_for(minutes, fps, 7)
    starts = np.cumsum([0] + [n for _, n in shots])
    cuts = [
        float(starts[i]) / fps
        for i in range(1, len(shots))
        if shots[i][0] != "fade" and shots[i - 1][0] != "fade"
    ]
    texture = "" if block == 8 else f"_b{block}"
    path = CACHE / f"scenes_{minutes:g}min_{size[0]}x{size[1]}_{fps}fps{texture}.mp4"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        made = make_shot_video(path.with_suffix(".partial.mp4"), shots, fps=fps, size=size, block=block)
        assert [round(t, 6) for t in made.cut_times] == [round(t, 6) for t in cuts]
        path.with_suffix(".partial.mp4").rename(path)
        print(f"made {path.name} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
    return path, cuts


def clip_tower():
    import open_clip
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()

    def embed(frames: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255.0)
        x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
        with torch.inference_mode():
            return model.encode_image(x).numpy()

    embed(np.zeros((1, 224, 224, 3), np.uint8))  # warm
    return embed


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def run_once(path: Path, settings: WorkerSettings, embed) -> dict:
    def decode():
        info = probe(path)
        frames, side = RUNNER.frame_plan(settings, info)
        return Decoded(
            duration=info.duration, frame_sets={"scenes": sample_frames(path, frames, max_side=side)}
        )

    decoded, *t_decode = timed(decode)
    (scened, *t_detect) = timed(lambda: RUNNER.scenes(settings, decoded))
    (images, times), cuts, planned = scened
    keyframes = images[[(s.first + s.last) // 2 for s in planned]]
    _, *t_clip = timed(lambda: embed(keyframes))
    _, *t_jpeg = timed(lambda: [jpeg(k) for k in keyframes])
    return {
        "times": times,
        "cuts": cuts,
        "scenes": len(planned),
        "stages": {"decode": t_decode, "detect": t_detect, "clip": t_clip, "jpeg": t_jpeg},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", default="1,5", help="video lengths, comma separated (default 1,5)")
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--blocks",
        default="8",
        help="the shots' texture, block sizes in px, comma separated (8: all fine detail, the hardest for "
        "a detector reading a long video's sparse frames; 32: closer to a camera's picture)",
    )
    args = ap.parse_args(argv)
    size = tuple(int(x) for x in args.size.lower().split("x"))
    settings = WorkerSettings.from_env({"WORKER_CHANNELS": "scenes"}, cuda_available=lambda: False)
    embed = clip_tower()
    rows = []
    todo = [(float(m), int(b)) for b in args.blocks.split(",") for m in args.minutes.split(",")]
    for minutes, block in todo:
        path, true_cuts = video(minutes, args.fps, size, block)  # type: ignore[arg-type]
        runs = [run_once(path, settings, embed) for _ in range(args.repeats)]
        r = runs[0]
        period = float(np.median(np.diff(r["times"]))) if len(r["times"]) > 1 else 1.0 / args.fps
        found = [float(r["times"][c]) for c in r["cuts"]]
        hit = sum(any(abs(f - c) <= period + 1e-6 for f in found) for c in true_cuts)
        med = {
            k: (
                statistics.median(x["stages"][k][0] for x in runs),
                statistics.median(x["stages"][k][1] for x in runs),
            )
            for k in r["stages"]
        }
        wall = sum(w for w, _ in med.values())
        cpu = sum(c for _, c in med.values())
        rows.append(
            (minutes, block, len(r["times"]), len(true_cuts), hit, len(found), r["scenes"], med, wall, cpu)
        )
    print()
    print(f"    {' '.join(['.venv/bin/python -m bench.bench_scenes', *sys.argv[1:]])}")
    print()
    print(
        f"{datetime.date.today().isoformat()}, {platform.machine()} {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.platform()}), load average {os.getloadavg()[0]:.1f}, "
        f"{size[0]}x{size[1]} at {args.fps} fps, median of {args.repeats}; seconds wall (CPU):"
    )
    print()
    print(
        "| video | texture block px | frames analysed | true cuts | found within 1 frame | detected cuts "
        "| scenes | decode | detect | CLIP ViT-B-32 | JPEG | total | s per video-minute |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---|---:|")
    for minutes, block, frames, n_true, hit, n_found, scenes, med, wall, cpu in rows:
        stage = " | ".join(f"{med[k][0]:.2f} ({med[k][1]:.2f})" for k in ("decode", "detect", "clip", "jpeg"))
        print(
            f"| {minutes:g} min | {block} | {frames:,} | {n_true} | {hit} | {n_found} | {scenes} | {stage} "
            f"| {wall:.2f} ({cpu:.2f}) | {wall / minutes:.2f} ({cpu / minutes:.2f}) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
