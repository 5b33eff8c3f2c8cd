"""The orchestration on moto, through the real handlers: resources created from template.yaml (a fresh
stack per test in one moto server), the RunPod-API stand-in, on_job_done behind a function-URL server,
the SQS pump driven by the test, and one controllable clock for every Pipeline."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics

from shared.aws.ledger import Ledger
from shared.aws.runtime import search_index, secret
from shared.aws.storage import Storage
from shared.dev.localstack import REGION, MotoServer
from shared.dev.memory_ledger import memory_ledger
from shared.dev.runpod_standin import Faults, RunPodStandIn
from shared.dev.stack import FunctionUrls, Pump, _Context, create_resources, function_env, url_event
from shared.pipeline.lambdas import build_on_job_done, build_on_upload, build_reprocess, build_sweeper
from shared.pipeline.runpod_client import RunPodClient
from shared.pipeline.service import Pipeline
from shared.pipeline.settings import PipelineSettings


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Harness:
    def __init__(
        self,
        moto: MotoServer,
        template: Mapping[str, Any],
        translated: Mapping[str, Any],
        text_model: Any,
        *,
        faults: Faults | None = None,
        overrides: Mapping[str, str] | None = None,
        ledger: str = "dynamodb",
        search: bool = False,
    ) -> None:
        """`ledger`: "dynamodb" (the stack's table in moto) or "memory" (shared.dev.memory_ledger; the
        stack's S3 and SQS stay moto's). `search`: the sweeper keeps the owners' search tables (LanceDB
        on moto's S3), as build_pipeline makes it."""
        self.moto = moto
        self.clock = Clock()
        self.standin = RunPodStandIn(faults).start()
        self.stack_name = f"t{uuid.uuid4().hex[:10]}"
        self.res = create_resources(moto, template, self.stack_name, translated=translated)
        self.res.parameters["RunPodEndpointUrl"] = self.standin.base
        self.urls = FunctionUrls({}, iam={"reprocess": {"testing": "testing"}})
        self.res.urls = {
            "OnJobDoneFunctionUrl": self.urls.url("on_job_done"),
            "EmbedTextFunctionUrl": self.urls.url("embed_text"),
            "ReprocessFunctionUrl": self.urls.url("reprocess"),
        }
        local = {
            "AWS_ENDPOINT_URL": moto.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "RUNPOD_BACKOFF_S": "0.001",
            "POLL_AFTER_S": "30",
            "POLL_INTERVAL_S": "10",
            "BACKOFF_BASE_S": "10",
            "BACKOFF_MAX_S": "60",
            "MANIFEST_DELAY_S": "0",
            **(overrides or {}),
        }
        # the sweeper's environment, plus the reprocess function's queue (one Pipeline serves every handler)
        local["REPROCESS_QUEUE_URL"] = self.res.physical["ReprocessQueue"]
        self.env = function_env(self.res, "SweeperFunction", local)
        self.settings = PipelineSettings.from_env(self.env)
        self.s3 = moto.client("s3")
        self.sqs = moto.client("sqs")
        if ledger == "memory":
            self.ledger = memory_ledger(clock=self.clock)
        else:
            self.ledger = Ledger(moto.client("dynamodb"), self.settings.table, clock=self.clock)
        self.runpod = RunPodClient(
            self.standin.base,
            secret(self.settings.runpod_key_secret, "key", self.env),
            retries=self.settings.runpod_retries,
            backoff_base_s=0.001,
            timeout_s=self.settings.runpod_timeout_s,
        )
        storage = Storage(self.s3, self.settings.bucket)
        self.pipeline = Pipeline(
            self.settings,
            self.ledger,
            storage,
            text_model=text_model,
            runpod=self.runpod,
            webhook_key=secret(self.settings.webhook_secret, "key", self.env).encode(),
            clock=self.clock,
            rng=random.Random(0),
            search=search_index(self.env, self.settings, storage, text_model) if search else None,
        )
        metrics = Metrics(namespace="Tests", service="tests")
        logger = Logger(service="tests", level="ERROR")
        self.on_upload = build_on_upload(self.pipeline, logger, metrics)
        self.on_job_done = build_on_job_done(self.pipeline, logger, metrics)
        self.sweeper = build_sweeper(self.pipeline, logger, metrics)
        self.reprocess = build_reprocess(self.pipeline, logger, metrics, sqs=self.sqs)
        self.urls.handlers["on_job_done"] = self.on_job_done
        self.urls.handlers["reprocess"] = self.reprocess
        self.urls.start()
        self.queue_url = self.res.physical["UploadQueue"]
        self.dlq_url = self.res.physical["UploadDeadLetterQueue"]
        self.pump = Pump(
            self.sqs, self.queue_url, self.res.arn("UploadQueue"), self.on_upload, None, visibility_s=0
        )
        self.sqs.purge_queue(QueueUrl=self.queue_url)  # S3's s3:TestEvent from setting up notifications
        self.rq_url = self.res.physical["ReprocessQueue"]
        self.rpump = Pump(
            self.sqs, self.rq_url, self.res.arn("ReprocessQueue"), self.reprocess, None, visibility_s=0
        )

    @property
    def bucket(self) -> str:
        return self.settings.bucket

    def close(self) -> None:
        self.urls.stop()
        self.standin.stop()

    # ------------------------------------------------------------------ driving

    def put(self, key: str, body: bytes = b"\x00" * 64) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def deliver(self, rounds: int = 5) -> int:
        """Deliver queued messages to on_upload until the queue is empty (or `rounds` empty receives)."""
        seen = 0
        empty = 0
        while empty < rounds:
            n = self.pump.deliver_once(wait_s=0)
            seen += n
            empty = empty + 1 if n == 0 else 0
        return seen

    def deliver_reprocess(self, rounds: int = 3) -> int:
        """Deliver reprocess-queue messages until it is empty; then the upload queue's (none expected)."""
        seen, empty = 0, 0
        while empty < rounds:
            n = self.rpump.deliver_once(wait_s=0)
            seen += n
            empty = empty + 1 if n == 0 else 0
        return seen

    def admin(self, method: str, path: str, body: Any = None, *, sign: bool = True) -> tuple[int, Any]:
        """A call to the reprocess function's URL through the function-URL server (SigV4 checked)."""
        import urllib.request

        from botocore.credentials import Credentials

        from shared.aws import sigv4

        url = self.urls.url("reprocess") + path
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if sign:
            headers = sigv4.sign(method, url, data, Credentials("testing", "testing"), REGION, headers)
        req = urllib.request.Request(url, data=data or None, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def send(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)

    def sweep(self) -> dict[str, int]:
        return self.sweeper({"source": "aws.scheduler"}, _Context("sweeper"))["counts"]

    def webhook(self, token: str | None, body: Any, method: str = "POST") -> dict[str, Any]:
        query = f"token={token}" if token is not None else ""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        event = url_event(method, "/on_job_done/", query, {"content-type": "application/json"}, raw)
        return self.on_job_done(event, _Context("on_job_done"))

    def wait(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            time.sleep(0.05)

    # ------------------------------------------------------------------ reading

    def item(self, owner: str, item: str) -> dict[str, Any] | None:
        return self.ledger.item(owner, item)

    def channels(self, owner: str, item: str) -> dict[str, dict[str, Any]]:
        return self.ledger.rows(owner, item)[1]

    def status(self, owner: str, item: str) -> str | None:
        row = self.item(owner, item)
        return row.get("status") if row else None

    def jobs(self, owner: str, item: str) -> int:
        return self.standin.jobs_by_item[(owner, item)]

    def keys(self, prefix: str = "") -> list[str]:
        out = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix).get("Contents", [])
        return sorted(o["Key"] for o in out)

    def done(self, owner: str, item: str) -> bool:
        return self.status(owner, item) in ("COMPLETE", "PARTIAL", "QUARANTINED")
