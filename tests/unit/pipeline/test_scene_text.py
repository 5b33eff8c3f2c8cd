"""scene_text, the Lambda channel over transcript + scenes (issue 23, item 2), on the in-memory stack:
it runs once both dependencies settle, one MiniLM row per scene aligned with the scenes artifact, the
words of each scene's span; what it cannot read fails it with a reason and writes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from shared import spec
from shared.dev.fakes import FakeBackend
from shared.errors import InvalidInput
from shared.pipeline.core import artifact_key
from shared.search.rows import check_spans, scene_texts
from shared.vectors import load_npy

from .test_state_machine import Machine

SCENES = ("video_clip", "transcript", "scenes", "scene_text")
MINILM = FakeBackend(384)


def test_scene_texts_take_the_words_whose_midpoints_lie_in_each_span() -> None:
    segments = [
        {"start": 0.0, "end": 4.0, "text": "one two three four"},  # words at 0.5, 1.5, 2.5, 3.5
        {"start": 6.0, "end": 7.0, "text": "  five "},
        {"start": 9.0, "end": 8.0, "text": "backwards"},  # dropped, like the index's windows drop it
        {"start": 20.0, "end": 21.0, "text": "after the end"},
    ]
    spans = [(0.0, 2.0), (2.0, 3.0), (3.0, 5.0), (5.0, 6.0), (6.0, 10.0)]
    assert scene_texts(segments, spans) == ["one two", "three", "four", "", "five"]
    assert scene_texts("not a list", spans) == [""] * 5
    # the last scene holds its own end
    assert scene_texts([{"start": 0.0, "end": 2.0, "text": "edge"}], [(0.0, 0.5), (0.5, 1.0)]) == ["", "edge"]


@pytest.mark.parametrize(
    "spans",
    [None, "0-1", [[0, 1], [1]], [[0, 1], [2, 1]], [[-1, 1]], [[0, float("nan")]], [[2, 3], [0, 1]]],
)
def test_spans_that_cannot_be_scene_spans_are_refused(spans) -> None:
    with pytest.raises(InvalidInput) as e:
        check_spans(spans, 8)
    assert e.value.field == "scene_spans"


def test_more_spans_than_the_limit_are_refused_before_any_is_read() -> None:
    with pytest.raises(InvalidInput, match="more than 2"):
        check_spans([[0, 1], [1, 2], "never read"], 2)


def test_scene_text_runs_once_transcript_and_scenes_settle() -> None:
    ch = spec.CHANNELS["scene_text"]
    assert ch.runs_on == spec.LAMBDA and set(ch.depends_on) == {"transcript", "scenes"} and ch.per_row
    m = Machine(channels=SCENES)
    m.upload("o", "v")
    job = m.runpod.jobs[m.job("o", "v")]
    assert job["input"]["channels"] == ["video_clip", "transcript", "scenes"]  # scene_text is not a GPU job
    assert m.webhook("o", "v", m.runpod.finish(m.job("o", "v"))) == "applied"
    item, rows = m.ledger.rows("o", "v")
    assert item["status"] == "COMPLETE" and rows["scene_text"]["status"] == "SUCCEEDED"
    matrix = load_npy(m.storage.objects[artifact_key("scene_text", "o", "v")][0], "scene_text")
    assert matrix.shape == (1 + 4, 384)  # row 0 + the stand-in's 4 scenes
    # the canned transcript "canned transcript for load tests" (0..1 s) over scenes of 0.25 s
    texts = ["canned", "transcript", "for load", "tests"]
    np.testing.assert_allclose(matrix[1:], MINILM.embed(texts), atol=1e-6)
    pooled = MINILM.embed(texts).mean(axis=0)
    np.testing.assert_allclose(matrix[0], pooled / np.linalg.norm(pooled), atol=1e-6)
    assert rows["scene_text"]["dims"] == 384 and rows["scene_text"]["model"] == "fake"


def test_a_scenes_row_without_spans_fails_scene_text_with_its_reason_and_writes_nothing(monkeypatch) -> None:
    from shared.pipeline import results

    real = results.Results._check_channel

    def no_spans(self, *a, **kw):
        status, fields = real(self, *a, **kw)
        if fields.get("spans"):
            fields["spans"] = None  # a scenes row written before spans were kept
        return status, fields

    monkeypatch.setattr(results.Results, "_check_channel", no_spans)
    m = Machine(channels=SCENES)
    m.upload("o", "v")
    m.webhook("o", "v", m.runpod.finish(m.job("o", "v")))
    item, rows = m.ledger.rows("o", "v")
    assert rows["scene_text"]["status"] == "FAILED"
    assert rows["scene_text"]["error"]["message"] == "scenes: the scenes result keeps no scene spans"
    assert artifact_key("scene_text", "o", "v") not in m.storage.objects
    assert item["status"] == "PARTIAL"


def test_a_video_where_nothing_is_said_gets_the_empty_texts_vector_in_every_row() -> None:
    from shared.dev.memory_stack import MemoryStorage
    from shared.pipeline.lambda_channels import Reader, runner
    from shared.pipeline.settings import PipelineSettings

    storage = MemoryStorage()
    storage.put(artifact_key("transcript", "o", "v"), b'{"text": "", "segments": []}')
    rows = {"scenes": {"spans": [[0.0, 1.0], [1.0, 2.0]]}}
    read = Reader(storage, PipelineSettings(bucket="b", table="t"), "o", "v", {}, {}, rows)
    matrix = runner("scene_text").compute(MINILM, read)
    np.testing.assert_allclose(matrix, np.repeat(MINILM.embed([""]), 3, axis=0), atol=1e-6)
    too_many = {"scenes": {"spans": [[i, i + 1] for i in range(spec.CHANNELS["scenes"].thumbnails + 1)]}}
    with pytest.raises(InvalidInput, match="more than"):  # refused before the transcript is read
        runner("scene_text").compute(
            MINILM, Reader(MemoryStorage(), read.settings, "o", "v", {}, {}, too_many)
        )
