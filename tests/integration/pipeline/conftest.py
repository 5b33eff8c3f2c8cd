"""One moto server and one translated template per test run; a fresh stack (bucket, queues, table,
secrets, created from template.yaml) per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.dev.localstack import MotoServer
from shared.dev.stack import load_template, translate
from shared.models.minilm_onnx import MiniLMOnnx
from shared.settings import TextSettings
from tests.integration.lambda_text.dev_model import dev_minilm_model_dir
from tests.integration.pipeline.harness import Harness


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def template_pair() -> tuple[dict, dict]:
    tpl = load_template()
    return tpl, translate(tpl)


@pytest.fixture(scope="session")
def text_model() -> MiniLMOnnx:
    model_dir: Path = dev_minilm_model_dir()
    return MiniLMOnnx.load(TextSettings(model_dir=model_dir, threads=1, precision="fp32"))


@pytest.fixture
def make_harness(moto_server, template_pair, text_model) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**kw: Any) -> Harness:
        h = Harness(moto_server, template_pair[0], template_pair[1], text_model, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


@pytest.fixture
def h(make_harness) -> Harness:
    return make_harness()
