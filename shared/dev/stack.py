"""The product on one machine (`se stack up`, `se demo`, the e2e tests and the load bench).

1. moto's server on 127.0.0.1. template.yaml is turned into plain CloudFormation by samtranslator
   (what `sam deploy` does) and created with moto's `create_stack`; the functions and what hangs on
   them (URLs, permissions, event source mappings, schedules) are left out, because here they run
   in-process. moto skips what it does not model: the bucket's notification configuration and the
   secrets are then applied from the template's own properties (bucket and queue policies and
   alarms are not enforced by moto and stay out).
2. The RunPod worker under the SDK's own local API (`shared.dev.localstack.LocalRunpodWorker`), or
   any RunPod-API-compatible URL (the load bench's stand-in).
3. A small HTTP server that turns requests into function-URL events (payload 2.0) for on_job_done
   (and embed_text), a pump that delivers SQS batches to on_upload (deleting what it reports as
   done, leaving failures to SQS's redrive), and the sweeper on a short schedule.

Every function gets the environment template.yaml gives it, resolved against the created resources,
plus the local endpoint (AWS_ENDPOINT_URL, placeholder credentials), MODEL_DIR and the local
timings in LOCAL_OVERRIDES (a webhook is only sent by the SDK's local API once a job is polled, so
jobs are polled after 0.5 s instead of after the execution timeout).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

from shared.dev.localstack import REGION, LocalRunpodWorker, MotoServer, free_port
from shared.settings import REPO_ROOT

log = logging.getLogger(__name__)

TEMPLATE = REPO_ROOT / "template.yaml"
STACK_NAME = "se-local"
ACCOUNT = "123456789012"
PLACEHOLDER_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/serverless-embeddings:local"
IN_PROCESS_TYPES = {
    "AWS::Lambda::Function",
    "AWS::Lambda::Url",
    "AWS::Lambda::Permission",
    "AWS::Lambda::EventSourceMapping",
    "AWS::Scheduler::Schedule",
}
LOCAL_RUNPOD_KEY = "local-runpod-api-key"  # the SDK's local API checks none; not a credential
LOCAL_OVERRIDES = {
    "POLL_AFTER_S": "0.5",
    "POLL_INTERVAL_S": "1",
    "BACKOFF_BASE_S": "1",
    "BACKOFF_MAX_S": "5",
    "RUNPOD_TIMEOUT_S": "300",
    # one process per function here: each may use the endpoint's whole budget (template.yaml splits it
    # between the containers of a deployed stack, docs/runpod-limits.md)
    "RUNPOD_RUN_PER_S": "50",
    "RUNPOD_STATUS_PER_S": "100",
    "MANIFEST_DELAY_S": "0.5",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_TRACE_DISABLED": "true",
}
ENDPOINTS_FILE = REPO_ROOT / ".cache" / "stack" / "endpoints.json"
FUNCTIONS = {
    "on_upload": "OnUploadFunction",
    "on_job_done": "OnJobDoneFunction",
    "sweeper": "SweeperFunction",
    "embed_text": "EmbedTextFunction",
    "reprocess": "ReprocessFunction",
}


# ---------------------------------------------------------------------- template -> resources


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    from cfnlint.decode import decode

    tpl, matches = decode(str(path))
    if matches:
        raise ValueError(f"{path} does not parse: {matches[0]}")
    return json.loads(json.dumps(tpl, default=str))


def translate(template: Mapping[str, Any]) -> dict[str, Any]:
    """SAM -> plain CloudFormation with samtranslator (image URIs are placeholders: nothing is pushed)."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    sam = json.loads(json.dumps(template))
    for res in sam["Resources"].values():
        if res["Type"] == "AWS::Serverless::Function":
            res["Properties"]["ImageUri"] = PLACEHOLDER_IMAGE
    session = boto3.session.Session(
        region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    return Translator(managed_policy_map=None, sam_parser=Parser(), boto_session=session).translate(
        sam_template=sam, parameter_values={}
    )


def _refs(node: Any, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        if isinstance(node.get("Ref"), str):
            out.add(node["Ref"])
        if "Fn::GetAtt" in node:
            att = node["Fn::GetAtt"]
            out.add(att[0] if isinstance(att, list) else str(att).split(".")[0])
        if "Fn::Sub" in node:
            text = node["Fn::Sub"] if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"][0]
            out.update(m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text))
        for v in node.values():
            _refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _refs(v, out)
    return out


def without_functions(cfn: Mapping[str, Any]) -> dict[str, Any]:
    """The translated template minus the in-process resources and whatever refers to them."""
    out = json.loads(json.dumps(cfn))
    dropped = {k for k, v in out["Resources"].items() if v["Type"] in IN_PROCESS_TYPES}
    grew = True
    while grew:
        grew = False
        for k, v in out["Resources"].items():
            if k not in dropped and _refs(v, set()) & dropped:
                dropped.add(k)
                grew = True
    out["Resources"] = {k: v for k, v in out["Resources"].items() if k not in dropped}
    out["Outputs"] = {k: v for k, v in out.get("Outputs", {}).items() if not _refs(v, set()) & dropped}
    return out


class Resources:
    """Physical ids of the created stack, and how to resolve the template's intrinsics against them."""

    def __init__(
        self, moto: MotoServer | None, template: Mapping[str, Any], physical: dict[str, str]
    ) -> None:
        self.moto = moto
        self.template = template
        self.physical = physical
        self.urls: dict[str, str] = {}  # function URL resources -> local URLs
        self.parameters: dict[str, str] = {}

    def arn(self, logical: str) -> str:
        kind = self.template["Resources"][logical]["Type"]
        pid = self.physical[logical]
        if kind == "AWS::SQS::Queue":
            return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{pid.rsplit('/', 1)[-1]}"
        if kind == "AWS::S3::Bucket":
            return f"arn:aws:s3:::{pid}"
        if kind == "AWS::DynamoDB::Table":
            return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{pid}"
        return pid

    def resolve(self, value: Any) -> str:
        if isinstance(value, str | int | float):
            return str(value)
        if isinstance(value, dict) and "Ref" in value:
            name = value["Ref"]
            if name in self.parameters:
                return self.parameters[name]
            if name in self.template.get("Parameters", {}):
                return str(self.template["Parameters"][name]["Default"])
            return self.physical[name]
        if isinstance(value, dict) and "Fn::GetAtt" in value:
            logical, attr = value["Fn::GetAtt"]
            if attr == "FunctionUrl":
                return self.urls[logical]
            if attr == "Arn":
                return self.arn(logical)
        raise ValueError(f"cannot resolve {value!r} locally")


def create_resources(
    moto: MotoServer,
    template: Mapping[str, Any],
    stack_name: str = STACK_NAME,
    *,
    translated: Mapping[str, Any] | None = None,
) -> Resources:
    """create_stack on the translated template (`translated`, when the caller already has it), then what
    moto skips (notifications, secrets)."""
    import warnings

    # moto warns (in its server thread) for each resource type it does not model; that is expected here
    warnings.filterwarnings("ignore", message="Tried to parse AWS::", category=UserWarning)
    logging.getLogger("moto").setLevel(logging.ERROR)
    cf = moto.client("cloudformation")
    body = without_functions(translated if translated is not None else translate(template))
    cf.create_stack(StackName=stack_name, TemplateBody=json.dumps(body), Capabilities=["CAPABILITY_IAM"])
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cf.describe_stack_resources(StackName=stack_name)["StackResources"]
        if r.get("LogicalResourceId") and r.get("PhysicalResourceId")
    }
    res = Resources(moto, template, physical)
    sm = moto.client("secretsmanager")
    for name, r in template["Resources"].items():
        if r["Type"] == "AWS::SecretsManager::Secret" and name not in physical:
            value = LOCAL_RUNPOD_KEY if name == "RunPodApiKeySecret" else uuid.uuid4().hex + uuid.uuid4().hex
            out = sm.create_secret(Name=f"{stack_name}-{name}", SecretString=value)
            physical[name] = out["ARN"]
    s3 = moto.client("s3")
    for name, r in template["Resources"].items():
        if r["Type"] != "AWS::S3::Bucket":
            continue
        configs = []
        for q in r["Properties"].get("NotificationConfiguration", {}).get("QueueConfigurations", []):
            rules = [{"Name": x["Name"], "Value": x["Value"]} for x in q["Filter"]["S3Key"]["Rules"]]
            configs.append(
                {
                    "QueueArn": res.resolve(q["Queue"]),
                    "Events": [q["Event"]],
                    "Filter": {"Key": {"FilterRules": rules}},
                }
            )
        if configs:
            s3.put_bucket_notification_configuration(
                Bucket=physical[name], NotificationConfiguration={"QueueConfigurations": configs}
            )
    return res


def function_env(res: Resources, logical: str, extra: Mapping[str, str]) -> dict[str, str]:
    """The environment template.yaml gives one function, resolved locally, plus `extra`."""
    props = res.template["Resources"][logical]["Properties"]
    env = {k: res.resolve(v) for k, v in props.get("Environment", {}).get("Variables", {}).items()}
    env.update(extra)
    return env


# ---------------------------------------------------------------------- function URLs, pump, sweeper


class _Context:
    def __init__(self, name: str) -> None:
        self.function_name = name
        self.aws_request_id = uuid.uuid4().hex
        self.memory_limit_in_mb = 1024
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 300_000


def url_event(method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """An HTTP request as a function URL event (payload format 2.0)."""
    try:
        text, b64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, b64 = base64.b64encode(body).decode(), True
    params = {k: v[-1] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {k.lower(): v for k, v in headers.items()},
        "queryStringParameters": params or None,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("User-Agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": int(time.time() * 1000),
        },
        "body": text or None,
        "isBase64Encoded": b64,
    }


class FunctionUrls:
    """`http://127.0.0.1:{port}/{function}/...` -> the function's handler, as Lambda function URLs do."""

    MAX_BODY = 6 * 1024 * 1024  # Lambda's own request payload limit

    def __init__(
        self,
        handlers: Mapping[str, Callable[[Any, Any], dict]],
        host: str = "127.0.0.1",
        *,
        iam: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.handlers = dict(handlers)
        # AuthType AWS_IAM functions: name -> {access key id: secret}; a call whose SigV4 signature does
        # not check out gets 403 and never reaches the function, as with Lambda's own function URLs
        self.iam = {k: dict(v) for k, v in (iam or {}).items()}
        self.host = host
        self.port = free_port(host)
        self.base = f"http://{host}:{self.port}"
        urls = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # query strings carry tokens: never logged
                pass

            def _serve(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                name = parts.path.strip("/").split("/", 1)[0]
                fn = urls.handlers.get(name)
                length = int(self.headers.get("Content-Length") or 0)
                if fn is None or length > urls.MAX_BODY:
                    self.send_response(404 if fn is None else 413)
                    self.end_headers()
                    return
                body = self.rfile.read(length) if length else b""
                if name in urls.iam:
                    from shared.aws import sigv4

                    url = f"http://{self.headers.get('Host', '')}{self.path}"
                    try:
                        sigv4.verify(self.command, url, dict(self.headers), body, urls.iam[name], REGION)
                    except sigv4.SignatureError as e:
                        data = json.dumps({"Message": "Forbidden", "reason": str(e)}).encode()
                        self.send_response(403)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                # a function URL's path is relative to the function (no /{name} prefix)
                path = parts.path[len(name) + 1 :] or "/"
                event = url_event(self.command, path, parts.query, dict(self.headers), body)
                try:
                    out = fn(event, _Context(name))
                except Exception:
                    log.exception("function %s raised", name)
                    out = {"statusCode": 502, "body": '{"message":"Internal Server Error"}'}
                payload = out.get("body") or ""
                data = base64.b64decode(payload) if out.get("isBase64Encoded") else str(payload).encode()
                self.send_response(int(out.get("statusCode", 200)))
                for k, v in (out.get("headers") or {}).items():
                    self.send_header(k, str(v))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self.server = ThreadingHTTPServer((host, self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="function-urls", daemon=True
        )

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def start(self) -> FunctionUrls:
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread.is_alive():  # shutdown() waits for serve_forever: never started, it never returns
            self.server.shutdown()
        self.server.server_close()


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """Received SQS messages as the event Lambda's SQS event source mapping delivers."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


class Pump:
    """Delivers queue batches to a function (on_upload, reprocess) and runs the sweeper, in background
    threads, as Lambda's SQS event source mapping does: a received batch stays invisible for the
    queue's own VisibilityTimeout (template.yaml) while its invocation runs, so a slow batch is never
    handed to a second invocation; what failed or crashed comes back after `retry_after_s` (a local
    shortcut: SQS itself would wait out the visibility timeout)."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        on_upload: Callable[[Any, Any], dict],
        sweeper: Callable[[Any, Any], dict] | None,
        *,
        visibility_s: int | None = None,
        retry_after_s: int = 1,
        sweep_every_s: float = 0.5,
        batch_size: int = 10,
        workers: int = 1,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.on_upload = on_upload
        self.sweeper = sweeper
        if visibility_s is None:
            attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"])
            visibility_s = int(attrs["Attributes"]["VisibilityTimeout"])
        self.visibility_s = visibility_s
        self.retry_after_s = min(retry_after_s, visibility_s)
        self.sweep_every_s = sweep_every_s
        self.batch_size = batch_size
        self.stopping = threading.Event()
        self.batches = 0
        self.failures = 0
        self.crashes = 0
        self.redelivered = 0  # messages received again (ApproximateReceiveCount > 1)
        # `workers` concurrent invocations, as Lambda's event source mapping runs several at once
        self.threads = [
            threading.Thread(target=self._pump, name=f"sqs-pump-{i}", daemon=True) for i in range(workers)
        ] + [threading.Thread(target=self._sweep, name="sweeper", daemon=True)]

    def start(self) -> Pump:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=30)

    def _going_down(self) -> bool:
        """After a failed call: is the stack stopping? Waits a moment for it, because a Ctrl-C reaches
        moto's and the worker's processes (the terminal's process group) as soon as this one, so calls
        fail before `stop` is called. A failure while stopping is no error: the thread ends quietly."""
        return self.stopping.wait(1.0)

    def deliver_once(self, wait_s: int = 1) -> int:
        """Receive one batch, invoke on_upload, delete what succeeded; the number of messages seen."""
        got = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=wait_s,
            VisibilityTimeout=self.visibility_s,
            AttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            return 0
        self.batches += 1
        self.redelivered += sum(
            int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)) > 1 for m in got
        )
        try:
            out = self.on_upload(sqs_event(got, self.queue_arn), _Context("on_upload"))
        except Exception as e:  # like Lambda: a crashed invocation deletes nothing; SQS redelivers
            self.crashes += 1
            log.warning(
                "on_upload invocation failed (%s); %d messages return to the queue",
                type(e).__name__,
                len(got),
            )
            self._retry(got)
            return len(got)
        failed = {f["itemIdentifier"] for f in out.get("batchItemFailures", [])}
        self.failures += len(failed)
        done = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
            for i, m in enumerate(got)
            if m["MessageId"] not in failed
        ]
        if done:
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=done)
        self._retry([m for m in got if m["MessageId"] in failed])
        return len(got)

    def _retry(self, messages: list[dict[str, Any]]) -> None:
        """What failed becomes visible again after retry_after_s, not after the whole visibility timeout."""
        if not messages or self.retry_after_s >= self.visibility_s:
            return
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": self.retry_after_s}
            for i, m in enumerate(messages)
        ]
        self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)

    def _pump(self) -> None:
        while not self.stopping.is_set():
            try:
                self.deliver_once()
            except Exception:
                if self._going_down():
                    return
                log.exception("pump")

    def _sweep(self) -> None:
        while self.sweeper is not None and not self.stopping.wait(self.sweep_every_s):
            try:
                self.sweeper({"source": "local.schedule"}, _Context("sweeper"))
            except Exception:
                if self._going_down():
                    return
                log.exception("sweeper")


# ---------------------------------------------------------------------- the whole stack


class LocalStack:
    """`with LocalStack(model_dir) as stack:` the product on 127.0.0.1 until the block ends."""

    def __init__(
        self,
        model_dir: Path,
        *,
        runpod_url: str | None = None,
        worker_env: Mapping[str, str] | None = None,
        overrides: Mapping[str, str] | None = None,
        sweep_every_s: float = 0.5,
        pump: bool = True,
        log_dir: Path | None = None,
        wrap: Callable[[str, Callable[[Any, Any], dict]], Callable[[Any, Any], dict]] | None = None,
        pump_workers: int = 1,
        function_log: TextIO | None = None,
        memory_ledger: bool = False,
    ) -> None:
        """`memory_ledger`: every function shares one in-memory ledger (shared.dev.memory_ledger: the
        Ledger port's other adapter) instead of the stack's DynamoDB table, S3 and SQS staying moto's.
        For load benches only: moto's transact_write_items deep-copies the whole table on every call, so
        a 1,000-item burst is quadratic in the emulator."""
        # where the in-process functions' Powertools JSON lines go (stdout, as in Lambda, when None); the
        # pipeline's own loggers stay with this process's logging (shared.logs)
        self.function_log = function_log
        self.pump_workers = pump_workers
        self.wrap = wrap  # bench hook: wraps each function's handler (timing, fault injection)
        self.model_dir = Path(model_dir)
        self.runpod_url = runpod_url
        self.worker_env = dict(worker_env or {})
        self.overrides = {**LOCAL_OVERRIDES, **(overrides or {})}
        self.sweep_every_s = sweep_every_s
        self.with_pump = pump
        self.log_dir = log_dir
        self.moto: MotoServer | None = None
        self.worker: LocalRunpodWorker | None = None
        self.urls: FunctionUrls | None = None
        self.pump: Pump | None = None
        self.reprocess_pump: Pump | None = None
        self.resources: Resources | None = None
        self.handlers: dict[str, Callable[[Any, Any], dict]] = {}
        self.envs: dict[str, dict[str, str]] = {}
        self.pipelines: dict[str, Any] = {}
        self.memory_ledger = memory_ledger

    # endpoints any AWS client can be pointed at
    def endpoints(self) -> dict[str, Any]:
        r = self.resources
        assert r is not None and self.moto is not None and self.urls is not None
        return {
            "AWS_ENDPOINT_URL": self.moto.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "MEDIA_BUCKET": r.physical["MediaBucket"],
            "LEDGER_TABLE": r.physical["LedgerTable"],
            "UPLOAD_QUEUE_URL": r.physical["UploadQueue"],
            "UPLOAD_DLQ_URL": r.physical["UploadDeadLetterQueue"],
            "RUNPOD_ENDPOINT_URL": r.parameters["RunPodEndpointUrl"],
            "function_urls": {
                name: self.urls.url(name) for name in ("on_job_done", "embed_text", "reprocess")
            },
            "ReprocessFunctionUrl": self.urls.url("reprocess"),
            "REPROCESS_QUEUE_URL": r.physical["ReprocessQueue"],
            "MODEL_DIR": str(self.model_dir),
            # what `se invoke` needs to give a function its template environment
            "resources": {"physical": r.physical, "parameters": r.parameters, "urls": r.urls},
            "overrides": self.overrides,
        }

    def local_env(self) -> dict[str, str]:
        """What every in-process function gets on top of its template environment."""
        assert self.moto is not None
        return {
            "AWS_ENDPOINT_URL": self.moto.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "MODEL_DIR": str(self.model_dir),
            **self.overrides,
        }

    def start(self) -> LocalStack:
        from shared.pipeline import lambdas

        template = load_template()
        self.moto = MotoServer().start()
        # moto keeps one in-process backend for every server of a process: a unique stack name keeps
        # two stacks of one process (tests, benches) apart
        name = f"{STACK_NAME}-{uuid.uuid4().hex[:6]}"
        self.resources = res = create_resources(self.moto, template, name)
        if self.runpod_url is None:
            log_path = None
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                log_path = self.log_dir / "worker.log"
            self.worker = LocalRunpodWorker(self.model_dir, env=self.worker_env, log_path=log_path).start()
            self.runpod_url = self.worker.base
        res.parameters["RunPodEndpointUrl"] = self.runpod_url
        self.urls = FunctionUrls({}, iam={"reprocess": {"testing": "testing"}})
        res.urls = {
            "OnJobDoneFunctionUrl": self.urls.url("on_job_done"),
            "EmbedTextFunctionUrl": self.urls.url("embed_text"),
            "ReprocessFunctionUrl": self.urls.url("reprocess"),
        }
        shared_ledger = None
        if self.memory_ledger:
            from shared.dev.memory_ledger import memory_ledger

            shared_ledger = memory_ledger()
        for name in ("on_upload", "on_job_done", "sweeper", "reprocess"):
            self.envs[name] = function_env(res, FUNCTIONS[name], self.local_env())
            self.handlers[name] = lambdas.build(
                name, self.envs[name], log_stream=self.function_log, adopt_loggers=False, ledger=shared_ledger
            )
            self.pipelines[name] = self.handlers[name].pipeline  # type: ignore[attr-defined]
            if self.wrap is not None:
                self.handlers[name] = self.wrap(name, self.handlers[name])
        self.urls.handlers["on_job_done"] = self.handlers["on_job_done"]
        self.urls.handlers["reprocess"] = self.handlers["reprocess"]
        self.urls.start()
        if self.with_pump:
            self.pump = Pump(
                self.moto.client("sqs"),
                res.physical["UploadQueue"],
                res.arn("UploadQueue"),
                self.handlers["on_upload"],
                self.handlers["sweeper"],
                sweep_every_s=self.sweep_every_s,
                workers=self.pump_workers,
            ).start()
            self.reprocess_pump = Pump(
                self.moto.client("sqs"),
                res.physical["ReprocessQueue"],
                res.arn("ReprocessQueue"),
                self.handlers["reprocess"],
                None,
                workers=self.pump_workers,
            ).start()
        return self

    def stop(self) -> None:
        """The pumps and the sweeper first (their threads end before moto does), then the rest."""
        for pump in (self.reprocess_pump, self.pump):
            if pump is not None:
                pump.stopping.set()
        for part in (self.reprocess_pump, self.pump, self.urls, self.worker, self.moto):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.stop()

    def queued(self) -> int:
        """Messages in the queues the stack pumps (waiting, being handled or delayed): 0 when the
        uploads and reprocess messages sent so far have all been handled."""
        assert self.resources is not None and self.moto is not None
        sqs = self.moto.client("sqs")
        names = [f"ApproximateNumberOfMessages{k}" for k in ("", "NotVisible", "Delayed")]
        total = 0
        for queue in ("UploadQueue", "ReprocessQueue"):
            attrs = sqs.get_queue_attributes(QueueUrl=self.resources.physical[queue], AttributeNames=names)
            total += sum(int(v) for v in attrs["Attributes"].values())
        return total

    def write_endpoints(self, path: Path = ENDPOINTS_FILE) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.endpoints(), indent=2))
        tmp.replace(path)
        return path

    def client(self, service: str) -> Any:
        assert self.moto is not None
        return self.moto.client(service)

    def __enter__(self) -> LocalStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
