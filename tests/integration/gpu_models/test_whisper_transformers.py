"""WHISPER_BACKEND=transformers: random weights on the real whisper tiny.en architecture (shapes, not
words), loaded through the same code as distil-whisper-large-v3, and the max_new_tokens rule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from shared.dev.media import AUDIO_RATE, make_tone
from shared.errors import InvalidInput
from shared.models import registry
from shared.models.whisper_hf import PROMPT_TOKENS, TransformersWhisperBackend, max_new_tokens_for

pytestmark = pytest.mark.integration


def well_formed(result: dict, duration: float) -> None:
    assert set(result) == {"text", "segments", "language", "duration"}
    assert result["duration"] == pytest.approx(duration, abs=0.01)
    assert result["language"] == "en" and isinstance(result["text"], str)
    for seg in result["segments"]:
        assert set(seg) == {"start", "end", "text"}
        assert 0.0 <= seg["start"] <= seg["end"] <= result["duration"]
        assert isinstance(seg["start"], float) and seg["text"]
    assert result["text"] == " ".join(s["text"] for s in result["segments"])


def test_the_dev_checkpoint_is_tiny_en_shaped_and_labelled_random(gpu_model_dir: Path, whisper_hf) -> None:
    folder = registry.model_path(gpu_model_dir, "distil-whisper-large-v3")
    config = json.loads((folder / "config.json").read_text())
    assert (config["d_model"], config["encoder_layers"], config["decoder_layers"]) == (384, 4, 4)
    assert (config["vocab_size"], config["num_mel_bins"], config["max_target_positions"]) == (51864, 80, 448)
    assert whisper_hf.random is True and whisper_hf.english_only is True
    assert whisper_hf.model_label == "distil-whisper-large-v3:random-weights"


def test_transcribes_to_faster_whispers_shape(whisper_hf) -> None:
    well_formed(whisper_hf.transcribe(make_tone(2.0, 440.0), beam_size=1), 2.0)
    well_formed(whisper_hf.transcribe(np.zeros(0, dtype=np.float32)), 0.0)


def test_long_audio_goes_through_sequential_long_form(whisper_hf) -> None:
    audio = (0.1 * np.random.default_rng(0).standard_normal(35 * AUDIO_RATE)).astype(np.float32)
    well_formed(whisper_hf.transcribe(audio, beam_size=1), 35.0)


def test_refuses_what_it_cannot_do(whisper_hf) -> None:
    with pytest.raises(InvalidInput, match="word timestamps"):
        whisper_hf.transcribe(make_tone(1.0, 440.0), word_timestamps=True)
    with pytest.raises(InvalidInput, match="English-only"):
        whisper_hf.transcribe(make_tone(1.0, 440.0), language="de")
    with pytest.raises(InvalidInput, match="mono"):
        whisper_hf.transcribe(np.zeros((2, 100), dtype=np.float32))


def test_max_new_tokens_rule() -> None:
    room = 448 - PROMPT_TOKENS
    assert max_new_tokens_for(448, 448, 0) is None  # the checkpoint's own limit does not truncate
    assert max_new_tokens_for(448, None, 0) is None
    assert max_new_tokens_for(448, 20, 0) == room  # a max_length that would cut every window short
    assert max_new_tokens_for(448, 20, 100) == 100  # WHISPER_MAX_NEW_TOKENS overrides
    assert max_new_tokens_for(448, 448, 10_000) == room  # never past the decoder's positions


def test_a_checkpoint_whose_generation_config_truncates_gets_max_new_tokens(
    gpu_model_dir: Path, tmp_path: Path
) -> None:
    src = registry.model_path(gpu_model_dir, "distil-whisper-large-v3")
    dst = tmp_path / "distil-whisper-large-v3"
    shutil.copytree(src, dst)
    gen = json.loads((dst / "generation_config.json").read_text())
    gen["max_length"] = 20  # what generation defaults to when a repo's config says nothing better
    (dst / "generation_config.json").write_text(json.dumps(gen))
    backend = TransformersWhisperBackend.from_model_dir(tmp_path)
    assert backend.max_new_tokens == 448 - PROMPT_TOKENS
    assert TransformersWhisperBackend.from_model_dir(tmp_path, max_new_tokens=7).max_new_tokens == 7
    assert TransformersWhisperBackend.from_model_dir(gpu_model_dir).max_new_tokens is None
