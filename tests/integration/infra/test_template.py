"""template.yaml: both linters pass clean, and the template agrees with the code (STYLE.md, 10).

Contracts: every env var the text handler reads is set on the function (and nothing stale is); the
ImageConfig handler imports; IAM grants no wildcard actions and the text role only its own logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

from shared.lambda_text import ObservabilitySettings
from shared.settings import REPO_ROOT, TextSettings

pytestmark = pytest.mark.integration

TEMPLATE = REPO_ROOT / "template.yaml"
VENV_BIN = Path(sys.executable).parent
# Read by Powertools itself, not by our settings.
POWERTOOLS_ONLY = {"POWERTOOLS_LOG_LEVEL"}


@pytest.fixture(scope="module")
def template() -> dict:
    tpl, matches = decode(str(TEMPLATE))
    assert not matches, matches
    return tpl


def resources(tpl: dict, kind: str) -> dict[str, dict]:
    return {name: r for name, r in tpl["Resources"].items() if r["Type"] == kind}


def resolve(value: Any, tpl: dict) -> str:
    """A plain value, or a `Ref` to a parameter resolved to its default."""
    if isinstance(value, Mapping) and set(value) == {"Ref"}:
        return str(tpl["Parameters"][value["Ref"]]["Default"])
    assert isinstance(value, str | int | float), value
    return str(value)


def function_env(tpl: dict) -> dict[str, str]:
    fn = tpl["Resources"]["EmbedTextFunction"]["Properties"]
    return {k: resolve(v, tpl) for k, v in fn["Environment"]["Variables"].items()}


class RecordingEnv(dict):
    """A mapping that remembers every key the code asked for."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


def env_read_by_text_handler(env: Mapping[str, str] | None = None) -> set[str]:
    """The variables embed_text's init reads: TextSettings + ObservabilitySettings (as the module does)."""
    rec = RecordingEnv(env or {})
    TextSettings.from_env(rec)
    ObservabilitySettings.from_env(rec)
    return rec.asked


def policy_statements(tpl: dict) -> Iterator[tuple[str, dict]]:
    """(resource name, statement) for every policy document in the template."""
    for name, res in tpl["Resources"].items():
        props = res.get("Properties", {})
        docs = [p["PolicyDocument"] for p in props.get("Policies", []) if isinstance(p, Mapping)]
        if "PolicyDocument" in props:
            docs.append(props["PolicyDocument"])
        for doc in docs:
            for st in doc["Statement"]:
                yield name, st


def as_list(x: Any) -> list:
    return x if isinstance(x, list) else [x]


# ---------------------------------------------------------------- linters


def test_cfn_lint_is_clean():
    proc = subprocess.run(
        [str(VENV_BIN / "cfn-lint"), "--include-checks", "I", "--", str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


def test_sam_validate_lint_is_clean(tmp_path: Path):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),  # sam writes its config/telemetry id here
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "SAM_CLI_TELEMETRY": "0",
        "SAM_CLI_DISABLE_UPDATE_CHECK": "1",  # no network
    }
    proc = subprocess.run(
        [str(VENV_BIN / "sam"), "validate", "--lint", "-t", str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "is a valid SAM Template" in proc.stdout + proc.stderr


# ---------------------------------------------------------------- settings <-> template


def test_every_env_var_the_handler_reads_is_set_on_the_function(template: dict):
    env = function_env(template)
    read = env_read_by_text_handler()
    assert read >= {"MODEL_DIR", "TEXT_THREADS", "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"}
    assert sorted(read - set(env)) == []
    assert sorted(set(env) - read - POWERTOOLS_ONLY) == [], "stale variables nobody reads"


def test_template_env_values_parse(template: dict):
    env = function_env(template)
    settings = TextSettings.from_env(env)
    assert settings.model_dir == Path("/opt/models")
    assert settings.max_tokens == 256 and settings.truncate is True and settings.precision == "auto"
    obs = ObservabilitySettings.from_env(env)
    assert (obs.service, obs.namespace) == ("embed-text", "ServerlessEmbeddings")


def test_text_function_shape(template: dict):
    fn = template["Resources"]["EmbedTextFunction"]
    props = fn["Properties"]
    assert props["PackageType"] == "Image"
    assert template["Globals"]["Function"]["Architectures"] == ["x86_64"]
    assert props["FunctionUrlConfig"]["AuthType"] == "AWS_IAM"
    assert props["LoggingConfig"]["LogGroup"] == {"Ref": "EmbedTextLogGroup"}
    meta = {k: v for k, v in fn["Metadata"].items() if k != "checkov"}
    assert meta == {"DockerTag": "python3.11-v1", "DockerContext": ".", "Dockerfile": "Dockerfile.cpu"}
    assert (REPO_ROOT / fn["Metadata"]["Dockerfile"]).is_file()
    assert props["Timeout"] <= 900 and int(resolve(props["MemorySize"], template)) >= 1024
    group = template["Resources"]["EmbedTextLogGroup"]["Properties"]
    assert int(resolve(group["RetentionInDays"], template)) > 0
    assert "EmbedTextFunctionUrl" in template["Outputs"]
    assert template["Outputs"]["EmbedTextFunctionUrl"]["Value"] == {
        "Fn::GetAtt": ["EmbedTextFunctionUrl", "FunctionUrl"]
    }


def test_image_handler_imports(template: dict, minilm_model_dir: Path):
    (command,) = template["Resources"]["EmbedTextFunction"]["Properties"]["ImageConfig"]["Command"]
    module, attr = command.rsplit(".", 1)
    code = (
        "import importlib, json, sys\n"
        f"m = importlib.import_module({module!r})\n"
        f"print(json.dumps({{'callable': callable(getattr(m, {attr!r}, None))}}))\n"
    )
    env = {**os.environ, "MODEL_DIR": str(minilm_model_dir)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=REPO_ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"callable": True}


# ---------------------------------------------------------------- IAM


def test_no_wildcard_actions_in_any_allow(template: dict):
    statements = list(policy_statements(template))
    assert statements
    for name, st in statements:
        if st["Effect"] != "Allow":
            continue  # a Deny with a wildcard only narrows (the bucket's TLS-only guard)
        assert "NotAction" not in st, name
        for action in as_list(st["Action"]):
            assert "*" not in action, (name, action)


def test_text_role_only_writes_its_own_logs(template: dict):
    """embed-text touches no data: its own logs, traces, its DLQ for async failures, the env key."""
    role = template["Resources"]["EmbedTextRole"]["Properties"]
    assert "ManagedPolicyArns" not in role
    actions = {
        a for p in role["Policies"] for st in p["PolicyDocument"]["Statement"] for a in as_list(st["Action"])
    }
    assert actions == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "sqs:SendMessage",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    }
    logs = [
        st
        for p in role["Policies"]
        for st in p["PolicyDocument"]["Statement"]
        if "logs:PutLogEvents" in as_list(st["Action"])
    ]
    assert [st["Resource"] for st in logs] == [{"Fn::GetAtt": ["EmbedTextLogGroup", "Arn"]}]
    trust = role["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "lambda.amazonaws.com"}]
    fn = template["Resources"]["EmbedTextFunction"]["Properties"]
    assert fn["Role"] == {"Fn::GetAtt": ["EmbedTextRole", "Arn"]}
    assert "Policies" not in fn


ROLES = {
    "OnUploadFunction": "OnUploadRole",
    "OnJobDoneFunction": "OnJobDoneRole",
    "SweeperFunction": "SweeperRole",
    "EmbedTextFunction": "EmbedTextRole",
    "ReprocessFunction": "ReprocessRole",
    "SearchFunction": "SearchRole",
}


def test_every_resource_is_narrow_except_xray(template: dict):
    """No `*` resource in any function role but X-Ray's, which has no resource-level permissions."""
    for role in ROLES.values():
        for p in template["Resources"][role]["Properties"]["Policies"]:
            for st in p["PolicyDocument"]["Statement"]:
                if st["Resource"] == "*":
                    assert set(as_list(st["Action"])) <= {
                        "xray:PutTraceSegments",
                        "xray:PutTelemetryRecords",
                    }, role


def _statements(template: dict, role: str) -> list[dict]:
    return [
        st
        for p in template["Resources"][role]["Properties"]["Policies"]
        for st in p["PolicyDocument"]["Statement"]
    ]


def test_only_the_orchestrators_touch_data_and_only_their_prefixes(template: dict):
    for role in ("OnUploadRole", "OnJobDoneRole", "SweeperRole", "ReprocessRole"):
        for st in _statements(template, role):
            for action in as_list(st["Action"]):
                if action in ("s3:PutObject", "s3:DeleteObject"):
                    subs = [r["Fn::Sub"] for r in as_list(st["Resource"])]
                    # the search tables (search/) are the sweeper's alone: it writes them with the manifests
                    prefixes = {"embeddings", "transcripts", "manifests"} | (
                        {"search"} if role == "SweeperRole" else set()
                    )
                    assert all(r.split("/", 1)[1].split("/")[0] in prefixes for r in subs), (
                        role,
                        action,
                        subs,
                    )
                assert not action.startswith(("dynamodb:Scan", "dynamodb:Delete", "s3:DeleteBucket")), (
                    role,
                    action,
                )
    # on_job_done needs no RunPod key: it never calls RunPod
    sec = [
        st
        for st in _statements(template, "OnJobDoneRole")
        if "secretsmanager:GetSecretValue" in as_list(st["Action"])
    ]
    assert [st["Resource"] for st in sec] == [{"Ref": "WebhookSecret"}]


def test_orchestrator_env_parses_and_holds_no_secret_values(template: dict):
    from shared.pipeline.settings import PipelineSettings

    for fn in ("OnUploadFunction", "OnJobDoneFunction", "SweeperFunction", "ReprocessFunction"):
        raw = template["Resources"][fn]["Properties"]["Environment"]["Variables"]
        assert raw["WEBHOOK_SECRET"] == {"Ref": "WebhookSecret"}  # the secret's id, never its value
        assert raw["MEDIA_BUCKET"] == {"Ref": "MediaBucket"} and raw["LEDGER_TABLE"] == {"Ref": "LedgerTable"}
        env = {
            k: "https://example.lambda-url.us-east-1.on.aws/"
            if isinstance(v, dict) and "Fn::GetAtt" in v
            else "https://sqs.us-east-1.amazonaws.com/123456789012/queue"
            if k.endswith("_QUEUE_URL")
            else (
                resolve(v, template)
                if not (isinstance(v, dict) and v.get("Ref") in template["Resources"])
                else f"{v['Ref']}-id"
            )
            for k, v in raw.items()
        }
        settings = PipelineSettings.from_env(env)
        assert settings.max_attempts == 4 and settings.job_ttl_s >= settings.execution_timeout_s
        for k, v in raw.items():
            assert not any(w in k for w in ("KEY", "TOKEN", "PASSWORD")) or isinstance(v, dict), k
        if fn != "OnJobDoneFunction":
            assert raw["RUNPOD_API_KEY_SECRET"] == {"Ref": "RunPodApiKeySecret"}
            assert raw["CALLBACK_URL"] == {"Fn::GetAtt": ["OnJobDoneFunctionUrl", "FunctionUrl"]}


def test_function_shapes(template: dict):
    res = template["Resources"]
    events = res["OnUploadFunction"]["Properties"]["Events"]["Uploads"]
    assert events["Type"] == "SQS" and events["Properties"]["FunctionResponseTypes"] == [
        "ReportBatchItemFailures"
    ]
    assert events["Properties"]["Queue"] == {"Fn::GetAtt": ["UploadQueue", "Arn"]}
    assert res["OnJobDoneFunction"]["Properties"]["FunctionUrlConfig"]["AuthType"] == "NONE"
    # reprocess: the admin API behind IAM, and the consumer of its own queue (partial batch failures)
    rp = res["ReprocessFunction"]["Properties"]
    assert rp["FunctionUrlConfig"]["AuthType"] == "AWS_IAM"
    work = rp["Events"]["Work"]
    assert work["Properties"]["Queue"] == {"Fn::GetAtt": ["ReprocessQueue", "Arn"]}
    assert work["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    rq = res["ReprocessQueue"]["Properties"]
    assert rq["VisibilityTimeout"] >= 6 * rp["Timeout"]
    assert (
        str(rq["RedrivePolicy"]["maxReceiveCount"])
        == rp["Environment"]["Variables"]["REPROCESS_MAX_RECEIVES"]
    )
    assert rp["Environment"]["Variables"]["REPROCESS_QUEUE_URL"] == {"Ref": "ReprocessQueue"}
    sched = res["SweeperFunction"]["Properties"]["Events"]["EveryMinute"]
    assert sched["Type"] == "ScheduleV2" and sched["Properties"]["ScheduleExpression"].startswith("rate(")
    for fn in ROLES:
        props = res[fn]["Properties"]
        assert props["PackageType"] == "Image" and res[fn]["Metadata"]["Dockerfile"] == "Dockerfile.cpu"
        module, attr = props["ImageConfig"]["Command"][0].rsplit(".", 1)
        assert (REPO_ROOT / (module.replace(".", "/") + ".py")).is_file() and attr == "handler"
        assert "ReservedConcurrentExecutions" in props
    # the queue's visibility timeout covers six times the consumer's timeout (AWS guidance)
    assert (
        res["UploadQueue"]["Properties"]["VisibilityTimeout"]
        >= 6 * res["OnUploadFunction"]["Properties"]["Timeout"]
    )


def test_alarms_cover_dlqs_errors_and_quarantine(template: dict):
    alarms = resources(template, "AWS::CloudWatch::Alarm").values()
    metrics = {(a["Properties"]["Namespace"], a["Properties"]["MetricName"]) for a in alarms}
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible") in metrics
    assert ("ServerlessEmbeddings", "ItemsQuarantined") in metrics
    errored = {
        a["Properties"]["Dimensions"][0]["Value"]["Ref"]
        for a in alarms
        if a["Properties"]["MetricName"] == "Errors"
    }
    assert errored == set(ROLES)


def test_checkov_is_clean():
    """checkov (its own venv, .venv-tools: it pins an old boto3) finds no failed check; each skip stands
    where it applies, with its reason."""
    exe = REPO_ROOT / ".venv-tools" / "bin" / "checkov"
    assert exe.is_file(), "run scripts/bootstrap.sh: it installs checkov into .venv-tools"
    proc = subprocess.run(
        [
            str(exe),
            "-d",
            str(REPO_ROOT),
            "--framework",
            "cloudformation,dockerfile,secrets",
            "--skip-download",
            "--quiet",
            "--compact",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
        env={
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "BC_SKIP_MAPPING": "TRUE",
        },
    )
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        (r.get("check_type"), c["check_id"], c.get("file_path"))
        for r in reports
        for c in r.get("results", {}).get("failed_checks", [])
    ]
    assert failed == [], failed
    skipped = [c for r in reports for c in r.get("results", {}).get("skipped_checks", [])]
    assert all(c.get("check_result", {}).get("suppress_comment") for c in skipped)


# ---------------------------------------------------------------- storage, queues, ledger


def test_bucket_is_private_and_encrypted(template: dict):
    (bucket,) = resources(template, "AWS::S3::Bucket").values()
    props = bucket["Properties"]
    assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert bucket["DeletionPolicy"] == "Retain"
    prefixes = {
        r["Value"]
        for q in props["NotificationConfiguration"]["QueueConfigurations"]
        for r in q["Filter"]["S3Key"]["Rules"]
    }
    assert prefixes == {"uploads/", "persons/"}  # DESIGN.md S3 keys: sources and person photos


def test_upload_queue_redrives_to_the_dlq(template: dict):
    queue = template["Resources"]["UploadQueue"]["Properties"]
    redrive = queue["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["UploadDeadLetterQueue", "Arn"]}
    assert int(resolve(redrive["maxReceiveCount"], template)) >= 1
    dlq = template["Resources"]["UploadDeadLetterQueue"]["Properties"]
    assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]  # failures outlive retries


def test_ledger_table_keys(template: dict):
    """The one definition of the ledger's keys; shared.aws.ledger uses exactly these names."""
    from shared.aws import ledger
    from shared.pipeline.ledger import TTL_ATTR

    (table,) = resources(template, "AWS::DynamoDB::Table").values()
    props = table["Properties"]
    assert props["KeySchema"] == [
        {"AttributeName": ledger.PK, "KeyType": "HASH"},
        {"AttributeName": ledger.SK, "KeyType": "RANGE"},
    ]
    types = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert types == {
        ledger.PK: "S",
        ledger.SK: "S",
        ledger.OWNER_KEY: "S",
        ledger.OWNER_SORT: "S",
        ledger.SWEEP_KEY: "S",
        ledger.SWEEP_SORT: "N",
        ledger.OWNERS_KEY: "S",
        ledger.OWNERS_SORT: "S",
    }
    gsis = {
        g["IndexName"]: [k["AttributeName"] for k in g["KeySchema"]] for g in props["GlobalSecondaryIndexes"]
    }
    assert gsis == {
        ledger.OWNER_INDEX: [ledger.OWNER_KEY, ledger.OWNER_SORT],
        ledger.SWEEP_INDEX: [ledger.SWEEP_KEY, ledger.SWEEP_SORT],
        ledger.OWNERS_INDEX: [ledger.OWNERS_KEY, ledger.OWNERS_SORT],
    }
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    # refused-upload rows expire through the table's TTL (shared.pipeline.ledger.Refusals)
    assert props["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTR, "Enabled": True}
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["SSESpecification"]["SSEType"] == "KMS"
    assert table["DeletionPolicy"] == "Retain"


# ---------------------------------------------------------------- the search function


def test_search_function_shape_and_environment(template: dict):
    from shared.search.api import SearchApiSettings

    fn = template["Resources"]["SearchFunction"]
    props = fn["Properties"]
    assert props["FunctionUrlConfig"]["AuthType"] == "AWS_IAM"
    assert props["ImageConfig"]["Command"] == ["handlers.aws_lambda.search.handler"]
    assert props["Role"] == {"Fn::GetAtt": ["SearchRole", "Arn"]} and "Policies" not in props
    assert props["LoggingConfig"]["LogGroup"] == {"Ref": "SearchLogGroup"}
    # memory, timeout and concurrency are the stack's parameters, bounded there
    params = template["Parameters"]
    for key, name in (("MemorySize", "SearchMemorySize"), ("Timeout", "SearchTimeoutSeconds")):
        assert props[key] == {"Ref": name} and "MaxValue" in params[name]
    assert props["ReservedConcurrentExecutions"] == {"Ref": "SearchConcurrency"}
    assert int(params["SearchMemorySize"]["Default"]) >= 1024
    assert template["Outputs"]["SearchFunctionUrl"]["Value"] == {
        "Fn::GetAtt": ["SearchFunctionUrl", "FunctionUrl"]
    }
    raw = props["Environment"]["Variables"]
    assert raw["MEDIA_BUCKET"] == {"Ref": "MediaBucket"} and raw["LEDGER_TABLE"] == {"Ref": "LedgerTable"}
    env = {k: f"{v['Ref']}-id" if isinstance(v, dict) else resolve(v, template) for k, v in raw.items()}
    rec = RecordingEnv(env)
    settings = SearchApiSettings.from_env(rec)
    TextSettings.from_env(rec)
    ObservabilitySettings.from_env(rec)
    assert sorted(set(env) - rec.asked - POWERTOOLS_ONLY) == [], "stale variables nobody reads"
    assert settings.index_uri == "s3://MediaBucket-id" and settings.max_body_bytes <= 65_536
    assert ObservabilitySettings.from_env(env).service == "search"


def test_search_role_reads_only_its_prefixes_and_writes_nothing(template: dict):
    """The search tables (list + get under search/), the sources it presigns (get under uploads/), the
    ledger's named attributes of item rows (batch get only: no query, no index); no write of any kind.
    The owner's current version is its search pointer, under search/."""
    from shared.aws.search_directory import ATTRIBUTES

    statements = _statements(template, "SearchRole")
    actions = {a for st in statements for a in as_list(st["Action"])}
    assert actions == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "s3:ListBucket",
        "s3:GetObject",
        "dynamodb:BatchGetItem",
        "kms:Decrypt",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "sqs:SendMessage",  # its failed async invocations, to the functions' dead-letter queue only
    }
    reads = [
        r["Fn::Sub"]
        for st in statements
        if "s3:GetObject" in as_list(st["Action"])
        for r in as_list(st["Resource"])
    ]
    assert sorted(reads) == ["${MediaBucket.Arn}/search/*", "${MediaBucket.Arn}/uploads/*"]
    (listing,) = [st for st in statements if "s3:ListBucket" in as_list(st["Action"])]
    assert listing["Resource"] == {"Fn::GetAtt": ["MediaBucket", "Arn"]}
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["search/*"]}}
    (ledger,) = [st for st in statements if any(a.startswith("dynamodb:") for a in as_list(st["Action"]))]
    assert ledger["Resource"] == {"Fn::GetAtt": ["LedgerTable", "Arn"]}  # no index: no Query anywhere
    assert ledger["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"] == list(ATTRIBUTES)
    assert ledger["Condition"]["StringEqualsIfExists"]["dynamodb:Select"] == "SPECIFIC_ATTRIBUTES"
    others = {
        st["Resource"]["Fn::GetAtt"][0]
        for st in statements
        if st["Action"] in ("sqs:SendMessage", "kms:Decrypt")
    }
    assert others == {"FunctionDeadLetterQueue", "DataKey"}
    logs = [st["Resource"] for st in statements if "logs:PutLogEvents" in as_list(st["Action"])]
    assert logs == [{"Fn::GetAtt": ["SearchLogGroup", "Arn"]}]
