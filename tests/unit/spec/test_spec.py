"""The spec: fingerprints are stable, local to a channel, and sensitive to what determines outputs."""

from __future__ import annotations

import dataclasses
import re
from types import MappingProxyType

import pytest

from shared import spec
from shared.models import registry

pytestmark = pytest.mark.unit


def test_default_channels_match_design():
    assert set(spec.CHANNELS) == {
        "video_clip",
        "video_mae",
        "audio_wav2vec2",
        "transcript",
        "text_transcript",
        "text_meta",
        "text_fused",
        "image_clip",
        "person_query",
        "video_qwen3vl",
        "scenes",
        "scene_text",
    }
    assert set(spec.RUNPOD_CHANNELS) == {
        "video_clip",
        "video_mae",
        "audio_wav2vec2",
        "transcript",
        "image_clip",
        "video_qwen3vl",
        "scenes",
    }
    assert spec.CHANNELS["text_fused"].dims == 768
    assert spec.CHANNELS["text_meta"].dims == 384


def test_every_channel_model_is_in_registry_with_matching_dims():
    for ch in spec.CHANNELS.values():
        if ch.model is None:
            continue
        entry = registry.get(ch.model)
        assert entry.runs_on == ch.runs_on, ch.name
        if ch.dims is not None:
            assert entry.dims == ch.dims, ch.name


def test_fingerprints_are_deterministic_and_distinct():
    first = spec.fingerprints()
    assert first == spec.fingerprints()
    assert len(set(first.values())) == len(first)
    assert all(re.fullmatch(r"[0-9a-f]{16}", fp) for fp in first.values())


def test_spec_version_is_label_plus_short_hash():
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}-[0-9a-f]{8}", spec.SPEC_VERSION)
    assert spec.SPEC_VERSION.startswith(spec.SPEC_LABEL)


def test_changing_one_channels_model_changes_only_that_channel():
    changed = dict(spec.CHANNELS)
    changed["image_clip"] = dataclasses.replace(
        spec.CHANNELS["image_clip"], model="clip-eva02-l-14-336", dims=768
    )
    changed = MappingProxyType(changed)
    before, after = spec.fingerprints(), spec.fingerprints(changed)
    assert {n for n in before if before[n] != after[n]} == {"image_clip"}
    assert spec.spec_version(changed) != spec.SPEC_VERSION


def test_a_model_revision_change_reaches_every_channel_using_it(monkeypatch):
    entry = registry.get("clip-vit-b-32")
    bumped = dataclasses.replace(entry, revision="0" * 40)
    patched = MappingProxyType({**registry.REGISTRY, "clip-vit-b-32": bumped})
    before = spec.fingerprints()
    monkeypatch.setattr(registry, "REGISTRY", patched)
    after = spec.fingerprints()
    assert {n for n in before if before[n] != after[n]} == {"video_clip", "image_clip", "scenes"}


def test_registry_entries_are_pinned_and_complete():
    for entry in registry.REGISTRY.values():
        assert re.fullmatch(r"[0-9a-f]{40}", entry.revision), entry.name
        assert entry.files, entry.name
        assert entry.runs_on in {"lambda", "runpod"}


def test_require_model_names_directory_and_command(tmp_path):
    with pytest.raises(registry.ModelNotFound) as err:
        registry.require_model(tmp_path, "minilm-l6-v2")
    assert str(tmp_path / "minilm-l6-v2") in err.value.message
    assert "se bake" in err.value.message and "se setup-models" in err.value.message


def test_video_qwen3vl_is_in_the_spec_but_off_by_default():
    from shared.pipeline.settings import DEFAULT_CHANNELS, PipelineSettings
    from shared.worker.settings import WorkerSettings

    ch = spec.CHANNELS["video_qwen3vl"]
    assert ch.default_on is False and ch.dims == registry.get(ch.model).dims == 2048
    assert [n for n, c in spec.CHANNELS.items() if not c.default_on] == [
        "scenes",
        "scene_text",
        "video_qwen3vl",
    ]
    assert "video_qwen3vl" not in DEFAULT_CHANNELS and "video_clip" in DEFAULT_CHANNELS
    assert "video_qwen3vl" not in WorkerSettings().channels
    # the deployment's channel settings turn it on
    assert (
        "video_qwen3vl"
        in PipelineSettings.from_env(
            {"PIPELINE_CHANNELS": "video_clip,video_qwen3vl", "MEDIA_BUCKET": "b", "LEDGER_TABLE": "t"}
        ).channels
    )
    worker = WorkerSettings.from_env({"WORKER_CHANNELS": "video_qwen3vl"}, cuda_available=lambda: False)
    assert worker.embed_channels == ("video_qwen3vl",) and "qwen3-vl-embedding-2b" in worker.required_models()


def test_default_on_is_not_part_of_the_fingerprint():
    ch = spec.CHANNELS["video_qwen3vl"]
    assert dataclasses.replace(ch, default_on=True).fingerprint == ch.fingerprint
    changed = dataclasses.replace(ch, preprocessing=MappingProxyType({**ch.preprocessing, "fps": 2.0}))
    assert changed.fingerprint != ch.fingerprint
