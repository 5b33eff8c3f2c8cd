"""A client of the admin API (the reprocess function's IAM-authorised URL; shared/pipeline/admin.py),
signing every call with SigV4 and the operator's AWS credentials: `se reprocess`, `se runs`, `se admin`.

Where the URL comes from: `--url`, else REPROCESS_FUNCTION_URL, else the running local stack's
.cache/stack/endpoints.json (which also carries the local stack's credentials). Credentials: the
usual boto3 chain (environment, profile, SSO, instance role).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.aws import sigv4

if TYPE_CHECKING:
    from rich.console import Console, Group
    from rich.table import Table

MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            field = f" ({err.get('field')})" if err.get("field") else ""
            message = f"{err.get('code')}{field}: {err.get('message')}"
        elif isinstance(body, dict) and body.get("Message"):
            message = str(body["Message"])  # IAM's own refusal
        else:
            message = "the call failed"
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.body = body


class AdminApi:
    def __init__(self, url: str, credentials: Any, region: str, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.credentials = credentials
        self.region = region
        self.timeout_s = timeout_s

    @classmethod
    def resolve(cls, url: str | None = None, endpoints: Path | None = None) -> AdminApi:
        import boto3

        from shared.settings import REPO_ROOT

        env: Mapping[str, str] = os.environ
        url = url or env.get("REPROCESS_FUNCTION_URL")
        local: dict[str, Any] = {}
        path = endpoints or REPO_ROOT / ".cache" / "stack" / "endpoints.json"  # `se stack up` writes it
        if not url and path.is_file():
            local = json.loads(path.read_text())
            url = local.get("ReprocessFunctionUrl")
        if not url:
            hint = "no admin API URL: pass --url, set REPROCESS_FUNCTION_URL, or run `se stack up`"
            raise ApiError(0, {"Message": hint})
        if local:
            session = boto3.Session(
                aws_access_key_id=local["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=local["AWS_SECRET_ACCESS_KEY"],
                region_name=local["AWS_DEFAULT_REGION"],
            )
        else:
            session = boto3.Session()
        creds = session.get_credentials()
        if creds is None:
            raise ApiError(0, {"Message": "no AWS credentials to sign with (aws configure / AWS_PROFILE)"})
        return cls(url, creds.get_frozen_credentials(), session.region_name or "us-east-1")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        url = self.url + path
        data = b"" if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        headers = sigv4.sign(method, url, data, self.credentials, self.region, headers)
        req = urllib.request.Request(url, data=data or None, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                return json.loads(r.read(MAX_RESPONSE_BYTES) or b"null")
        except urllib.error.HTTPError as e:
            try:
                payload = json.loads(e.read(MAX_RESPONSE_BYTES) or b"null")
            except ValueError:
                payload = None
            raise ApiError(e.code, payload) from None
        except (urllib.error.URLError, OSError) as e:
            raise ApiError(0, {"Message": f"cannot reach the admin API: {getattr(e, 'reason', e)}"}) from None


# ---------------------------------------------------------------------- se reprocess / se runs


def reprocess(
    api: AdminApi,
    body: dict[str, Any],
    *,
    out: Console,
    err: Console,
    wait: bool = True,
    as_json: bool = False,
) -> int:
    """A dry run (its estimate), or a run started and followed to its end with a progress bar on `err`.
    `as_json`: the API's answers as JSON on `out` (the dry run; the started run, then the finished one)."""
    answer = api.call("POST", "/reprocess", body)
    if body.get("dry_run"):
        _show(out, answer, as_json, render_dry_run)
        return 0
    if not as_json:
        out.print(answer["message"])
    if not wait:
        _show(out, answer, as_json, lambda run: f"run {run['run_id']}")
        return 0
    final = follow(api, answer["run_id"], err=err)
    _show(
        out,
        final,
        as_json,
        lambda r: (
            f"run {r['run_id']} finished: {r.get('done', 0)} done, {r.get('failed', 0)} failed, "
            f"{r.get('skipped', 0)} skipped of {r.get('items', 0)} (spec version {r.get('spec_version')})"
        ),
    )
    return 1 if final.get("failed") else 0


def _show(out: Console, answer: Any, as_json: bool, render: Any) -> None:
    if as_json:
        out.file.write(json.dumps(answer, indent=2, default=str) + "\n")
        out.file.flush()
    else:
        out.print(render(answer))


def follow(api: AdminApi, run_id: str, *, err: Console, poll_s: float = 1.0) -> dict[str, Any]:
    """A progress bar (rich, on `err`) that follows the run row until the run finishes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("run {task.fields[run_id]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}: {task.fields[done]} done, {task.fields[failed]} failed"),
        TimeElapsedColumn(),
    )
    run = api.call("GET", f"/runs/{run_id}")
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("", total=None, run_id=run_id, status="", done=0, failed=0)
        while True:
            total = int(run.get("items", 0))
            settled = int(run.get("done", 0)) + int(run.get("failed", 0)) + int(run.get("skipped", 0))
            bar.update(
                task,
                total=total or None,
                completed=settled,
                status=run.get("status", "?"),
                done=run.get("done", 0),
                failed=run.get("failed", 0),
            )
            if run.get("status") == "finished":
                return run
            time.sleep(poll_s)
            run = api.call("GET", f"/runs/{run_id}")


def render_dry_run(d: Mapping[str, Any]) -> Group:
    """The dry run's estimate: what would run, why, what is skipped, and the cost."""
    from rich.columns import Columns
    from rich.console import Group
    from rich.table import Table

    head = f"dry run, spec version {d['spec_version']}, scope {d['scope']}: nothing was changed"
    summary = Table(box=None, show_header=False, pad_edge=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_column()
    skipped = d["skipped"]
    summary.add_row("items in scope", str(d.get("items_in_scope", 0)), "")
    summary.add_row(
        "would reprocess",
        str(d["item_count"]),
        f"skipped: {skipped['in_flight']} in flight, {skipped['current']} current",
    )
    summary.add_row("channel runs", str(d["channel_count"]), "")
    summary.add_row(
        "estimate",
        f"{d['gpu_seconds']:.1f} GPU s",
        f"${d['cost_usd']:.4f} at ${d['gpu_price_per_s']}/GPU s",
    )
    tables = []
    for title, counts in (("channel", d["channels"]), ("why", d["reasons"])):
        if counts:
            table = Table(box=None, header_style="bold", pad_edge=False)
            table.add_column(title)
            table.add_column("runs" if title == "channel" else "items", justify="right")
            for k, v in counts.items():
                table.add_row(k, str(v))
            tables.append(table)
    parts: list[Any] = [head, summary]
    if tables:
        parts += ["", Columns(tables, padding=(0, 6))]
    return Group(*parts)


def render_runs(runs: list[Mapping[str, Any]]) -> Table | str:
    """Reprocess runs, one row each: status, scope, counts, spec version."""
    from rich.table import Table

    if not runs:
        return "no runs"
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("run", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("scope", no_wrap=True)
    for name in ("items", "planned", "done", "failed", "skipped"):
        table.add_column(name, justify="right")
    table.add_column("spec version", no_wrap=True)
    for r in runs:
        scope = r.get("scope", "?") + (f":{r['owner_id']}" if r.get("owner_id") else "")
        counts = [str(r.get(k, 0)) for k in ("items", "planned", "done", "failed", "skipped")]
        table.add_row(r["run_id"], r.get("status", "?"), scope, *counts, r.get("spec_version", ""))
    return table


__all__ = ["AdminApi", "ApiError", "follow", "render_dry_run", "render_runs", "reprocess"]
