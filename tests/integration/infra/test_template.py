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
    assert settings.max_tokens == 256 and settings.truncate is True and settings.quantized is False
    obs = ObservabilitySettings.from_env(env)
    assert (obs.service, obs.namespace) == ("embed-text", "ServerlessEmbeddings")


def test_text_function_shape(template: dict):
    fn = template["Resources"]["EmbedTextFunction"]
    props = fn["Properties"]
    assert props["PackageType"] == "Image"
    assert props["Architectures"] == ["x86_64"]
    assert props["FunctionUrlConfig"]["AuthType"] == "AWS_IAM"
    assert props["LoggingConfig"]["LogGroup"] == {"Ref": "EmbedTextLogGroup"}
    assert fn["Metadata"] == {
        "DockerTag": "python3.11-v1",
        "DockerContext": ".",
        "Dockerfile": "Dockerfile.cpu",
    }
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
    role = template["Resources"]["EmbedTextRole"]["Properties"]
    assert "ManagedPolicyArns" not in role
    (policy,) = role["Policies"]
    (st,) = policy["PolicyDocument"]["Statement"]
    assert st["Effect"] == "Allow"
    assert sorted(as_list(st["Action"])) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert st["Resource"] == {"Fn::GetAtt": ["EmbedTextLogGroup", "Arn"]}
    trust = role["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "lambda.amazonaws.com"}]
    fn = template["Resources"]["EmbedTextFunction"]["Properties"]
    assert fn["Role"] == {"Fn::GetAtt": ["EmbedTextRole", "Arn"]}
    assert "Policies" not in fn


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
    (table,) = resources(template, "AWS::DynamoDB::Table").values()
    props = table["Properties"]
    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    types = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert types == {"pk": "S", "sk": "S", "status": "S", "updated_at": "S"}
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    (gsi,) = props["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "status-index"
    assert [k["AttributeName"] for k in gsi["KeySchema"]] == ["status", "updated_at"]
    assert table["DeletionPolicy"] == "Retain"
