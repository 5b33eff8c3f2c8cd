"""Audio decoding to 16 kHz mono float32 across containers and codecs."""

from pathlib import Path

import numpy as np
import pytest

from shared.dev.media import SyntheticVideo, make_audio, mux_speech_into_mp4
from shared.errors import MediaError
from shared.media import decode_audio

pytestmark = pytest.mark.integration


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("suffix", [".wav", ".mp3", ".m4a", ".ogg", ".webm", ".flac"])
def test_formats_resample_to_16k_mono_float32(media_dir: Path, suffix: str) -> None:
    path = make_audio(media_dir / f"tone660{suffix}", 1.0, 660.0, layout="stereo")
    audio = decode_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    # codec priming/padding adds at most a few ms
    assert abs(len(audio) - 16000) <= 400
    assert dominant_hz(audio, 16000) == pytest.approx(660.0, abs=3)  # a wrong rate would shift the pitch
    rms = float(np.sqrt(np.mean(audio**2)))
    assert 0.3 < rms < 0.4  # 0.5-amplitude sine: 0.354
    assert float(np.abs(audio).max()) <= 1.0


def test_wav_at_44k_stereo_is_downmixed_and_resampled(media_dir: Path) -> None:
    path = make_audio(media_dir / "tone44k.wav", 2.0, 1000.0, layout="stereo", wav_rate=44100)
    audio = decode_audio(path)
    assert len(audio) == 32000
    assert dominant_hz(audio, 16000) == pytest.approx(1000.0, abs=2)
    audio8k = decode_audio(path, sample_rate=8000)
    assert len(audio8k) == 16000


def test_max_seconds_caps_the_output(media_dir: Path) -> None:
    path = make_audio(media_dir / "long.wav", 95.0, 440.0)
    assert len(decode_audio(path)) == 90 * 16000  # the default cap
    assert len(decode_audio(path, max_seconds=1.5)) == 24000
    assert len(decode_audio(path, max_seconds=None)) == 95 * 16000


def test_audio_track_of_a_video(cfr_mp4: SyntheticVideo, vp9_webm: SyntheticVideo) -> None:
    for video, seconds in ((cfr_mp4, 4.0), (vp9_webm, 3.0)):
        audio = decode_audio(video.path)
        assert abs(len(audio) / 16000 - seconds) < 0.1
        assert dominant_hz(audio, 16000) == pytest.approx(440.0, abs=3)


def test_speech_track_from_espeak(media_dir: Path) -> None:
    video = mux_speech_into_mp4(media_dir / "speech.mp4", "the quick brown fox jumps over the lazy dog")
    audio = decode_audio(video.path)
    assert abs(len(audio) / 16000 - video.frame_times[-1]) < 0.5
    assert float(np.sqrt(np.mean(audio**2))) > 0.01
    assert float(np.abs(audio[-4000:]).max()) < 0.01  # the 0.5 s silent tail


def test_video_without_audio(one_gop_mp4: SyntheticVideo) -> None:
    with pytest.raises(MediaError, match="no audio stream"):
        decode_audio(one_gop_mp4.path)


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "empty"), (b"RIFF\x00\x00garbage" * 30, "not a readable media file")],
)
def test_corrupt_audio(media_dir: Path, content: bytes, match: str) -> None:
    bad = media_dir / "bad.wav"
    bad.write_bytes(content)
    with pytest.raises(MediaError, match=match):
        decode_audio(bad)
