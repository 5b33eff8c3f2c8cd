"""`se` talks to people (STYLE.md 13): results on stdout with no Lambda JSON line or EMF blob among
them, logs on stderr and quiet unless -v, `--json` that parses, every command in `se --help`, and no
write to os.environ. In-process, over fakes: the text model is tests/unit/lambda_text's fake behind the
real Powertools handler, which prints its JSON lines and metrics to stdout as it does in Lambda."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from handlers import cli
from shared.dev import stack_cli
from shared.lambda_text import build_handler
from shared.settings import TextSettings
from tests.unit.lambda_text.fakes import FakeTextModel


def lambda_output(text: str) -> list[str]:
    """The lines of `text` that are a Lambda's JSON log line or an EMF blob."""
    return [line for line in text.splitlines() if line.lstrip().startswith("{") and '"_aws"' in line] + [
        line for line in text.splitlines() if '"level":' in line or '"cold_start"' in line
    ]


@pytest.fixture
def function_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "functions.log"
    monkeypatch.setattr(cli, "FUNCTION_LOG", path)
    cli.function_log.cache_clear()
    yield path
    cli.function_log().close()
    cli.function_log.cache_clear()


@pytest.fixture
def fake_text(monkeypatch: pytest.MonkeyPatch, function_log: Path) -> None:
    """`_text_handler` builds the real handler over the fake model, with Powertools' defaults (stdout),
    a self-check metric (single_metric prints unconditionally) and a stdlib log line at each level."""

    def make(model_dir: Path) -> Any:
        service = f"embed-text-{uuid.uuid4().hex[:6]}"
        with single_metric(name="TextInt8Serving", unit=MetricUnit.Count, value=1, namespace="Test"):
            pass
        handler = build_handler(FakeTextModel(), TextSettings(model_dir=model_dir))

        def handle(event: Any, context: Any) -> dict:
            logging.getLogger("shared.models.fake").info("info from the model")
            logging.getLogger("shared.models.fake").warning("warning from the model")
            return handler(event, context)

        handle.service = service  # type: ignore[attr-defined]
        return handle

    monkeypatch.setattr(cli, "_text_handler", make)


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    before = dict(os.environ)
    rc = cli.main(list(argv))
    assert dict(os.environ) == before, "the CLI wrote os.environ"
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_lists_every_command_on_one_line(capsys: pytest.CaptureFixture) -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.choices and "demo" in a.choices)
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert set(helps) == set(sub.choices) and len(helps) >= 13
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    for name, help in helps.items():
        assert help and any(line.split() == [name, *help.split()] for line in lines), (name, help)


def test_embed_text_prints_a_table_and_no_lambda_output(capsys, fake_text, function_log: Path) -> None:
    rc, out, err = run(capsys, "embed-text", "hello world", "a cat")
    assert rc == 0
    assert lambda_output(out) == [] and lambda_output(err) == [], out + err
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["id", "text"] and "hello world" in lines[1] and "a cat" in lines[2]
    assert "fake-minilm@test" in out
    # what the handler printed (its JSON lines, the EMF metrics) went to the function log
    logged = function_log.read_text()
    assert '"_aws"' in logged and "embedding.batch_completed.v1" in logged
    # the stdlib logs: on stderr, human, warnings only unless -v
    assert "warning from the model" in err and "info from the model" not in err


def test_verbose_shows_info_logs_on_stderr_only(capsys, fake_text) -> None:
    rc, out, err = run(capsys, "embed-text", "-v", "hello world")
    assert rc == 0 and "info from the model" in err and "info from the model" not in out
    assert lambda_output(err) == []


def test_embed_text_json_parses(capsys, fake_text) -> None:
    rc, out, _ = run(capsys, "embed-text", "--json", "hello world")
    body = json.loads(out)
    assert rc == 0 and body["dims"] == 384 and len(body["vectors"][0]["vector"]) == 384
    rc, out, _ = run(capsys, "embed-text", "--json", *["x"] * 257)  # over TEXT_MAX_CHUNKS
    assert rc == 2 and json.loads(out)["error"]["code"]
    rc, out, err = run(capsys, "embed-text", *["x"] * 257)
    assert rc == 2 and out == "" and "error: payload_too_large" in err


def test_spec_table_and_json(capsys) -> None:
    from shared import spec

    rc, out, _ = run(capsys, "spec")
    assert rc == 0 and f"spec version {spec.SPEC_VERSION}" in out
    assert all(name in out for name in spec.CHANNELS) and "{" not in out
    rc, out, _ = run(capsys, "spec", "--json")
    body = json.loads(out)
    assert body["spec_version"] == spec.SPEC_VERSION and set(body["channels"]) == set(spec.CHANNELS)


class FakeLedger:
    ROWS = (
        {"owner_id": "me", "item_id": "clip", "sk": "ITEM", "status": "PARTIAL", "attempts": 1,
         "media_key": "uploads/me/clip/clip.mp4"},
        {"owner_id": "me", "item_id": "clip", "sk": "CH#video_clip", "channel": "video_clip",
         "status": "SUCCEEDED", "attempts": 1, "dims": 512, "gpu_seconds": 1.25},
        {"owner_id": "me", "item_id": "clip", "sk": "CH#transcript", "channel": "transcript",
         "status": "FAILED", "attempts": 2, "error": {"message": "not a readable media file"}},
    )  # fmt: skip

    def __init__(self) -> None:  # refused uploads: a real ring on the in-memory table
        from shared.dev.memory_ledger import MemoryTable
        from shared.pipeline.ledger import Refusals

        self.table, self.clock = MemoryTable(), lambda: 1_800_000_000.0
        for key, owner, reason in (
            ("uploads/me/harbour clip/x.mp4", "me", "bad_id"),
            ("uploads/bad owner/i/x.mp4", "~", "bad_id"),
        ):
            Refusals(self).record(owner, reason=reason, message=f"{reason}!", key=key, keep=5, ttl_s=60)

    def owners(self) -> list[str]:
        return ["me"]

    def owner_rows(self, owner: str) -> list[dict]:
        return [dict(r) for r in self.ROWS if r["owner_id"] == owner]

    def owner_state(self, owner: str) -> dict:
        return {"owner_id": owner, "current_version": None, "items": 1, "settled": 0}


@pytest.fixture
def fake_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack_cli, "read_endpoints", lambda *a: {"LEDGER_TABLE": "t", "MEDIA_BUCKET": "b"})
    monkeypatch.setattr(stack_cli, "_ledger", lambda ep: FakeLedger())
    monkeypatch.setattr(stack_cli, "upload", lambda f, o, i, n=None: f"uploads/{o}/{i}/{n or f.name}")


def test_status_table_and_json(capsys, fake_stack) -> None:
    rc, out, _ = run(capsys, "status", "--owner", "me")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["owner/item", "channel", "status", "att", "dims", "seconds", "note"]
    assert lines[1].split()[:3] == ["me/clip", "(item)", "PARTIAL"]
    assert lines[2].split() == ["video_clip", "SUCCEEDED", "1", "512", "1.25"]
    assert "not a readable media file" in out and "owner me: reads spec version (none yet)" in out
    rc, out, _ = run(capsys, "status", "--owner", "me", "--json")
    body = json.loads(out)
    assert rc == 0 and len(body["rows"]) == 3 and body["owners"]["me"]["items"] == 1


def test_status_shows_refused_uploads(capsys, fake_stack) -> None:
    rc, out, _ = run(capsys, "status", "--owner", "me")
    assert rc == 0 and "Refused uploads (1)" in out and "uploads/me/harbour clip/x.mp4" in out
    assert "bad owner" not in out  # another owner's (here: no valid owner's)
    rc, out, _ = run(capsys, "status")
    assert "Refused uploads (2)" in out and "(none)" in out
    rc, out, _ = run(capsys, "status", "--json")
    refused = json.loads(out)["refused"]
    assert [(r["owner_id"], r["key"], r["reason"]) for r in refused] == [
        ("me", "uploads/me/harbour clip/x.mp4", "bad_id"),
        (None, "uploads/bad owner/i/x.mp4", "bad_id"),
    ]
    rc, out, _ = run(capsys, "status", "--owner", "me", "--item", "clip", "--json")
    assert json.loads(out)["refused"] == []


def test_upload_human_and_json(capsys, fake_stack, tmp_path: Path) -> None:
    f = tmp_path / "x.png"
    f.write_bytes(b"x")
    rc, out, _ = run(capsys, "upload", str(f), "--owner", "me", "--item", "pic")
    assert rc == 0 and out.strip() == "uploaded uploads/me/pic/x.png"
    rc, out, _ = run(capsys, "upload", str(f), "--owner", "me", "--item", "pic", "--json")
    assert json.loads(out) == {"key": "uploads/me/pic/x.png"}


ANSWER = {
    "hits": [
        {"owner_id": "me", "item_id": "clip", "score": 0.0325, "start_s": 12.0, "end_s": 27.5,
         "channels": ["text_meta", "transcript"], "text": "the ferry leaves at nine"},
    ],
    "took_ms": 12.3,
    "spec_version": "2026-11-23-abc",
    "skipped": ["clip_vec: no CLIP text encoder configured"],
}  # fmt: skip


def test_search_human_and_json(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []
    monkeypatch.setattr(
        stack_cli, "sweeper_env", lambda model_dir: {"MEDIA_BUCKET": "b", "LEDGER_TABLE": "t"}
    )
    monkeypatch.setattr(stack_cli, "run_search", lambda req, env: asked.append(req) or ANSWER)
    rc, out, _ = run(capsys, "search", "when does the ferry leave", "--owner", "me", "--k", "3")
    assert rc == 0 and asked[0] == {
        "owner_id": "me", "text": "when does the ferry leave", "k": 3, "mode": "hybrid", "person": None,
        "item_id": None,
    }  # fmt: skip
    lines = out.splitlines()
    assert lines[0].startswith("1 moment for 'when does the ferry leave' in me's media (12 ms")
    assert lines[2].split()[:5] == ["1", "0.0325", "clip", "12.0-27.5", "s"]
    assert "skipped clip_vec" in out
    rc, out, _ = run(capsys, "search", "ferry", "--owner", "me", "--json")
    assert rc == 0 and json.loads(out) == ANSWER


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["x", "--owner", "../s3cr3t"], "owner_id"),
        (["x", "--owner", "me", "--k", "0"], "k"),
        (["", "--owner", "me"], "text"),
        (["x", "--owner", "me", "--item", "s3cr3t/.."], "item_id"),
    ],
)
def test_a_bad_search_is_refused_before_anything_loads(capsys, monkeypatch, args, field) -> None:
    monkeypatch.setattr(stack_cli, "sweeper_env", lambda m: pytest.fail("nothing may load for a bad request"))
    rc, out, err = run(capsys, "search", *args)
    assert rc == 2 and out == "" and err.startswith(f"error: {field}: ") and "s3cr3t" not in err


def test_reindex_human_and_json(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.aws import runtime

    class Engine:
        def counts(self, owner: str) -> dict:
            return {"text": 3, "visual": 17}

    class Pipe:
        search = type("W", (), {"engines": staticmethod(lambda v: Engine())})()

        def reindex_search(self, owner, version, progress):
            progress(2, 2)
            return {"owner_id": owner, "spec_version": "v1", "items": 2, "rows": 20, "current": True,
                    "left_out": {"clip": "transcript: is not valid JSON"}, "retry": {}}  # fmt: skip

    monkeypatch.setattr(stack_cli, "sweeper_env", lambda model_dir: {})
    monkeypatch.setattr(stack_cli, "_text_model", lambda env, err: "model")
    monkeypatch.setattr(runtime, "build_pipeline", lambda *a, **k: Pipe())
    rc, out, _ = run(capsys, "reindex", "--owner", "me")
    assert rc == 0 and out.splitlines()[:2] == [
        "reindexed me: 2 items, 20 rows in spec version v1 (tables: text 3, visual 17)",
        "queries read this version",
    ]
    assert "clip: left out transcript: is not valid JSON" in out
    rc, out, _ = run(capsys, "reindex", "--owner", "me", "--json")
    assert rc == 0 and json.loads(out)["tables"] == {"text": 3, "visual": 17}
    rc, out, err = run(capsys, "reindex", "--owner", "../me")
    assert rc == 2 and out == "" and "owner_id" in err


def test_errors_go_to_stderr(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_stack(*a: Any) -> dict:
        raise stack_cli.StackError("no running stack: start one with `se stack up`")

    monkeypatch.setattr(stack_cli, "read_endpoints", no_stack)
    rc, out, err = run(capsys, "status")
    assert rc == 1 and out == "" and "no running stack" in err


def test_ctrl_c_is_one_line_not_a_traceback(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*a: Any, **k: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(stack_cli, "stack_up", interrupted)
    rc, out, err = run(capsys, "stack", "up")
    assert rc == 130 and out == "" and err.strip() == "interrupted"


def test_the_cli_leaves_logging_as_it_found_it(capsys) -> None:
    root, shared = logging.getLogger(), logging.getLogger("shared")
    before = (list(root.handlers), root.level, shared.level)
    run(capsys, "spec", "-vv")
    assert (list(root.handlers), root.level, shared.level) == before


DRY = {
    "spec_version": "v2", "scope": "owner", "items_in_scope": 3, "item_count": 2,
    "skipped": {"in_flight": 1, "current": 0}, "channel_count": 3,
    "channels": {"video_clip": 2, "transcript": 1}, "reasons": {"new_spec": 2},
    "gpu_seconds": 12.5, "cost_usd": 0.0145, "gpu_price_per_s": 0.00116,
}  # fmt: skip
RUN = {"run_id": "20260101T000000Z-0123abcd", "status": "finished", "scope": "owner", "owner_id": "me",
       "items": 2, "planned": 2, "done": 2, "failed": 0, "skipped": 0, "spec_version": "v2"}  # fmt: skip


class FakeAdminApi:
    """What the admin API answers se reprocess and se runs (shared/pipeline/admin.py's shapes)."""

    def call(self, method: str, path: str, body: Any = None) -> Any:
        if path == "/reprocess":
            if body.get("dry_run"):
                return DRY
            return {"status": "queued", "run_id": RUN["run_id"], "message": "2 items queued"}
        if path.startswith("/runs/"):
            return RUN
        return {"runs": [RUN]}


@pytest.fixture
def fake_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.aws import admin_api

    monkeypatch.setattr(admin_api.AdminApi, "resolve", classmethod(lambda cls, url=None: FakeAdminApi()))


def test_reprocess_and_runs_render_tables_and_json(capsys, fake_admin) -> None:
    rc, out, _ = run(capsys, "reprocess", "--scope", "owner", "--owner", "me", "--dry-run")
    assert rc == 0 and out.startswith("dry run, spec version v2, scope owner: nothing was changed")
    assert ["would", "reprocess", "2", "skipped:", "1", "in", "flight,", "0", "current"] in (
        line.split() for line in out.splitlines()
    )
    assert ["video_clip", "2", "new_spec", "2"] in (line.split() for line in out.splitlines())  # side by side
    rc, out, _ = run(capsys, "reprocess", "--scope", "owner", "--owner", "me", "--dry-run", "--json")
    assert json.loads(out) == DRY
    rc, out, _ = run(capsys, "reprocess", "--scope", "owner", "--owner", "me")
    assert rc == 0 and out.splitlines() == [
        "2 items queued",
        "run 20260101T000000Z-0123abcd finished: 2 done, 0 failed, 0 skipped of 2 (spec version v2)",
    ]
    rc, out, _ = run(capsys, "runs")
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == [
        "run",
        "status",
        "scope",
        "items",
        "planned",
        "done",
        "failed",
        "skipped",
        "spec",
        "version",
    ]
    assert lines[1] == ["20260101T000000Z-0123abcd", "finished", "owner:me", "2", "2", "2", "0", "0", "v2"]
