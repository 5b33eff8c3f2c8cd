"""Render docs/configuration.md from the settings declarations (shared.settings.setting).

    python -m shared.dev.settings_doc            # rewrite docs/configuration.md
    python -m shared.dev.settings_doc --check    # exit 1 when the committed file is stale

tests/unit/test_settings_doc.py runs the check, so the page cannot drift from the code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.lambda_text import ObservabilitySettings
from shared.pipeline.settings import PipelineSettings
from shared.search.api import SearchApiSettings
from shared.settings import REPO_ROOT, TextSettings, declared
from shared.worker.settings import WorkerSettings

OUTPUT = REPO_ROOT / "docs" / "configuration.md"
COMMAND = "python -m shared.dev.settings_doc"


@dataclass(frozen=True)
class Section:
    title: str
    cls: type
    module: str
    readers: str
    notes: str = ""


SECTIONS = (
    Section(
        "Orchestration",
        PipelineSettings,
        "shared/pipeline/settings.py",
        "the orchestration Lambdas (on_upload, on_job_done, sweeper, reprocess: "
        "`shared.aws.runtime.build_pipeline`), the local stack and `se invoke`.",
        "`from_env` also refuses `JOB_TTL_S` below `EXECUTION_TIMEOUT_S`. boto3 itself honours "
        "`AWS_ENDPOINT_URL`, which points every client at the local stack.",
    ),
    Section(
        "Text embedding",
        TextSettings,
        "shared/settings.py",
        "embed_text (`shared.lambda_text.app`), and the orchestration Lambdas, which load the same "
        "MiniLM model (`shared.pipeline.lambdas.build`).",
    ),
    Section(
        "Search",
        SearchApiSettings,
        "shared/search/api.py",
        "the search function (`handlers.aws_lambda.search`) and the Search panel of `se admin`, "
        "with `MODEL_DIR` and `TEXT_*` from the text settings (MiniLM and CLIP's text tower load there).",
        "`MEDIA_BUCKET` and `LEDGER_TABLE` are the orchestration's own declarations, read here too. The "
        "bounds of a query (characters, `k`, candidates) are `shared.search.settings.SearchSettings`.",
    ),
    Section(
        "Logs and metrics",
        ObservabilitySettings,
        "shared/lambda_text/app.py",
        "embed_text and the orchestration Lambdas, so that the defaults hold outside Lambda too (the "
        "CLI, tests). Powertools reads these variables itself as well.",
        "Powertools' other variables (`POWERTOOLS_LOG_LEVEL`, `POWERTOOLS_METRICS_DISABLED`) are read "
        "where the Logger and Metrics are built, not here.",
    ),
    Section(
        "GPU worker",
        WorkerSettings,
        "shared/worker/settings.py",
        "the RunPod worker (`handlers.runpod_worker.handler`). Dockerfile.gpu sets `MODEL_DIR=/models` "
        "and `DEVICE=cuda`; .runpod/hub.json offers the rest at deploy time.",
        "`from_env` also refuses: `JOB_MAX_PIXELS` or `WORKER_MAX_PIXELS` below `MAX_IMAGE_PIXELS` (one "
        "image would never fit); a `QWEN3VL_MAX_TEXT_TOKENS` that does not fit the model's context beside "
        "a video; and, for each served embed_item channel, settings that would not produce what "
        "`shared.spec` records for it (the CLIP model, TTA, the panorama ratio and tile cap).",
    ),
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{_cell(text)}`" if text else "(empty)"


def render_section(section: Section) -> list[str]:
    cls = section.cls
    lines = [
        f"## {section.title}: `{cls.__name__}`",
        "",
        f"Declared in `{section.module}`. Read by {section.readers}",
        "",
        "| Variable | Type | Default | Meaning |",
        "|---|---|---|---|",
    ]
    for d in declared(cls):
        default = d.shown_default if d.required else _code(d.shown_default)
        lines.append(f"| `{d.env}` | {_cell(d.kind)} | {default} | {_cell(d.setting.doc)} |")
    if section.notes:
        lines += ["", section.notes]
    return [*lines, ""]


def render() -> str:
    """The whole of docs/configuration.md."""
    lines = [
        "# Configuration",
        "",
        f"Generated from the settings declarations by `{COMMAND}`: edit the declarations, not this "
        "file (tests/unit/test_settings_doc.py fails when the two differ).",
        "",
        "Every setting is an environment variable, read once at start by its class's `from_env` "
        "(tests pass plain dicts). An unset or empty variable takes the default; a malformed value "
        "stops the start with a ConfigError that names the variable and shows an example value.",
        "",
    ]
    for section in SECTIONS:
        lines += render_section(section)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when the file differs; write nothing")
    ap.add_argument("--output", type=Path, default=OUTPUT)
    args = ap.parse_args(argv)
    text = render()
    current = args.output.read_text() if args.output.exists() else None
    if args.check:
        if current != text:
            print(f"{args.output} is stale; regenerate it: {COMMAND}", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
