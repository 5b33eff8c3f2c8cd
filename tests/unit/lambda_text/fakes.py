"""Test doubles for the text-handler tests: a fake text model, a handler with captured logs."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aws_lambda_powertools import Logger, Metrics

from shared.dev.fakes import FakeBackend
from shared.errors import ModelUnhealthy
from shared.lambda_text import build_handler
from shared.settings import TextSettings


class FakeTextModel:
    """FakeBackend plus the text-model surface; a "token" is a whitespace-separated word, + [CLS]/[SEP]."""

    name = "fake-minilm"
    dims = 384
    max_tokens = 256
    model_label = "fake-minilm@test"
    precision = "fp32"

    def __init__(self, self_check: Any = None) -> None:
        self._backend = FakeBackend(self.dims, self.name)
        self.embed_calls: list[list[str]] = []
        self.self_check = self_check
        self.healthy = True

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) + 2 for t in texts]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.embed_calls.append(list(texts))
        return self._backend.embed(list(texts))

    def warmup(self) -> None:
        self._backend.warmup()

    def health(self) -> None:
        if not self.healthy:
            raise ModelUnhealthy("fake-minilm: probe vector cosine 0.1200 to its reference < 0.99")


@dataclass
class LambdaContext:
    function_name: str = "embed-text-test"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:embed-text-test"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class Harness:
    """A handler over a FakeTextModel, with its structured log lines captured."""

    model: FakeTextModel
    settings: TextSettings
    handler: Any
    log_stream: io.StringIO

    def __call__(self, event: Any) -> dict:
        return self.handler(event, LambdaContext())

    def logs(self) -> list[dict]:
        return [json.loads(line) for line in self.log_stream.getvalue().splitlines() if line.strip()]


def make_harness(*, model: FakeTextModel | None = None, **settings: Any) -> Harness:
    model = model or FakeTextModel()
    text_settings = TextSettings(model_dir=Path("/nonexistent"), **settings)
    stream = io.StringIO()
    service = f"embed-text-test-{uuid.uuid4().hex[:8]}"  # a fresh Powertools logger, bound to this stream
    logger = Logger(service=service, stream=stream)
    metrics = Metrics(namespace="ServerlessEmbeddingsTest", service=service)
    handler = build_handler(model, text_settings, logger=logger, metrics=metrics)
    return Harness(model, text_settings, handler, stream)


def emf_blobs(stdout: str) -> list[dict]:
    """The CloudWatch EMF documents printed to stdout by Powertools Metrics."""
    out = []
    for line in stdout.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            out.append(json.loads(line))
    return out
