"""`se smoke --stack NAME`: one bundled sample pushed through a deployed stack, step by step.

The stack's outputs (CloudFormation DescribeStacks) name its bucket, ledger table and, when it has one,
the search function's URL. The sample goes to `uploads/{owner}/{item}/{file}` under a fresh item id, and
the ledger is read until the item settles or the timeout passes:

    stack       the stack exists and has MediaBucketName and LedgerTableName outputs
    uploaded    the sample is in the bucket
    item seen   on_upload recorded the item (S3 -> SQS -> on_upload works); a refusal ends it here
    dispatched  a RunPod job was submitted for the item (the RunPod key and endpoint work)
    complete    the item is COMPLETE (the webhook, or the sweeper's poll, came back)
    artifacts   every succeeded channel's artifact is in the bucket
    search      the search function answers for the owner (signed like `se admin`), if the stack has
                one; an owner with no search index yet skips it

Each step is reported as it ends (`on_step`); the first that fails ends the run. What is read and
written: the one sample and the item's ledger rows; nothing is deleted (the item stays, under the
owner `smoke` by default).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shared.pipeline.keys import check_id
from shared.settings import REPO_ROOT

SAMPLES = REPO_ROOT / "infra" / "samples"
DEFAULT_SAMPLE = SAMPLES / "photo.png"  # the smallest: one image_clip job on the GPU
STEPS = ("stack", "uploaded", "item seen", "dispatched", "complete", "artifacts", "search")
FINAL = ("COMPLETE", "PARTIAL", "QUARANTINED")
REQUIRED_OUTPUTS = ("MediaBucketName", "LedgerTableName")
SEARCH_OUTPUT = "SearchFunctionUrl"


@dataclass
class Step:
    name: str
    ok: bool | None  # None: skipped, with the reason in `detail`
    detail: str
    seconds: float


@dataclass
class Report:
    stack: str
    region: str
    owner_id: str
    item_id: str
    key: str | None = None
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok is not False for s in self.steps) and len(self.steps) == len(STEPS)

    @property
    def failed_step(self) -> str | None:
        return next((s.name for s in self.steps if s.ok is False), None)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "failed_step": self.failed_step}


class Failed(Exception):
    """A step failed: its message says what was seen and where to look."""


@dataclass(frozen=True)
class Clients:
    """The AWS clients a smoke run uses, and what signs the search call."""

    cloudformation: Any
    s3: Any
    dynamodb: Any
    credentials: Any
    region: str

    @classmethod
    def from_session(cls, region: str | None = None, profile: str | None = None) -> Clients:
        """boto3's credential chain (AWS_PROFILE, SSO, ...) or `profile`; AWS_ENDPOINT_URL is honoured."""
        import boto3

        session = boto3.Session(profile_name=profile, region_name=region)
        if session.region_name is None:
            raise ValueError("no region: pass --region or set AWS_REGION / AWS_DEFAULT_REGION")
        creds = session.get_credentials()
        return cls(
            session.client("cloudformation"),
            session.client("s3"),
            session.client("dynamodb"),
            creds.get_frozen_credentials() if creds is not None else None,
            session.region_name,
        )


def new_item_id(now: float) -> str:
    return f"smoke-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-{secrets.token_hex(3)}"


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as e:
        raise Failed(f"cannot read stack {stack}: {e.response.get('Error', {}).get('Message', e)}") from None
    except BotoCoreError as e:
        raise Failed(f"cannot read stack {stack}: {e}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    missing = [k for k in REQUIRED_OUTPUTS if k not in outputs]
    if missing:
        raise Failed(f"stack {stack} has no output {', '.join(missing)}: is it this project's template.yaml?")
    return outputs


class Smoke:
    """One run; `run()` returns its report. `clock`, `sleep` and `ledger` may be injected (the unit
    tests run the steps on the in-memory pipeline)."""

    def __init__(
        self,
        stack: str,
        clients: Clients,
        *,
        owner_id: str = "smoke",
        sample: Path = DEFAULT_SAMPLE,
        timeout_s: float = 600.0,
        poll_s: float = 2.0,
        on_step: Callable[[Step], None] = lambda step: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        item_id: str | None = None,
        ledger: Any = None,
    ) -> None:
        self.stack = stack
        self.c = clients
        self.owner_id = check_id(owner_id, "owner_id")
        self.item_id = check_id(item_id or new_item_id(time.time()), "item_id")
        self.sample = sample
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.on_step = on_step
        self.clock = clock
        self.sleep = sleep
        self.outputs: dict[str, str] = {}
        self.ledger = ledger  # default: shared.aws.ledger over the stack's table

    def run(self) -> Report:
        report = Report(self.stack, self.c.region, self.owner_id, self.item_id)
        self.deadline = self.clock() + self.timeout_s
        steps: list[tuple[str, Callable[[Report], tuple[bool | None, str]]]] = [
            ("stack", self._stack),
            ("uploaded", self._upload),
            ("item seen", self._seen),
            ("dispatched", self._dispatched),
            ("complete", self._complete),
            ("artifacts", self._artifacts),
            ("search", self._search),
        ]
        for name, step in steps:
            started = self.clock()
            try:
                ok, detail = step(report)
            except Failed as e:
                ok, detail = False, str(e)
            report.steps.append(Step(name, ok, detail, round(self.clock() - started, 2)))
            self.on_step(report.steps[-1])
            if ok is False:
                break
        return report

    # ------------------------------------------------------------------ steps

    def _stack(self, report: Report) -> tuple[bool, str]:
        from shared.aws.ledger import Ledger

        self.outputs = stack_outputs(self.c.cloudformation, self.stack)
        self.bucket, self.table = self.outputs["MediaBucketName"], self.outputs["LedgerTableName"]
        self.ledger = self.ledger or Ledger(self.c.dynamodb, self.table)
        search = "a search URL" if SEARCH_OUTPUT in self.outputs else "no search URL"
        return True, f"bucket {self.bucket}, ledger {self.table}, {search}"

    def _upload(self, report: Report) -> tuple[bool, str]:
        from botocore.exceptions import BotoCoreError, ClientError

        key = f"uploads/{self.owner_id}/{self.item_id}/{self.sample.name}"
        data = self.sample.read_bytes()
        try:
            self.c.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        except (ClientError, BotoCoreError) as e:
            raise Failed(f"put_object refused: {_aws_error(e)}") from None
        report.key = key
        return True, f"s3://{self.bucket}/{key} ({len(data):,} bytes)"

    def _seen(self, report: Report) -> tuple[bool, str]:
        from shared.pipeline.ledger import Refusals
        from shared.pipeline.settings import MAX_REFUSALS_KEPT

        def seen() -> str | None:
            if self._rows()[0] is not None:
                return "on_upload recorded the item"
            for r in Refusals(self.ledger).of(self.owner_id, MAX_REFUSALS_KEPT):
                if r["key"] == report.key:
                    raise Failed(f"the upload was refused: {r['reason']}: {r['message']}")
            return None

        return True, self._until(
            seen,
            "no ledger row for the item: check the upload queue (UploadQueueUrl), its dead-letter queue and "
            "on_upload's log group",
        )

    def _dispatched(self, report: Report) -> tuple[bool, str]:
        def dispatched() -> str | None:
            item, channels = self._rows()
            item = item or {}
            # the open dispatch's job on the item row; a finished one's on its channel rows
            jobs = sorted({r["job_id"] for r in (item, *channels.values()) if r.get("job_id")})
            if jobs:
                return f"RunPod job {', '.join(jobs)}"
            if item.get("status") == "QUARANTINED":
                raise Failed(f"quarantined before any job ran: {self._why()}")
            if item.get("status") in FINAL:
                return f"no GPU work needed ({_channel_summary(channels)})"
            return None

        return True, self._until(dispatched, "no RunPod job was submitted", self._why)

    def _complete(self, report: Report) -> tuple[bool, str]:
        def settled() -> str | None:
            item, channels = self._rows()
            status = (item or {}).get("status")
            if status not in FINAL:
                return None
            if status != "COMPLETE":
                raise Failed(f"the item is {status}: {self._why()}")
            return _channel_summary(channels)

        return True, self._until(settled, "the item did not settle", self._why)

    def _artifacts(self, report: Report) -> tuple[bool, str]:
        from botocore.exceptions import ClientError

        _, channels = self._rows()
        keys = {
            ch: r["artifact_key"]
            for ch, r in channels.items()
            if r.get("status") == "SUCCEEDED" and r.get("artifact_key")
        }
        missing = []
        for ch, key in keys.items():
            try:
                self.c.s3.head_object(Bucket=self.bucket, Key=key)
            except ClientError:
                missing.append(f"{ch} ({key})")
        if missing:
            raise Failed(f"missing from the bucket: {', '.join(missing)}")
        if not keys:
            raise Failed("no channel recorded an artifact")
        return True, f"{len(keys)} in the bucket: {', '.join(sorted(keys))}"

    def _search(self, report: Report) -> tuple[bool | None, str]:
        from shared.aws.admin_api import AdminApi, ApiError

        url = self.outputs.get(SEARCH_OUTPUT)
        if not url:
            return None, "the stack has no search URL"
        if self.c.credentials is None:
            raise Failed("no AWS credentials to sign the search call with")
        body = {"owner_id": self.owner_id, "item_id": self.item_id, "text": "smoke test", "k": 5}
        try:
            answer = AdminApi(url, self.c.credentials, self.c.region).call("POST", "/search", body)
        except ApiError as e:
            if e.status == 404:
                return None, f"the search function answers, but the owner has no search index yet ({e})"
            raise Failed(f"the search function: {e}") from None
        hits = answer.get("hits", []) if isinstance(answer, dict) else []
        n = len(hits)
        return True, f"{n} hit{'' if n == 1 else 's'} for the item in {answer.get('took_ms', '?')} ms"

    # ------------------------------------------------------------------ reading the ledger

    def _rows(self) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
        from shared.errors import StoreError

        try:
            return self.ledger.rows(self.owner_id, self.item_id)
        except StoreError as e:
            raise Failed(f"cannot read the ledger: {e.public_message}") from None

    def _why(self) -> str:
        """What the item's rows say went wrong (or is pending), for a failed or timed-out step."""
        item, channels = self._rows()
        item = item or {}
        parts = [f"status {item.get('status', '?')}"]
        for k in ("quarantine_reason", "dispatch_error", "last_error"):
            if item.get(k):
                v = item[k]
                parts.append(f"{k} {v.get('message', v) if isinstance(v, dict) else v}")
        return "; ".join(parts) + "; " + _channel_summary(channels)

    def _until(
        self, check: Callable[[], str | None], timeout: str, why: Callable[[], str] | None = None
    ) -> str:
        while True:
            done = check()
            if done is not None:
                return done
            if self.clock() >= self.deadline:
                raise Failed(f"timed out ({self.timeout_s:g} s): {timeout}" + (f"; {why()}" if why else ""))
            self.sleep(self.poll_s)


def _channel_summary(channels: dict[str, dict[str, Any]]) -> str:
    out = []
    for ch, r in sorted(channels.items()):
        err = r.get("error")
        msg = f" ({err.get('message')})" if isinstance(err, dict) and r.get("status") != "SUCCEEDED" else ""
        out.append(f"{ch} {r.get('status', '?')}{msg}")
    return ", ".join(out) or "no channel rows"


def _aws_error(e: Exception) -> str:
    resp = getattr(e, "response", None)
    if isinstance(resp, dict):
        err = resp.get("Error", {})
        return f"{err.get('Code', '')}: {err.get('Message', '')}".strip(": ")
    return type(e).__name__


__all__ = [
    "DEFAULT_SAMPLE",
    "SAMPLES",
    "STEPS",
    "Clients",
    "Failed",
    "Report",
    "Smoke",
    "Step",
    "stack_outputs",
]
