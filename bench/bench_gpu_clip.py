"""CLIP ViT-B-32 fp16 image throughput on a GPU, JPEG decode included: the worker's own image path
(shared.media open_image/decode_image with image_clip's decode_plan/prepare_views, then
ClipBackend.embed_prepared: what a clip_image job runs, TTA off and on) vs nvJPEG decode on the GPU
(torchvision.io.decode_jpeg).

    python bench/bench_gpu_clip.py [--images 512] [--batch 64] [--size 1280x720] [--threads 4] [--repeats 3]

Needs a CUDA device (exits 2 with "no CUDA device" otherwise). The model is a ViT-B-32-shaped folder
with random weights (throughput does not depend on the weights), loaded by ClipBackend.load, the
worker's loader; the images are synthetic JPEGs made in memory. Prints images/s for: model only
(views prepared beforehand, the ceiling), the worker path (1 thread and --threads threads preparing,
TTA off; and TTA on, 5 views per image), the GPU decode path, the GPU/worker ratio, and the mean
cosine between the two paths' embeddings of the same images (decoders and resizers differ slightly).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
SIZE = 224


def make_jpegs(n: int, width: int, height: int) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    base_x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    base_y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    for i in range(n):
        img = (base_x * (i % 3) / 2 + base_y * ((i + 1) % 3) / 2) % 256
        img = np.broadcast_to(img, (height, width, 3)).copy()
        img += rng.normal(0, 12, size=(height // 8, width // 8, 3)).repeat(8, 0).repeat(8, 1)[:height, :width]
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> tuple[float, object]:
    fn()  # warm-up: cuDNN/nvJPEG handles, allocator
    sync()
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        sync()
        best = min(best, time.perf_counter() - started)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", default="1280x720", help="JPEG width x height")
    parser.add_argument("--threads", type=int, default=4, help="CPU decode threads for the threaded CPU row")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--device", default="cuda", help="cuda; cpu only smoke-tests the code (fp32, no timing value)"
    )
    args = parser.parse_args(argv)

    import torch

    on_gpu = args.device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        print(
            "no CUDA device: bench_gpu_clip measures GPU throughput; run it on a GPU machine", file=sys.stderr
        )
        return 2

    import tempfile
    from pathlib import Path

    import torch.nn.functional as F
    from torchvision.io import decode_jpeg

    from bench.bench_batching import build_full_text_tower
    from shared.media import decode_image, open_image
    from shared.models.clip import ClipBackend
    from shared.worker.channels.image_clip import decode_plan, prepare_views
    from shared.worker.settings import WorkerSettings

    width, height = (int(v) for v in args.size.lower().split("x"))
    device = torch.device(args.device)
    precision = "fp16" if on_gpu else "fp32"
    folder = build_full_text_tower(Path(tempfile.mkdtemp(prefix="bench-clip-")) / "clip", full_vision=True)
    clip = ClipBackend.load(folder, device=args.device, precision=precision, name="clip-vit-b-32")
    jpegs = make_jpegs(args.images, width, height)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            feats = clip._model.encode_image(pixels.to(clip._dtype))
            return F.normalize(feats.float(), dim=-1)

    def batches() -> list[list[bytes]]:
        return [jpegs[i : i + args.batch] for i in range(0, len(jpegs), args.batch)]

    settings = WorkerSettings.from_env({}, cuda_available=lambda: False)

    def worker_prep(data: bytes, tta: bool = False):
        header = open_image(data, max_pixels=50_000_000, max_aspect=8)
        plan = decode_plan(clip, settings, header)  # as the worker does: streamed, DCT-scaled
        return prepare_views(clip, decode_image(header, plan), tta=tta, settings=settings)

    def worker_path(pool: ThreadPoolExecutor | None, tta: bool = False) -> torch.Tensor:
        outs = []
        for chunk in batches():
            prep = (lambda b: worker_prep(b, tta)) if pool or tta else worker_prep
            prepared = list(pool.map(prep, chunk)) if pool else [prep(b) for b in chunk]
            outs.append(torch.from_numpy(clip.embed_prepared(prepared)))
        return torch.cat(outs)

    def gpu_prep(chunk: list[bytes]) -> torch.Tensor:
        raw = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in chunk]
        decoded = decode_jpeg(raw, device=device)  # list of uint8 [3, H, W] on the GPU
        out = []
        for img in decoded:
            h, w = img.shape[-2:]
            scale = SIZE / min(h, w)
            nh, nw = max(SIZE, round(h * scale)), max(SIZE, round(w * scale))
            x = F.interpolate(
                img[None].float(), size=(nh, nw), mode="bicubic", antialias=True, align_corners=False
            )
            top, left = (nh - SIZE) // 2, (nw - SIZE) // 2
            out.append(x[..., top : top + SIZE, left : left + SIZE])
        pixels = torch.cat(out).clamp_(0, 255) / 255.0
        return (pixels - mean) / std

    def gpu_path() -> torch.Tensor:
        return torch.cat([encode(gpu_prep(chunk)) for chunk in batches()])

    ready = [[worker_prep(b) for b in chunk] for chunk in batches()]

    def model_only() -> torch.Tensor:
        return torch.cat([torch.from_numpy(clip.embed_prepared(p)) for p in ready])

    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    rows = []
    t_model, _ = timed(model_only, args.repeats, sync)
    rows.append(("model only (views prepared)", t_model))
    t_cpu1, cpu_vecs = timed(lambda: worker_path(None), args.repeats, sync)
    rows.append(("worker path, 1 thread", t_cpu1))
    with ThreadPoolExecutor(args.threads) as pool:
        t_cpun, _ = timed(lambda: worker_path(pool), args.repeats, sync)
        rows.append((f"worker path, {args.threads} threads", t_cpun))
        t_tta, _ = timed(lambda: worker_path(pool, tta=True), args.repeats, sync)
        rows.append((f"worker path TTA, {args.threads} threads", t_tta))
    t_gpu, gpu_vecs = timed(gpu_path, args.repeats, sync)
    rows.append(("GPU nvJPEG decode", t_gpu))
    gpu_vecs = gpu_vecs.cpu()

    name = torch.cuda.get_device_name(0) if on_gpu else "CPU (smoke test only)"
    print(f"CLIP ViT-B-32 {precision} on {name}: {args.images} JPEGs {width}x{height}, batch {args.batch}")
    print(f"best of {args.repeats} runs\n")
    print(f"{'path':36s} {'seconds':>8s} {'images/s':>10s}")
    print("-" * 56)
    for label, secs in rows:
        print(f"{label:36s} {secs:8.3f} {args.images / secs:10.1f}")
    cos = (cpu_vecs * gpu_vecs).sum(dim=1)
    one, many = t_cpu1 / t_gpu, t_cpun / t_gpu
    print(f"\nGPU decode vs worker path: {one:.2f}x (1 thread), {many:.2f}x ({args.threads} threads)")
    lo, avg = cos.min().item(), cos.mean().item()
    print(f"embedding agreement worker vs GPU path: cosine mean {avg:.4f}, min {lo:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
