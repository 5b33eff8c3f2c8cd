"""shared.logs: one logging configuration per kind of process (Lambda, the RunPod worker, the CLI)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from shared import logs


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Each test configures the process's loggers as a real process would; put them back after."""
    names = ("", *logs.PROJECT)
    loggers = {n: logging.getLogger(n) for n in names}
    saved = {n: (list(lg.handlers), lg.level, lg.propagate) for n, lg in loggers.items()}
    yield
    for n, (handlers, level, propagate) in saved.items():
        lg = logging.getLogger(n)
        lg.handlers, lg.propagate = handlers, propagate
        lg.setLevel(level)


@dataclass
class Context:
    function_name: str = "on-upload"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:on-upload"
    aws_request_id: str = "req-1"


def test_in_lambda_the_pipelines_loggers_write_powertools_json_with_the_invocations_keys() -> None:
    stream = io.StringIO()
    logger = logs.lambda_logger("svc-adopt", "INFO", stream)

    @logger.inject_lambda_context
    def handler(event: dict, context: object) -> None:
        logging.getLogger("shared.pipeline.ingest").info("ingested %s", "clip")
        logging.getLogger("shared.aws.ledger").debug("not at INFO")

    handler({}, Context())
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1, lines
    line = lines[0]
    assert line["message"] == "ingested clip" and line["level"] == "INFO" and line["service"] == "svc-adopt"
    assert line["function_request_id"] == "req-1" and line["name"] == "shared.pipeline.ingest"


def test_a_host_of_several_functions_keeps_its_own_logging() -> None:
    shared = logging.getLogger("shared")
    before = (list(shared.handlers), shared.propagate)
    logs.lambda_logger("svc-host", "INFO", io.StringIO(), adopt=False)
    assert (list(shared.handlers), shared.propagate) == before


def test_worker_on_runpod_writes_json_lines_with_the_job_id() -> None:
    stream = io.StringIO()
    logs.worker("INFO", structured=True, stream=stream)
    token = logs.job_id.set("job-42")
    try:
        logging.getLogger("shared.worker.worker").info("job %s done", "job-42")
    finally:
        logs.job_id.reset(token)
    logging.getLogger("shared.worker.batching").warning("no job")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (
        first["requestId"] == "job-42" and first["message"] == "job job-42 done" and first["level"] == "INFO"
    )
    assert first["logger"] == "shared.worker.worker" and second["requestId"] is None


def test_worker_elsewhere_writes_text() -> None:
    stream = io.StringIO()
    logs.worker("INFO", structured=False, stream=stream)
    logging.getLogger("shared.worker.worker").info("ready")
    assert stream.getvalue().rstrip().endswith("INFO shared.worker.worker: ready")
