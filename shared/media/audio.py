"""Audio decoding to mono float32 at a fixed rate with PyAV's resampler (audio-only and video files)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from shared.errors import MediaError
from shared.media._av import decode_error, open_input


def decode_audio(
    path: Path | str, *, sample_rate: int = 16000, max_seconds: float | None = 90.0
) -> np.ndarray:
    """Decode the first audio stream to float32 mono in [-1, 1] at `sample_rate` Hz.

    Decoding stops once `max_seconds` of output exist (None: the whole stream); the result is cut to
    exactly that many samples. Raises MediaError for a file with no audio stream, or one that is
    corrupt or yields no samples.
    """
    if sample_rate <= 0:
        raise ValueError("sample_rate must be positive")
    limit = None if max_seconds is None else round(max_seconds * sample_rate)
    with open_input(path) as container:
        if not container.streams.audio:
            raise MediaError("no audio stream")
        stream = container.streams.audio[0]
        stream.codec_context.thread_type = "AUTO"
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
                        total += chunks[-1].size
                if limit is not None and total >= limit:
                    break
            else:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().reshape(-1))
        except av.FFmpegError as e:
            raise decode_error("the audio stream", e) from e
    if not chunks:
        raise MediaError("the audio stream has no decodable samples")
    samples = np.concatenate(chunks)[:limit]
    np.clip(samples, -1.0, 1.0, out=samples)
    return samples.astype(np.float32, copy=False)
