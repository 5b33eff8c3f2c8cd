"""Transcription benchmark: faster-whisper tiny.en (CTranslate2) vs transformers Whisper, same audio.

    .venv/bin/python -m bench.bench_whisper                    # ~46 s of espeak-ng speech, 2 threads
    .venv/bin/python -m bench.bench_whisper --repeats 1 --threads 2 --model-dir .models

Audio: espeak-ng reads a paragraph (cached under .cache/bench/), decoded to 16 kHz mono. Both sides run
on CPU with the same thread count, beam size 5 and no VAD, over the same 30 s windows.

The reference is transformers' WhisperForConditionalGeneration with the tiny.en architecture
(d_model 384, 4+4 layers, 6 heads, vocab 51864). No transformers Whisper weights are reachable here and
a CTranslate2 model cannot be converted back, so the reference has RANDOM weights; to make its compute
equal, each window is forced to decode exactly as many tokens as faster-whisper decoded for that window
(min_new_tokens = max_new_tokens = n, timestamps counted as tokens, +1 for end-of-text). Its text is
meaningless; its time is what the same work costs in transformers. Rows: the reference (fp32),
faster-whisper float32 (like for like: the only row compared with the reference) and faster-whisper
int8 (the worker's CPU default, its own row: compared with faster-whisper float32 only, since
quantisation is a different trade). Prints a markdown table: median wall time of --repeats,
real-time factor, the like-for-like speedups, and the word error rate of faster-whisper's transcript.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np

from shared.dev.media import read_wav_16k, word_error_rate
from shared.settings import REPO_ROOT, model_dir_from

RATE = 16000
WINDOW = 30 * RATE
PARAGRAPH = (
    "The museum opens at nine in the morning and closes at six in the evening. "
    "Visitors can buy tickets online or at the front desk, and children under twelve enter for free. "
    "On the first floor you will find paintings from the seventeenth century, and on the second floor "
    "a collection of old maps, clocks and musical instruments. Guided tours leave every hour from the "
    "main hall and last about forty minutes. Please do not touch the paintings, and keep your bags in "
    "the lockers near the entrance. The cafe on the top floor serves coffee, tea, soup and sandwiches "
    "until half past five. We hope you enjoy your visit and come back soon."
)
TINY_EN = dict(
    vocab_size=51864,
    num_mel_bins=80,
    d_model=384,
    encoder_layers=4,
    decoder_layers=4,
    encoder_attention_heads=6,
    decoder_attention_heads=6,
    encoder_ffn_dim=1536,
    decoder_ffn_dim=1536,
    max_source_positions=1500,
    max_target_positions=448,
    decoder_start_token_id=50257,
    bos_token_id=50257,
    eos_token_id=50256,
    pad_token_id=50256,
)


def speech(cache: Path) -> np.ndarray:
    path = cache / "whisper_speech.wav"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise SystemExit("espeak-ng is not installed: apt-get install -y espeak-ng")
        subprocess.run([exe, "-v", "en-us", "-s", "150", "-w", str(path), PARAGRAPH], check=True, timeout=120)
    return read_wav_16k(path)


def windows_and_tokens(folder: Path, audio: np.ndarray, threads: int) -> list[tuple[int, int]]:
    """(start sample, tokens decoded) per 30 s window, from a faster-whisper int8 pass (untimed)."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=threads)
    segments, _ = model.transcribe(audio, beam_size=5, vad_filter=False)
    per_seek: Counter[int] = Counter()
    for seg in segments:
        per_seek[seg.seek] += len(seg.tokens)
    return [(seek * 160, n + 1) for seek, n in sorted(per_seek.items())]  # +1: end-of-text


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up (allocations, lazy init)
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def reference(audio: np.ndarray, plan: list[tuple[int, int]], threads: int):
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(**TINY_EN)).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=50257,
        bos_token_id=50257,
        eos_token_id=50256,
        pad_token_id=50256,
        no_timestamps_token_id=50362,
        is_multilingual=False,
        max_length=448,
    )
    extractor = WhisperFeatureExtractor(feature_size=80, sampling_rate=RATE)

    def run() -> int:
        decoded = 0
        with torch.inference_mode():
            for start, n in plan:
                feats = extractor(audio[start : start + WINDOW], sampling_rate=RATE, return_tensors="pt")
                out = model.generate(
                    feats["input_features"], num_beams=5, do_sample=False, min_new_tokens=n, max_new_tokens=n
                )
                decoded += int(out.shape[-1])
        return decoded

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-dir", default=None, help="default: MODEL_DIR or <repo>/.models")
    args = parser.parse_args()

    from shared.dev.models import setup_dev_models
    from shared.models.whisper import WhisperBackend

    model_dir = Path(args.model_dir) if args.model_dir else model_dir_from(os.environ)
    folder = setup_dev_models(model_dir, ["whisper-tiny.en"])["whisper-tiny.en"]
    audio = speech(REPO_ROOT / ".cache" / "bench")
    seconds = len(audio) / RATE
    plan = windows_and_tokens(folder, audio, args.threads)
    tokens = sum(n for _, n in plan)
    load = os.getloadavg()[0]

    rows = []
    ref_s, ref_tokens = timed(reference(audio, plan, args.threads), args.repeats)
    rows.append(
        (
            "transformers WhisperForConditionalGeneration (random weights, forced tokens)",
            "fp32",
            ref_s,
            ref_tokens,
            "n/a",
        )
    )
    for compute_type in ("float32", "int8"):
        backend = WhisperBackend.load(folder, compute_type=compute_type, cpu_threads=args.threads)
        s, result = timed(lambda b=backend: b.transcribe(audio, vad=False, beam_size=5), args.repeats)
        rows.append(
            (
                f"faster-whisper tiny.en ({backend.model_label.split('@')[0]})",
                compute_type,
                s,
                tokens,
                f"{word_error_rate(PARAGRAPH, result['text']):.3f}",
            )
        )

    print(
        f"\naudio: {seconds:.1f} s espeak-ng speech, {len(plan)} windows, {tokens} tokens per system; "
        f"beam 5, no VAD, {args.threads} threads, median of {args.repeats}; load avg at start {load:.1f}\n"
    )
    fp32_s = rows[1][2]
    print(
        "| system | precision | wall s | x real-time | tokens | vs transformers fp32 "
        "| vs faster-whisper fp32 | WER |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, precision, s, n, w in rows:
        like = f"{ref_s / s:.2f}x" if precision in ("fp32", "float32") else "- (not like for like)"
        own = f"{fp32_s / s:.2f}x" if name.startswith("faster-whisper") else "-"
        print(f"| {name} | {precision} | {s:.2f} | {seconds / s:.1f} | {n} | {like} | {own} | {w} |")
    print(
        "\nreference decodes as many tokens as faster-whisper did per window (equal compute); its text is "
        "meaningless (no transformers weights reachable offline)."
    )


if __name__ == "__main__":
    main()
