"""Dockerfile.cpu, parsed (no Docker engine here): the Lambda stage never installs torch and agrees with
template.yaml, the registry and pyproject's `cpu` extra."""

from __future__ import annotations

import importlib.util
import re
import shlex
import tomllib
from dataclasses import dataclass, field

import pytest
from cfnlint.decode import decode

from shared.models.registry import REGISTRY
from shared.settings import REPO_ROOT

pytestmark = pytest.mark.integration

DOCKERFILE = REPO_ROOT / "Dockerfile.cpu"
HEAVY = (
    "torch",
    "torchvision",
    "transformers",
    "sentence-transformers",
    "sentence_transformers",
    "open_clip",
)
FORBIDDEN_EXTRAS = {"gpu", "export", "dev"}
LAMBDA_MODELS = ("minilm-l6-v2", "clip-vit-b-32-text")  # MiniLM for text, CLIP's text tower for search


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) from a Dockerfile: comments dropped, continuations joined."""
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif op == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            stages[-1].instructions.append((op, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())[1]


def pip_installs(stage: Stage) -> list[list[str]]:
    """The argument lists of every `pip install` in the stage's RUN lines."""
    out = []
    for run in stage.args("RUN"):
        lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        cmd: list[str] = []
        for word in [*lexer, ";"]:
            if word in {"&&", ";", "||", "|"}:
                if cmd[:2] == ["pip", "install"] or cmd[1:3] == ["-m", "pip"]:
                    out.append(cmd[cmd.index("install") + 1 :])
                cmd = []
            else:
                cmd.append(word)
    return out


def env_of(stage: Stage) -> dict[str, str]:
    env = {}
    for arg in stage.args("ENV"):
        for item in shlex.split(arg):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def test_two_stages_model_then_lambda_runtime(stages: list[Stage]):
    assert len(stages) >= 2
    assert stages[-1].base.startswith("public.ecr.aws/lambda/python:")
    assert stages[0].name == "model"


def test_final_stage_installs_only_the_cpu_extra(stages: list[Stage]):
    installs = pip_installs(stages[-1])
    assert installs, "the runtime stage must pip install the project"
    for words in installs:
        for w in words:
            extras = set(re.findall(r"\[([^\]]*)\]", w))
            for group in extras:
                assert set(group.split(",")).isdisjoint(FORBIDDEN_EXTRAS), w
                assert group.split(",") == ["cpu"], w
            assert not any(h in w.lower() for h in HEAVY), w
    assert any(w.endswith("[cpu]") or w.endswith('[cpu]"') for words in installs for w in words)


def test_cpu_extra_has_no_torch():
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for req in extras["cpu"]:
        name = re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()
        assert name not in HEAVY, req
    assert any(r.startswith("onnxruntime") for r in extras["cpu"])


def test_final_stage_sets_model_dir_and_copies_the_baked_model(stages: list[Stage]):
    final = stages[-1]
    env = env_of(final)
    assert env["MODEL_DIR"] == "/opt/models"
    copies = [c for c in final.args("COPY") if c.startswith("--from=")]
    assert copies == [
        f"--from={stages[0].name} /build/models/{name} {env['MODEL_DIR']}/{name}" for name in LAMBDA_MODELS
    ]
    assert all(REGISTRY[name].runs_on == "lambda" for name in LAMBDA_MODELS)


def test_cmd_matches_template_and_model_dir_matches_function_env(stages: list[Stage]):
    tpl, _ = decode(str(REPO_ROOT / "template.yaml"))
    props = tpl["Resources"]["EmbedTextFunction"]["Properties"]
    (cmd,) = stages[-1].args("CMD")
    assert cmd == '["' + props["ImageConfig"]["Command"][0] + '"]'
    assert props["Environment"]["Variables"]["MODEL_DIR"] == env_of(stages[-1])["MODEL_DIR"]


def test_model_stage_bakes_from_the_registry_with_real_modules(stages: list[Stage]):
    model = stages[0]
    runs = " ".join(model.args("RUN"))
    assert (
        f"python -m shared.models.bake --models {','.join(LAMBDA_MODELS)} --model-dir /build/models" in runs
    )
    (rm,) = [r for r in model.args("RUN") if r.startswith("rm ")]
    for name in LAMBDA_MODELS:  # the torch checkpoints stay in the build stage
        (weights,) = [f for f in REGISTRY[name].files if f.endswith(".safetensors")]
        assert f"/build/models/{name}/{weights}" in rm.split()
    for installs in pip_installs(model):
        assert not any("[gpu]" in w for w in installs)
    for module in re.findall(r"python -m ([\w.]+)", runs):
        assert importlib.util.find_spec(module) is not None, module
    assert not any("TOKEN" in a.upper() for a in model.args("ARG"))


def test_build_smoke_test_imports_the_handler_without_torch(stages: list[Stage]):
    runs = " ".join(stages[-1].args("RUN"))
    assert "import sys, handlers.aws_lambda.embed_text" in runs
    assert "ClipTextOnnx.load(Path('/opt/models'))" in runs and "import shared.search.api" in runs
    assert runs.count("'torch' in sys.modules") == 2
