"""Nothing under handlers.aws_lambda imports torch or transformers, even indirectly (DESIGN.md, Dependencies).

Every module of the package is really imported, in a fresh interpreter, with the environment template.yaml
gives the functions (resolved against a moto stack created from it: the orchestrators read their secrets
at import; the search function's own SEARCH_* on top) and MODEL_DIR pointing at the dev models (every
function loads MiniLM at import, as Lambda does at cold start; search also CLIP's text tower, and imports
LanceDB). Marked integration: it starts moto and loads the real ONNX models in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.dev.models import setup_dev_models
from shared.settings import REPO_ROOT
from tests.integration.lambda_text.dev_model import dev_minilm_model_dir

pytestmark = pytest.mark.integration

HEAVY = ("torch", "transformers", "sentence_transformers", "torchvision", "open_clip")

PROBE = """
import importlib, json, pkgutil, sys
import handlers.aws_lambda as pkg
names = [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
for name in names:
    importlib.import_module(name)
top = {m.split(".")[0] for m in sys.modules}
heavy = sorted(top & set(json.loads(sys.argv[1])))
print(json.dumps({"imported": names, "heavy": heavy, "loaded": sorted(top & {"lancedb", "onnxruntime"})}))
"""


def test_lambda_modules_import_without_torch():
    from shared.dev.localstack import REGION, MotoServer
    from shared.dev.stack import create_resources, function_env, load_template

    with MotoServer() as moto:
        res = create_resources(moto, load_template(), "no-torch")
        res.parameters["RunPodEndpointUrl"] = "http://127.0.0.1:9"
        res.urls = {"OnJobDoneFunctionUrl": "http://127.0.0.1:9/on_job_done", "EmbedTextFunctionUrl": "x"}
        local = {
            "AWS_ENDPOINT_URL": moto.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "MODEL_DIR": str(dev_minilm_model_dir()),
        }
        setup_dev_models(Path(local["MODEL_DIR"]), ["clip-vit-b-32-text"])
        search = {
            k: v for k, v in function_env(res, "SearchFunction", local).items() if k.startswith("SEARCH_")
        }
        env = {**os.environ, **function_env(res, "OnUploadFunction", local), **search}
        proc = subprocess.run(
            [sys.executable, "-c", PROBE, json.dumps(HEAVY)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=REPO_ROOT,
        )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    functions = ("embed_text", "on_upload", "on_job_done", "sweeper", "reprocess", "search")
    assert {f"handlers.aws_lambda.{m}" for m in functions} <= set(result["imported"])
    assert "lancedb" in result["loaded"]  # the search function's engine was really imported
    assert result["heavy"] == []
