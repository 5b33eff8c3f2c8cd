"""Frame sampling benchmark: seek-based `sample_frames` vs decoding every frame.

    .venv/bin/python -m bench.bench_decode                 # 5 min 720p30 H.264, GOP 2 s, n = 8/16/32
    .venv/bin/python -m bench.bench_decode --minutes 1 --frames 16 --repeats 1

The test video (frame index encoded in the pixels) is made once with PyAV (libx264 ultrafast) and
cached under .cache/bench/; outer quarters carry a scrolling texture so decoding costs
something like real footage. The reference decodes every frame with the same threading and keeps,
for each target, the first frame with pts >= target (converting only the picked frames to RGB).
Prints a markdown table: wall time (median of --repeats), frames decoded, speedup, the largest
|pts - target| in frame periods, and whether both methods picked the same frames (checked by the
index encoded in the pixels, not by timestamps alone).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import av
import numpy as np

from shared.dev.media import make_video, read_frame_index
from shared.media import sample_frames, target_timestamps
from shared.settings import REPO_ROOT


def make_or_reuse(cache: Path, minutes: float, fps: int, gop_s: float, size: tuple[int, int]) -> Path:
    path = cache / f"decode_{minutes:g}min_{size[1]}p{fps}_gop{gop_s:g}s.mp4"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial.mp4")
    start = time.perf_counter()
    make_video(
        tmp,
        seconds=minutes * 60,
        fps=fps,
        size=size,
        gop=round(gop_s * fps),
        crf=23,
        frame_pattern="timestamp+texture",
    )
    tmp.rename(path)
    print(f"made {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
    return path


def reference(path: Path, n: int) -> tuple[np.ndarray, list[int], int]:
    """Decode everything; for each target keep the first frame with pts >= target (else the last)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        duration = float(stream.duration * stream.time_base)
        targets = target_timestamps(duration, n)
        start = stream.start_time or 0
        picked_t: list[float | None] = [None] * n
        picked_idx: list[int] = [-1] * n
        j = decoded = 0
        last = None
        for frame in container.decode(stream):
            decoded += 1
            last = frame
            t = float((frame.pts - start) * frame.time_base)
            while j < n and t >= targets[j]:
                picked_t[j] = t
                picked_idx[j] = read_frame_index(frame.to_ndarray(format="rgb24"))
                j += 1
        for k in range(j, n):
            picked_t[k] = float((last.pts - start) * last.time_base)
            picked_idx[k] = read_frame_index(last.to_ndarray(format="rgb24"))
    return np.array(picked_t), picked_idx, decoded


def timed(fn, repeats: int):
    """Median wall and CPU seconds (CPU time summed over decoder threads; steadier on a busy machine)."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--gop-seconds", type=float, default=2.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".cache" / "bench")
    args = parser.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    path = make_or_reuse(args.cache_dir, args.minutes, args.fps, args.gop_seconds, (w, h))
    period = 1.0 / args.fps

    mb = path.stat().st_size / 1e6
    gop = f"GOP {args.gop_seconds:g} s"
    print(f"\nvideo: {args.minutes:g} min {w}x{h} @ {args.fps} fps H.264, {gop}, {mb:.0f} MB")
    print(f"av {av.__version__}, median of {args.repeats}\n")
    print(
        "| n | reference wall s (cpu s) | sample_frames wall s (cpu s) | speedup wall / cpu "
        "| frames decoded ref / ours | seeks | max abs(pts-target) / period | same frames |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in args.frames:
        ref_s, ref_cpu, (ref_t, ref_idx, ref_decoded) = timed(lambda n=n: reference(path, n), args.repeats)
        ours_s, ours_cpu, got = timed(lambda n=n: sample_frames(path, n), args.repeats)
        err = float(np.max(np.abs(got.timestamps - got.target_timestamps)) / period)
        same = [read_frame_index(f) for f in got.frames] == ref_idx and np.allclose(got.timestamps, ref_t)
        print(
            f"| {n} | {ref_s:.2f} ({ref_cpu:.2f}) | {ours_s:.3f} ({ours_cpu:.3f}) "
            f"| {ref_s / ours_s:.1f}x / {ref_cpu / ours_cpu:.1f}x | {ref_decoded} / {got.decoded} "
            f"| {got.seeks} | {err:.2f} | {'yes' if same else 'NO'} |"
        )


if __name__ == "__main__":
    main()
