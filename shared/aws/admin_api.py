"""A client of the admin API (the reprocess function's IAM-authorised URL; shared/pipeline/admin.py),
signing every call with SigV4 and the operator's AWS credentials: `se reprocess`, `se runs`, `se admin`.

Where the URL comes from: `--url`, else REPROCESS_FUNCTION_URL, else the running local stack's
.cache/stack/endpoints.json (which also carries the local stack's credentials). Credentials: the
usual boto3 chain (environment, profile, SSO, instance role).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.aws import sigv4

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


def reprocess(api: AdminApi, body: dict[str, Any], *, wait: bool = True, out: Any = sys.stdout) -> int:
    if body.get("dry_run"):
        dry = api.call("POST", "/reprocess", body)
        print(render_dry_run(dry), file=out)
        return 0
    run = api.call("POST", "/reprocess", body)
    print(run["message"], file=out)
    if not wait:
        print(f"run {run['run_id']}", file=out)
        return 0
    final = follow(api, run["run_id"], out=out)
    print(
        f"run {final['run_id']} finished: {final.get('done', 0)} done, {final.get('failed', 0)} failed, "
        f"{final.get('skipped', 0)} skipped of {final.get('items', 0)} "
        f"(spec version {final.get('spec_version')})",
        file=out,
    )
    return 1 if final.get("failed") else 0


def follow(api: AdminApi, run_id: str, *, poll_s: float = 1.0, out: Any = sys.stdout) -> dict[str, Any]:
    """A progress bar (tqdm) that follows the run row until the run finishes."""
    from tqdm import tqdm

    run = api.call("GET", f"/runs/{run_id}")
    with tqdm(total=max(1, int(run.get("items", 0))), unit="item", file=out, desc=f"run {run_id}") as bar:
        while True:
            total = int(run.get("items", 0))
            settled = int(run.get("done", 0)) + int(run.get("failed", 0)) + int(run.get("skipped", 0))
            bar.total = max(1, total)
            bar.n = settled
            bar.set_postfix(
                status=run.get("status"), done=run.get("done", 0), failed=run.get("failed", 0), refresh=False
            )
            bar.refresh()
            if run.get("status") == "finished":
                return run
            time.sleep(poll_s)
            run = api.call("GET", f"/runs/{run_id}")


def render_dry_run(d: Mapping[str, Any]) -> str:
    lines = [
        f"dry run, spec version {d['spec_version']}, scope {d['scope']}: nothing was changed",
        f"  items in scope {d.get('items_in_scope', 0)}, would reprocess {d['item_count']}"
        f" (skipped: {d['skipped']['in_flight']} in flight, {d['skipped']['current']} current)",
        f"  channel runs {d['channel_count']}: "
        + (", ".join(f"{k} {v}" for k, v in d["channels"].items()) or "none"),
        "  why: " + (", ".join(f"{k} {v}" for k, v in d["reasons"].items()) or "-"),
        f"  estimate: {d['gpu_seconds']:.1f} GPU s, ${d['cost_usd']:.4f} at ${d['gpu_price_per_s']}/GPU s",
    ]
    return "\n".join(lines)


def render_runs(runs: list[Mapping[str, Any]]) -> str:
    lines = [
        f"{'run':26s} {'status':9s} {'scope':14s} {'items':>6s} {'planned':>7s} {'done':>6s} "
        f"{'failed':>6s} {'skipped':>7s}  spec version"
    ]
    for r in runs:
        scope = r.get("scope", "?") + (f":{r['owner_id']}" if r.get("owner_id") else "")
        lines.append(
            f"{r['run_id']:26s} {r.get('status', '?'):9s} {scope[:14]:14s} {r.get('items', 0):>6} "
            f"{r.get('planned', 0):>7} {r.get('done', 0):>6} {r.get('failed', 0):>6} {r.get('skipped', 0):>7}"
            f"  {r.get('spec_version', '')}"
        )
    return "\n".join(lines) if runs else "no runs"


__all__ = ["AdminApi", "ApiError", "follow", "render_dry_run", "render_runs", "reprocess"]
