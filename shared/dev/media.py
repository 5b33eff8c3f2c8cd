"""Deterministic synthetic media for the demo, tests and benches, made in-process with PyAV (plus
espeak-ng for speech). Dev tooling like shared.dev.models: never used to serve a request.

Frames made with frame_pattern="timestamp" carry their frame index in three horizontal grey bands
(base-32 digits, 8 grey levels apart, robust to lossy coding) and a red square in the top-left
corner, so a test can tell which frame was sampled and which way is up: see `read_frame_index`.
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

AUDIO_RATE = 16000
_BANDS = 3
_BASE = 32
_STEP = 8


@dataclass(frozen=True)
class SyntheticVideo:
    """What `make_video` wrote: frame_times[i] is the pts (seconds) of frame i, as encoded."""

    path: Path
    frame_times: list[float]
    width: int  # coded size (before display rotation)
    height: int
    fps: float
    rotation: int | None


def _pattern_frame(index: int, width: int, height: int, pattern: str) -> np.ndarray:
    img = np.zeros((height, width, 3), dtype=np.uint8)
    if pattern in ("timestamp", "timestamp+texture"):
        band_h = height // _BANDS
        digits = [(index // _BASE ** (_BANDS - 1 - b)) % _BASE for b in range(_BANDS)]
        for b, digit in enumerate(digits):
            img[b * band_h : (b + 1) * band_h if b < _BANDS - 1 else height, :, :] = (
                digit * _STEP + _STEP // 2
            )
        if pattern == "timestamp+texture":
            # A scrolling texture in the outer quarters gives the decoder real work (benchmarks);
            # read_frame_index only looks at the middle third.
            quarter = width // 4
            texture = _texture(height, quarter)
            img[:, :quarter] = np.roll(texture, 4 * index, axis=1)
            img[:, width - quarter :] = np.roll(texture, -3 * index, axis=0)
    elif pattern == "noise":
        rng = np.random.default_rng(index)
        img[:] = (
            rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
            .repeat(8, 0)
            .repeat(8, 1)[:height, :width]
        )
    else:
        raise ValueError(f"unknown frame_pattern {pattern!r}")
    marker = max(2, min(width, height) // 8) & ~1
    img[:marker, :marker] = (255, 0, 0)
    return img


@functools.cache
def _texture(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = [
        np.sin(x / 9.0 + c) * np.cos(y / (7.0 + 3 * c)) + 0.3 * np.sin((x + y) / 23.0) for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1) * 90 + 128, 0, 255).astype(np.uint8)


def read_frame_index(rgb: np.ndarray) -> int:
    """Decode the index written by frame_pattern="timestamp" from an upright RGB frame."""
    height, width = rgb.shape[:2]
    band_h = height // _BANDS
    grey = rgb.astype(np.float64).mean(axis=2)
    index = 0
    for b in range(_BANDS):
        y0, y1 = b * band_h + band_h // 4, b * band_h + 3 * band_h // 4
        x0, x1 = width // 3, 2 * width // 3
        value = float(np.median(grey[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]))
        index = index * _BASE + round((value - _STEP // 2) / _STEP)
    return index


def marker_corner(rgb: np.ndarray) -> str:
    """Which corner holds the red orientation marker: 'tl', 'tr', 'bl' or 'br'."""
    height, width = rgb.shape[:2]
    k = max(1, min(width, height) // 16)
    corners = {
        "tl": rgb[:k, :k],
        "tr": rgb[:k, -k:],
        "bl": rgb[-k:, :k],
        "br": rgb[-k:, -k:],
    }

    def redness(a: np.ndarray) -> float:
        a = a.astype(np.float64)
        return float((a[..., 0] - a[..., 1:].mean(axis=-1)).mean())

    return max(corners, key=lambda c: redness(corners[c]))


def _vfr_times(seconds: float, fps: float) -> list[float]:
    """Frame times whose gaps cycle through 0.5x, 1x, 2x the nominal period (deterministic)."""
    period = 1.0 / fps
    times, t, i = [], 0.0, 0
    while t < seconds - 1e-9:
        times.append(round(t, 3))
        t += period * (0.5, 1.0, 2.0)[i % 3]
        i += 1
    return times


def make_video(
    path: Path | str,
    *,
    seconds: float,
    fps: float = 10,
    size: tuple[int, int] = (64, 48),
    codec: str = "h264",
    rotation: int | None = None,
    vfr: bool = False,
    with_audio: bool = False,
    audio: np.ndarray | None = None,
    frame_pattern: str = "timestamp",  # or "timestamp+texture" (heavier to decode), "noise"
    gop: int | None = None,
    preset: str = "ultrafast",
    crf: int = 12,
    faststart: bool = False,
) -> SyntheticVideo:
    """Encode a small test video; the container comes from the suffix (.mp4, .webm, .mkv, .mov).

    codec: "h264" (libx264) or "vp9" (libvpx-vp9). rotation: display rotation in degrees
    counter-clockwise, stored as the container display matrix. vfr: irregular frame gaps on a
    1 ms time base. with_audio / audio: add an audio track (a 440 Hz tone for `seconds`, or the
    given 16 kHz mono float32 samples), AAC in mp4, Opus in webm. faststart: mp4 index (moov)
    before the data, so a truncated copy still opens. gop: keyframe interval in frames.
    """
    path = Path(path)
    width, height = size
    times = _vfr_times(seconds, fps) if vfr else [i / fps for i in range(round(seconds * fps))]
    container_fmt = {".mp4": "mp4", ".mov": "mov", ".webm": "webm", ".mkv": "matroska"}[path.suffix]
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=container_fmt, options=options) as out:
        if codec == "h264":
            vs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            vs.options = {"preset": preset, "crf": str(crf)}
        elif codec == "vp9":
            vs = out.add_stream("libvpx-vp9", rate=Fraction(fps).limit_denominator(1000))
            vs.options = {"crf": str(max(crf, 4)), "b": "0", "deadline": "realtime", "cpu-used": "8"}
        else:
            raise ValueError(f"unknown codec {codec!r}")
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.time_base = Fraction(1, 1000)
        if gop:
            vs.codec_context.gop_size = gop
        if rotation:
            vs.set_display_rotation(rotation)
        astream = None
        samples = None
        if with_audio or audio is not None:
            samples = audio if audio is not None else make_tone(seconds, 440.0)
            astream = out.add_stream(
                "aac" if codec == "h264" else "libopus", rate=48000 if codec == "vp9" else AUDIO_RATE
            )
            astream.layout = "mono"
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(
                _pattern_frame(i, width, height, frame_pattern), format="rgb24"
            )
            frame.pts = round(t * 1000)
            frame.time_base = Fraction(1, 1000)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        if astream is not None and samples is not None:
            _encode_audio(out, astream, samples, AUDIO_RATE)
    return SyntheticVideo(path, [float(t) for t in times], width, height, fps, rotation)


def make_tone(seconds: float, freq: float, rate: int = AUDIO_RATE) -> np.ndarray:
    """A float32 mono sine at 0.5 amplitude."""
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _encode_audio(
    out: av.container.OutputContainer, stream: av.AudioStream, samples: np.ndarray, rate: int
) -> None:
    resampler = av.AudioResampler(
        format=stream.codec_context.format.name,
        layout=stream.codec_context.layout.name,
        rate=stream.rate,
        frame_size=stream.codec_context.frame_size or None,  # aac/opus need fixed-size frames
    )
    chunk = 1024
    for start in range(0, len(samples), chunk):
        piece = np.ascontiguousarray(samples[start : start + chunk], dtype=np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(piece, format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for f in resampler.resample(frame):
            out.mux(stream.encode(f))
    for f in resampler.resample(None):
        out.mux(stream.encode(f))
    out.mux(stream.encode(None))


def make_audio(
    path: Path | str,
    seconds: float,
    freq: float = 440.0,
    *,
    samples: np.ndarray | None = None,
    layout: str = "mono",
    wav_rate: int = AUDIO_RATE,
) -> Path:
    """Write a tone (or the given 16 kHz mono samples) as .wav (pcm_s16le at wav_rate), .mp3, .m4a
    (aac), .ogg/.opus (opus), .webm (opus) or .flac, chosen by suffix; layout "stereo" duplicates it."""
    path = Path(path)
    data = samples if samples is not None else make_tone(seconds, freq)
    codec, fmt, rate = {
        ".wav": ("pcm_s16le", "wav", wav_rate),
        ".mp3": ("libmp3lame", "mp3", 44100),
        ".m4a": ("aac", "ipod", 48000),  # FFmpeg's aac clips a 44.1 kHz mono tone's tail
        ".ogg": ("libopus", "ogg", 48000),
        ".opus": ("libopus", "ogg", 48000),
        ".webm": ("libopus", "webm", 48000),
        ".flac": ("flac", "flac", AUDIO_RATE),
    }[path.suffix]
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        _encode_audio(out, stream, data, AUDIO_RATE)
    return path


def speech_wav(path: Path | str, text: str, *, voice: str = "en-us", words_per_minute: int = 150) -> Path:
    """Synthesise `text` with espeak-ng into a wav file (22.05 kHz mono s16)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install -y espeak-ng")
    path = Path(path)
    subprocess.run(
        [exe, "-v", voice, "-s", str(words_per_minute), "-w", str(path), text], check=True, timeout=60
    )
    return path


def read_wav_16k(path: Path | str) -> np.ndarray:
    """Decode any audio file to 16 kHz mono float32 (independent of shared.media, for fixtures)."""
    chunks = []
    with av.open(str(path)) as c:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        for frame in c.decode(audio=0):
            chunks.extend(f.to_ndarray()[0] for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray()[0] for f in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32)


def mux_speech_into_mp4(
    path: Path | str,
    text: str,
    seconds: float | None = None,
    *,
    size: tuple[int, int] = (64, 48),
    fps: float = 5,
) -> SyntheticVideo:
    """An mp4 (H.264 + AAC) whose audio track is `text` spoken by espeak-ng.

    seconds: video length; default = speech length + 0.5 s. The speech starts at 0.
    """
    path = Path(path)
    wav = path.with_suffix(".speech.wav")
    try:
        speech_wav(wav, text)
        samples = read_wav_16k(wav)
    finally:
        wav.unlink(missing_ok=True)
    length = seconds if seconds is not None else len(samples) / AUDIO_RATE + 0.5
    padded = np.zeros(round(length * AUDIO_RATE), dtype=np.float32)
    n = min(len(padded), len(samples))
    padded[:n] = samples[:n]
    return make_video(path, seconds=length, fps=fps, size=size, audio=padded)


def make_image_bytes(
    size: tuple[int, int] = (32, 24),
    mode: str = "RGB",
    fmt: str = "PNG",
    exif_orientation: int | None = None,
) -> bytes:
    """An image with a red top-left marker (in its stored orientation) encoded as `fmt`.

    mode: any Pillow mode ("RGB", "RGBA", "LA", "P", "CMYK", "L", "I;16", ...). Alpha modes are
    half transparent on the right half. exif_orientation: 1-8, written into the EXIF (JPEG/PNG/WebP).
    """
    width, height = size
    rgb = np.full((height, width, 3), 40, dtype=np.uint8)
    marker = max(1, min(width, height) // 4)
    rgb[:marker, :marker] = (255, 0, 0)
    img = Image.fromarray(rgb, "RGB")
    if mode in ("RGBA", "LA", "PA"):
        alpha = np.full((height, width), 255, dtype=np.uint8)
        alpha[:, width // 2 :] = 0
        base = img.convert("RGBA")
        base.putalpha(Image.fromarray(alpha, "L"))
        img = base.convert(mode) if mode != "PA" else base.convert("P")
    elif mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    elif mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257)
    else:
        img = img.convert(mode)
    buf = io.BytesIO()
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_with_claimed_size(width: int = 20000, height: int = 20000) -> bytes:
    """A tiny, otherwise valid-looking PNG whose IHDR claims width x height (CRC fixed)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def truncated(path: Path | str, keep: float = 0.5, *, dest: Path | str | None = None) -> Path:
    """Copy `path` keeping only the first `keep` fraction of its bytes (in place when dest is None)."""
    path = Path(path)
    data = path.read_bytes()
    out = Path(dest) if dest is not None else path
    out.write_bytes(data[: int(len(data) * keep)])
    return out


def words(text: str) -> list[str]:
    """Lower-cased words without punctuation, for word error rates."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference length."""
    ref, hyp = words(reference), words(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)


@dataclass(frozen=True)
class ShotVideo:
    """What `make_shot_video` wrote: the video, and the frame index where each hard cut starts a shot."""

    video: SyntheticVideo
    cuts: list[int]

    @property
    def cut_times(self) -> list[float]:
        return [self.video.frame_times[i] for i in self.cuts]


def _shot_image(seed: int, width: int, height: int, block: int = 8) -> np.ndarray:
    """A shot's look: coloured `block`-px blocks over a base hue, different enough between seeds to be a
    cut. Small blocks are all fine detail (a pan changes every pixel between frames seconds apart);
    larger ones are closer to a camera's picture."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    blocks = rng.integers(-60, 61, size=(height // block + 2, width // block + 2, 3))
    img = (base + blocks).clip(0, 255).astype(np.uint8).repeat(block, 0).repeat(block, 1)
    return img[: height + block, : width + block]


def make_shot_video(
    path: Path | str,
    shots: list[tuple[str, int]],
    *,
    fps: float = 10,
    size: tuple[int, int] = (64, 48),
    seed: int = 0,
    block: int = 8,
) -> ShotVideo:
    """Encode shots back to back (h264, every frame a keyframe-free GOP of 2 s). Each entry is
    (kind, frames): "pan" (a shot whose picture drifts 1 px a frame), "static" (one still picture) or
    "fade" (a cross-fade from the previous shot's last picture to the next shot's first, no cut).
    A "pan" or "static" shot that follows another directly starts with a hard cut."""
    path = Path(path)
    width, height = size
    cuts: list[int] = []
    looks = [_shot_image(seed * 1000 + i, width, height, block) for i in range(len(shots) + 1)]

    def frame_of(look: np.ndarray, j: int, moving: bool) -> np.ndarray:
        return np.roll(look, j if moving else 0, axis=1)[:height, :width]

    def pictures():  # made one at a time: a long video never sits in memory
        last = None
        for i, (kind, n) in enumerate(shots):
            if kind == "fade":
                prev, nxt = last.astype(np.float32), frame_of(looks[i + 1], 0, False).astype(np.float32)
                for j in range(n):
                    w = (j + 1) / (n + 1)
                    last = ((1 - w) * prev + w * nxt).round().astype(np.uint8)
                    yield last
                continue
            if i and shots[i - 1][0] != "fade":
                cuts.append(sum(m for _, m in shots[:i]))
            for j in range(n):
                last = frame_of(looks[i], j, kind == "pan")
                yield last

    times = [i / fps for i in range(sum(n for _, n in shots))]
    with av.open(str(path), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        vs.options = {"preset": "ultrafast", "crf": "12"}
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.time_base = Fraction(1, 1000)
        vs.codec_context.gop_size = max(1, round(2 * fps))
        for t, img in zip(times, pictures(), strict=True):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = round(t * 1000)
            frame.time_base = Fraction(1, 1000)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
    return ShotVideo(SyntheticVideo(path, times, width, height, fps, None), cuts)
