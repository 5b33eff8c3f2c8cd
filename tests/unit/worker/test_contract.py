"""Contract tests: the RunPod files (.runpod/), Dockerfile.gpu, the installed torch and the code
cannot drift apart."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path

import pytest

from shared.settings import declared
from shared.worker.requests import parse_job
from shared.worker.settings import WorkerSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
RUNPOD = ROOT / ".runpod"
HUB = json.loads((RUNPOD / "hub.json").read_text())
TESTS = json.loads((RUNPOD / "tests.json").read_text())
TEST_INPUT = json.loads((RUNPOD / "test_input.json").read_text())
DOCKERFILE = (ROOT / "Dockerfile.gpu").read_text()
FIXED_BY_IMAGE = {"MODEL_DIR"}  # set by the Dockerfile, not a deploy-time choice


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE, re.M))


def image_env() -> dict[str, str]:
    """Every KEY=value the Dockerfile's ENV lines set (continuations joined; later lines win)."""
    env: dict[str, str] = {}
    for line in DOCKERFILE.replace("\\\n", " ").splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


class RecordingEnv(Mapping[str, str]):
    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values = values or {}
        self.read: list[str] = []

    def __getitem__(self, key: str) -> str:
        self.read.append(key)
        return self.values[key]

    def get(self, key, default=None):
        self.read.append(key)
        return self.values.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def settings_vars() -> set[str]:
    env = RecordingEnv()
    WorkerSettings.from_env(env, cuda_available=lambda: False)
    return set(env.read)


def hub_env() -> dict[str, dict]:
    return {e["key"]: e["input"] for e in HUB["config"]["env"]}


def test_the_settings_read_a_known_set_of_variables():
    names = settings_vars()
    assert {
        "MODEL_DIR",
        "DEVICE",
        "PRECISION",
        "CLIP_MODEL",
        "ALLOW_PRIVATE_URLS",
        "BATCH_WINDOW_MS",
    } <= names


def test_every_setting_is_declared_and_documented_in_the_dockerfile():
    """The declarations carry each setting's doc (docs/configuration.md is rendered from them)."""
    assert settings_vars() == {d.env for d in declared(WorkerSettings)}
    for name in settings_vars():
        assert re.search(rf"^#\s+{name}\s", DOCKERFILE, re.M), f"{name} missing from Dockerfile.gpu docs"


def test_hub_json_offers_exactly_the_deploy_time_settings():
    assert set(hub_env()) == settings_vars() - FIXED_BY_IMAGE


def test_hub_json_defaults_are_what_the_image_runs_with():
    """Hub defaults = code defaults, except where the image sets a value (DEVICE=cuda): the Hub sets
    every variable, so a default differing from the image's would override it."""
    env = {}
    for key, spec in hub_env().items():
        value = spec["default"]
        if spec["type"] == "boolean":
            env[key] = spec["trueValue"] if value else spec["falseValue"]
        elif isinstance(value, float) and value.is_integer():
            env[key] = str(int(value))
        else:
            env[key] = str(value)
    from_hub = WorkerSettings.from_env(env, cuda_available=lambda: True)
    image = {k: v for k, v in image_env().items() if k in settings_vars() - FIXED_BY_IMAGE}
    assert image == {"DEVICE": "cuda"}
    assert from_hub == WorkerSettings.from_env(image, cuda_available=lambda: True)
    assert env["DEVICE"] == "cuda" and "auto" not in json.dumps(hub_env()["DEVICE"]["options"])


def test_hub_json_has_the_required_metadata():
    assert HUB["type"] == "serverless" and HUB["category"] == "embedding"
    assert HUB["title"] and HUB["description"]
    assert HUB["config"]["runsOn"] == "GPU"


def test_test_input_json_is_an_offline_job_that_parses():
    req = parse_job(TEST_INPUT["input"])
    assert req.task == "clip_text"  # needs no network: it runs at image build time


def test_every_hub_test_parses_and_uses_known_settings():
    assert TESTS["tests"]
    for test in TESTS["tests"]:
        req = parse_job(test["input"])
        assert req.task in ("clip_text", "clip_image"), "hub tests must not depend on reachable URLs"
        assert test["timeout"] > 0
    known = settings_vars() | {"WORKER_LOG_LEVEL"}
    for item in TESTS["config"].get("env", []):
        assert item["key"] in known


def test_the_image_bakes_what_the_default_settings_load():
    """The defaults' models, plus Qwen3-VL so its opt-in tasks and channel need no rebuild."""
    match = re.search(r"^ARG BAKE_MODELS=(\S+)$", DOCKERFILE, re.M)
    assert match
    opt_in = WorkerSettings.from_env(
        {"WORKER_TASKS": "embed_video,qwen3vl_text", "WORKER_CHANNELS": "video_qwen3vl"},
        cuda_available=lambda: True,
    )
    assert opt_in.required_models() == ("whisper-tiny.en", "qwen3-vl-embedding-2b")
    assert set(match.group(1).split(",")) == set(
        WorkerSettings.from_env({}, cuda_available=lambda: True).required_models()
    ) | set(opt_in.required_models())
    assert "WORKER_TASKS=qwen3vl_text,embed_video python -m handlers.runpod_worker" in DOCKERFILE


def test_the_hub_token_never_lands_in_a_layer():
    assert "--mount=type=secret,id=hf_token" in DOCKERFILE
    for line in DOCKERFILE.splitlines():
        if line.startswith(("ARG", "ENV")):
            assert "TOKEN" not in line.upper(), line
    assert re.search(r"^ENV .*MODEL_DIR=/models.*HF_HUB_OFFLINE=1", DOCKERFILE, re.M)
    assert 'CMD ["python", "-u", "-m", "handlers.runpod_worker"]' in DOCKERFILE
    assert (ROOT / "handlers/runpod_worker/__main__.py").is_file()
    assert "COPY .runpod/test_input.json" in DOCKERFILE
    assert not (ROOT / "infra/runpod").exists()  # one copy of the RunPod files, in .runpod/


def _cuda(version: str) -> tuple[int, int]:
    major, minor = re.match(r"^(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


def test_torch_build_cuda_base_and_allowed_hosts_agree():
    """The installed torch/torchvision are the wheels the image installs (pyproject pin + TORCH_CUDA
    tag), their CUDA runtime is the base image's major.minor, and RunPod may only schedule the worker
    on hosts whose driver reports that CUDA or a later one of the same major."""
    args = dockerfile_args()
    tag = args["TORCH_CUDA"]  # e.g. cu130
    built_for = (int(tag[2:-1]), int(tag[-1]))
    bases = re.findall(r"^FROM nvidia/cuda:(\d+\.\d+)\.\d+-\S+ AS base$", DOCKERFILE, re.M)
    assert len(bases) == 1, "the base stage must be FROM nvidia/cuda:<x.y.z>-... AS base"
    assert _cuda(bases[0]) == built_for, "the CUDA base image and TORCH_CUDA disagree"

    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    for dist in ("torch", "torchvision"):
        (pin,) = [p.split("==", 1)[1] for p in pins if p.startswith(f"{dist}==")]
        assert metadata.version(dist).split("+")[0] == pin, f"installed {dist} is not pyproject's pin"
        version_py = metadata.distribution(dist).locate_file(f"{dist}/version.py").read_text()
        assert f"__version__ = '{pin}+{tag}'" in version_py, f"installed {dist} is not a {tag} build"
    torch_version = metadata.distribution("torch").locate_file("torch/version.py").read_text()
    torch_cuda = re.search(r"^cuda: .*= '(\d+\.\d+)'", torch_version, re.M)
    assert torch_cuda and _cuda(torch_cuda.group(1)) == built_for
    cuda_reqs = [
        r for r in metadata.requires("torch") or () if re.match(r"^(nvidia-\S+-cu\d+|cuda-toolkit)", r)
    ]
    assert cuda_reqs, "torch names no CUDA wheels"
    for req in cuda_reqs:
        if req.startswith("cuda-toolkit"):
            assert _cuda(re.search(r"==(\d+\.\d+)", req).group(1)) == built_for, req
        else:
            assert re.match(rf"^nvidia-[\w-]+-cu{built_for[0]}\b", req), req

    for where, cfg in (("hub.json", HUB["config"]), ("tests.json", TESTS["config"])):
        allowed = [_cuda(v) for v in cfg["allowedCudaVersions"]]
        assert allowed, where
        assert all(v >= built_for and v[0] == built_for[0] for v in allowed), (where, allowed, built_for)


def test_the_image_requires_its_gpu_and_runs_unprivileged():
    assert image_env()["DEVICE"] == "cuda"
    assert re.search(
        r"^RUN DEVICE=cpu python -m handlers.runpod_worker$", DOCKERFILE, re.M
    )  # build-time only
    assert re.search(r"^USER (?!root)\w+", DOCKERFILE, re.M)
    assert re.search(r"^HEALTHCHECK .*" + re.escape(image_env()["WORKER_READY_FILE"]), DOCKERFILE, re.M)


def test_the_hub_finds_its_files_in_dot_runpod():
    """What the Hub publishing guide reads from .runpod/ (hub.json, tests.json, and beside them a
    Dockerfile, handler.py and README.md, in .runpod/ or the root)."""
    for name in ("hub.json", "tests.json", "README.md", "Dockerfile", "handler.py"):
        assert (RUNPOD / name).is_file(), name
    assert HUB["type"] == "serverless" and HUB["category"] in (
        "audio",
        "embedding",
        "language",
        "video",
        "image",
    )
    for test in TESTS["tests"]:
        assert set(test) == {"name", "input", "timeout"}


def test_the_hub_builds_the_image_of_dockerfile_gpu_and_nothing_else():
    """The Hub builds .runpod/Dockerfile (its guide: a Dockerfile in .runpod/ or the root, context =
    the repository root). It must only name the image Dockerfile.gpu builds, at pyproject's version:
    one recipe, so the Hub's image has Dockerfile.gpu's CUDA base, which the test above holds to
    allowedCudaVersions in hub.json and tests.json."""
    hub_dockerfile = (RUNPOD / "Dockerfile").read_text()
    lines = [line for line in hub_dockerfile.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == 2 and lines[1] == "FROM ${GPU_IMAGE}", lines
    arg = re.fullmatch(r"ARG GPU_IMAGE=(\S+):([\w.-]+)", lines[0])
    assert arg, lines[0]
    name, tag = arg.groups()
    assert tag == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    built = re.search(r"^#\s+docker build -f Dockerfile.gpu .* -t (\S+) \.$", DOCKERFILE, re.M)
    assert built and name.rsplit("/", 1)[-1] == built.group(1)
    recipes = sorted(
        str(p.relative_to(ROOT))
        for p in ROOT.rglob("*")
        if p.is_file() and p.name.startswith("Dockerfile") and not {".git", ".venv"} & set(p.parts)
    )
    assert recipes == [".runpod/Dockerfile", "Dockerfile.cpu", "Dockerfile.gpu"], recipes
    assert sum("FROM nvidia/cuda" in (ROOT / r).read_text() for r in recipes) == 1


def test_the_hub_handler_only_starts_the_worker_the_image_runs():
    import subprocess
    import sys

    assert re.search(r'^CMD \["python", "-u", "-m", "handlers.runpod_worker"\]$', DOCKERFILE, re.M)
    handler = (RUNPOD / "handler.py").read_text()
    assert 'run_module("handlers.runpod_worker"' in handler and len(handler.splitlines()) <= 12
    done = subprocess.run(  # a bad setting: the worker's own startup refuses it, so this is its main
        [sys.executable, str(RUNPOD / "handler.py")],
        env={"PATH": "/usr/bin:/bin", "WORKER_TASKS": "nope", "MODEL_DIR": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert done.returncode == 1 and "WORKER_TASKS" in done.stderr, done.stderr[-500:]
