"""Deep health: the canary refuses NaN/inf, wrong dims, non-unit norms and collapsed outputs."""

from __future__ import annotations

import numpy as np
import pytest

from shared.errors import ModelUnhealthy
from shared.worker.health import check_embeddings, run_canaries
from shared.worker.models import Models
from tests.unit.worker.fakes import FakeClip, FakeVideoMAE, FakeWav2Vec2, FakeWhisper

pytestmark = pytest.mark.unit


def healthy() -> Models:
    return Models(clip=FakeClip(), whisper=FakeWhisper(), videomae=FakeVideoMAE(), wav2vec2=FakeWav2Vec2())


def test_healthy_models_pass_and_every_model_ran():
    models = healthy()
    timings = run_canaries(models)
    assert set(timings) == {"clip", "whisper", "videomae", "wav2vec2"}
    assert {what for what, _ in models.clip.calls} == {"text", "image-tta0", "frame"}
    assert models.videomae.seen == [(16, 96, 128, 3), (16, 96, 128, 3)]
    assert models.wav2vec2.seen == [16000, 16000]
    assert models.whisper.calls[0]["samples"] == 16000


def test_nan_output_refuses_to_serve():
    models = healthy()
    models.clip.nan = True
    with pytest.raises(ModelUnhealthy, match=r"clip-vit-b-32.*NaN"):
        run_canaries(models)


def test_wrong_dims_refuse_to_serve():
    models = healthy()
    models.wav2vec2 = FakeWav2Vec2(dims=512)
    with pytest.raises(ModelUnhealthy, match="wav2vec2-base: reports 512 dims, the registry says 768"):
        run_canaries(models)


def test_non_unit_vectors_refuse_to_serve():
    with pytest.raises(ModelUnhealthy, match="norm"):
        check_embeddings("m", "text canary", 3 * np.eye(2, 4, dtype=np.float32), 2, 4)


def test_collapsed_outputs_refuse_to_serve():
    same = np.tile(np.array([[0.6, 0.8]], np.float32), (2, 1))
    with pytest.raises(ModelUnhealthy, match="same vector"):
        check_embeddings("m", "text canary", same, 2, 2)


def test_wrong_shape_and_dtype_refuse_to_serve():
    with pytest.raises(ModelUnhealthy, match="shape"):
        check_embeddings("m", "x", np.eye(3, dtype=np.float32), 2, 3)
    with pytest.raises(ModelUnhealthy, match="float32"):
        check_embeddings("m", "x", np.eye(2, dtype=np.float64), 2, 2)


def test_inf_refuses_to_serve():
    arr = np.eye(2, dtype=np.float32)
    arr[1, 1] = np.inf
    with pytest.raises(ModelUnhealthy, match="NaN or inf"):
        check_embeddings("m", "x", arr, 2, 2)


def test_model_exception_propagates_as_is():
    models = healthy()
    models.videomae.fail = RuntimeError("CUDA error: device-side assert")
    with pytest.raises(RuntimeError, match="device-side"):
        run_canaries(models)


@pytest.mark.parametrize(
    "result",
    [
        {"text": None, "segments": [], "language": "en", "duration": 1.0},
        {"text": "", "segments": "x", "language": "en", "duration": 1.0},
        {"text": "", "segments": [], "language": "en", "duration": float("nan")},
        {"text": "", "segments": [], "language": "en", "duration": 30.0},
        {
            "text": "",
            "segments": [{"start": 1.0, "end": 0.5, "text": "x"}],
            "language": "en",
            "duration": 1.0,
        },
    ],
)
def test_malformed_transcripts_refuse_to_serve(result):
    models = Models(whisper=FakeWhisper())
    models.whisper.result = result
    with pytest.raises(ModelUnhealthy, match=r"whisper-tiny\.en"):
        run_canaries(models)


def test_nothing_loaded_is_unhealthy():
    with pytest.raises(ModelUnhealthy, match="no model"):
        run_canaries(Models())


def test_the_qwen3vl_canary_checks_videos_and_queries():
    from shared.models.deterministic import DeterministicEmbedder
    from shared.worker.settings import MRL_DIMS

    assert set(run_canaries(Models(qwen3vl=DeterministicEmbedder(2048, MRL_DIMS)))) == {"qwen3vl"}

    class Collapsed(DeterministicEmbedder):
        def embed_videos(self, items, instruction=None):
            return np.stack([self.vector("same", dims=self.dims)] * len(items))

    with pytest.raises(ModelUnhealthy, match="video canary maps different inputs"):
        run_canaries(Models(qwen3vl=Collapsed(2048, MRL_DIMS)))

    class Unnormalised(DeterministicEmbedder):
        def embed_texts(self, texts, instruction=None):
            return 2 * super().embed_texts(texts, instruction)

    with pytest.raises(ModelUnhealthy, match="text canary"):
        run_canaries(Models(qwen3vl=Unnormalised(2048, MRL_DIMS)))
