"""CPU seconds per one-minute video for video_qwen3vl next to video_clip and video_mae, and the GPU variant.

    .venv/bin/python -m bench.bench_qwen3vl [--seconds 60] [--size 640x360] [--repeats 2]
    .venv/bin/python -m bench.bench_qwen3vl --arch 2b [--layers 1,2 | --full]  (real 2B widths, CPU)
    .venv/bin/python -m bench.bench_qwen3vl --arch 2b --device cuda --precision bf16 --videos 8   (GPU)

Default (`--arch tiny`): the worker itself (shared.worker.Worker over the dev models in MODEL_DIR, built
by `se setup-models`: tiny random Qwen3-VL, CLIP ViT-B-32-shaped, VideoMAE-base-shaped), one embed_item
job per channel on the same synthetic one-minute H.264 (downloads are a local copy): decode + model +
encode, as a job runs. Reported per channel: wall seconds and CPU seconds (user + system of this
process, every thread), best of --repeats, and what the channel decoded (frames, size).

`--arch 2b`: Qwen3-VL-2B's real widths (text 2048 x 28 layers, 16 heads / 8 kv heads, MLP 6144, vocab
151936; vision 1024 x 24 blocks, MLP 4096, 16 heads), random weights saved with `save_pretrained` and
loaded by the worker's own loader (Qwen3VLBackend.load), run on the real frame plan of the video (the
same frames and tokens the 2B gets). On the CPU it times the model at a few reduced depths (--layers:
text layers = vision blocks = L) and extrapolates linearly to 28 (`seconds = a + b * L`; every layer
sees the same tokens, so its cost does not depend on depth; 28 vision blocks where the model has 24
makes it an upper bound); `--full` builds all 28 + 24 instead (~8.5 GB fp32 in RAM) and times one
video. On a GPU (`--device cuda`) it builds the full-depth model and reports videos/s and peak VRAM
for --videos embeddings (the frames are decoded once beforehand: the worker's decode is CPU work on
its own thread).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REAL_TEXT = {
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 262144,
    "vocab_size": 151936,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 5000000.0,
        "mrope_section": [24, 20, 20],
        "mrope_interleaved": True,
    },
    "tie_word_embeddings": True,
}
REAL_VISION = {
    "depth": 24,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_heads": 16,
    "out_hidden_size": 2048,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [5, 11, 17],
}


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def make_source(seconds: float, size: tuple[int, int], where: Path) -> Path:
    from shared.dev.media import make_video

    return make_video(
        where / "minute.mp4", seconds=seconds, fps=24, size=size, frame_pattern="timestamp+texture", gop=48
    ).path


def bench_channels(source: Path, model_dir: Path, repeats: int) -> list[dict[str, Any]]:
    """One embed_item job per channel through the worker, best of `repeats` (after one warm-up)."""
    from shared.worker.models import load_models
    from shared.worker.settings import WorkerSettings
    from shared.worker.worker import Worker

    channels = ["video_clip", "video_mae", "video_qwen3vl"]
    env = {"MODEL_DIR": str(model_dir), "WORKER_TASKS": "embed_item", "WORKER_CHANNELS": ",".join(channels)}
    settings = WorkerSettings.from_env(env, cuda_available=lambda: False)
    worker = Worker(settings, load_models(settings))

    def download(url: str, dest: Path, max_bytes: int) -> Path:
        out = dest / "source.mp4"
        shutil.copy(source, out)
        return out

    worker.download = download
    worker.upload = lambda url, data, ctype: None
    rows = []
    for name in channels:
        job = {
            "id": "bench",
            "input": {
                "task": "embed_item",
                "item": {"owner_id": "bench", "item_id": "minute", "modality": "video"},
                "source_url": "https://bench.example.com/minute.mp4",
                "channels": [name],
                "outputs": {name: "https://bench.example.com/out"},
            },
        }
        best: dict[str, Any] | None = None
        for _ in range(repeats + 1):
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
            out = asyncio.run(worker.handle(job))
            wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
            meta = out["channels"][name]
            if meta["status"] != "succeeded":
                raise SystemExit(f"{name} failed: {meta['error']}")
            row = {
                "channel": name,
                "wall_s": round(wall, 3),
                "cpu_s": round(cpu, 3),
                "model_s": meta["seconds"],
                "frames": meta.get("frames"),
                "frame_size": meta.get("frame_size"),
            }
            if best is None or row["wall_s"] < best["wall_s"]:
                best = row
        rows.append(best)
    worker.close()
    return rows


def build_2b(out: Path, text_layers: int, vision_blocks: int, model_dir: Path) -> None:
    """Real 2B widths at the given depths, random weights, in the hub layout (tokenizer and processor
    files from the dev model: the tokens that matter, frames and special tokens, are the same)."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from shared.models import registry

    dev = registry.model_path(model_dir, "qwen3-vl-embedding-2b")
    out.mkdir(parents=True, exist_ok=True)
    for f in dev.iterdir():
        if f.name not in ("model.safetensors", "config.json"):
            shutil.copy(f, out / f.name)
    dev_cfg = json.loads((dev / "config.json").read_text())
    ids = {
        k: dev_cfg[k]
        for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    }
    vision = dict(REAL_VISION, depth=vision_blocks)
    vision["deepstack_visual_indexes"] = [
        i for i in REAL_VISION["deepstack_visual_indexes"] if i < vision_blocks
    ] or [0]
    cfg = Qwen3VLConfig(
        text_config=dict(REAL_TEXT, num_hidden_layers=text_layers),
        vision_config=vision,
        tie_word_embeddings=True,
        **ids,
    )
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(cfg)
    model.save_pretrained(out, safe_serialization=True)
    del model


def bench_2b(source: Path, model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from shared.media import probe, sample_frames
    from shared.models.qwen3vl import Qwen3VLBackend, VideoInput
    from shared.worker.channels.video_qwen3vl import video_plan
    from shared.worker.settings import MRL_DIMS

    info = probe(source)
    plan = video_plan()
    n = plan.frame_count(info.duration)
    h, w = plan.frame_size(info.height, info.width, n)
    t0 = time.perf_counter()
    frames = sample_frames(source, n, max_side=max(h, w))
    decode_s = time.perf_counter() - t0
    item = VideoInput(frames.frames, frames.timestamps)
    result: dict[str, Any] = {"frames": n, "frame_size": [h, w], "decode_s": round(decode_s, 3)}
    tmp = Path(tempfile.mkdtemp(prefix="bench-qwen2b-"))
    try:
        if args.full and not args.device.startswith("cuda"):
            build_2b(tmp / "m", 28, 24, model_dir)
            backend = Qwen3VLBackend.load(tmp / "m", device="cpu", precision="fp32")
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
            vec = backend.embed_videos([item])
            wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            result.update(
                device="cpu",
                precision="fp32",
                depth="full (28 text layers, 24 vision blocks)",
                wall_s=round(wall, 1),
                cpu_s=round(cpu, 1),
                peak_rss_gib=round(peak, 2),
                dims=int(vec.shape[1]),
            )
            return result
        if args.device.startswith("cuda"):
            build_2b(tmp / "m", 28, 24, model_dir)
            backend = Qwen3VLBackend.load(tmp / "m", device=args.device, precision=args.precision)
            backend.embed_videos([item])  # warm-up
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for _ in range(args.videos):
                vec = backend.embed_videos([item])
            torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            result.update(
                device=args.device,
                precision=backend.precision,
                videos_per_s=round(args.videos / seconds, 3),
                seconds_per_video=round(seconds / args.videos, 3),
                peak_vram_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                dims=int(vec.shape[1]),
                mrl_dims=list(MRL_DIMS),
            )
            return result
        points = []
        for layers in (int(x) for x in args.layers.split(",")):
            folder = tmp / f"l{layers}"
            build_2b(folder, layers, layers, model_dir)
            backend = Qwen3VLBackend.load(folder, device="cpu", precision="fp32")
            backend.embed_videos([item])  # warm-up (allocator, threads)
            best_wall, best_cpu = float("inf"), float("inf")
            for _ in range(args.repeats):
                cpu0, wall0 = cpu_seconds(), time.perf_counter()
                backend.embed_videos([item])
                best_wall = min(best_wall, time.perf_counter() - wall0)
                best_cpu = min(best_cpu, cpu_seconds() - cpu0)
            points.append((layers, best_wall, best_cpu))
            print(f"  layers={layers}: wall {best_wall:.2f} s, cpu {best_cpu:.2f} s", file=sys.stderr)
            del backend
            shutil.rmtree(folder, ignore_errors=True)
        ls = np.array([p[0] for p in points], float)
        fit = {}
        for i, what in ((1, "wall"), (2, "cpu")):
            ys = np.array([p[i] for p in points])
            slope, intercept = np.polyfit(ls, ys, 1)
            # text layers and vision blocks both scale with L here; the full model has 28 and 24, so
            # the extrapolation takes 28 of the measured per-L cost (an upper bound by 4 vision blocks)
            fit[f"{what}_s_extrapolated_28_layers"] = round(float(intercept + slope * 28), 1)
            fit[f"{what}_s_per_layer"] = round(float(slope), 2)
        result.update(device="cpu", precision="fp32", measured=points, **fit)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    import os

    from shared.dev.models import setup_dev_models
    from shared.settings import model_dir_from

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--size", default="640x360", help="WxH of the synthetic video")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--arch", choices=("tiny", "2b"), default="tiny")
    p.add_argument("--layers", default="1,2", help="--arch 2b on the CPU: the depths to time")
    p.add_argument("--full", action="store_true", help="--arch 2b on the CPU: the full depth, timed once")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="bf16", help="--device cuda only; the CPU runs fp32")
    p.add_argument("--videos", type=int, default=8, help="--device cuda: embeddings to time")
    args = p.parse_args(argv)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device", file=sys.stderr)
            return 2
    width, height = (int(x) for x in args.size.split("x"))
    model_dir = model_dir_from(os.environ)
    setup_dev_models(model_dir, ["clip-vit-b-32", "videomae-base", "qwen3-vl-embedding-2b"])
    with tempfile.TemporaryDirectory(prefix="bench-qwen3vl-") as d:
        source = make_source(args.seconds, (width, height), Path(d))
        print(
            f"source: {args.seconds:.0f} s {width}x{height} H.264, {source.stat().st_size} bytes",
            file=sys.stderr,
        )
        if args.arch == "tiny":
            rows = bench_channels(source, model_dir, args.repeats)
            print("| channel | wall s | CPU s | model s | frames | frame size |")
            print("|---|---|---|---|---|---|")
            for r in rows:
                size = "x".join(map(str, r["frame_size"])) if r["frame_size"] else "-"
                print(
                    f"| {r['channel']} | {r['wall_s']} | {r['cpu_s']} | {r['model_s']} "
                    f"| {r['frames']} | {size} |"
                )
        else:
            print(json.dumps(bench_2b(source, model_dir, args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
