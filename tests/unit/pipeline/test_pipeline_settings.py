"""PipelineSettings: required variables, derived and cross-checked values, bounds, error messages."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.pipeline.settings import PipelineSettings

ENV = {"MEDIA_BUCKET": "b", "LEDGER_TABLE": "t"}


def test_read_streams_default_and_bounds():
    assert PipelineSettings.from_env(ENV).reprocess_read_streams == 2
    assert PipelineSettings.from_env({**ENV, "REPROCESS_READ_STREAMS": "8"}).reprocess_read_streams == 8
    for bad in ("0", "9", "-1", "two", "1.5"):
        with pytest.raises(ConfigError, match="REPROCESS_READ_STREAMS"):
            PipelineSettings.from_env({**ENV, "REPROCESS_READ_STREAMS": bad})


def test_bucket_and_table_are_required_with_an_example():
    with pytest.raises(
        ConfigError, match="MEDIA_BUCKET and LEDGER_TABLE are required; example: MEDIA_BUCKET="
    ):
        PipelineSettings.from_env({})
    with pytest.raises(ConfigError, match=r"^LEDGER_TABLE is required; example: LEDGER_TABLE="):
        PipelineSettings.from_env({"MEDIA_BUCKET": "b", "LEDGER_TABLE": ""})


def test_poll_after_follows_the_execution_timeout_unless_set():
    assert PipelineSettings.from_env(ENV).poll_after_s == 960.0 == PipelineSettings("b", "t").poll_after_s
    assert PipelineSettings.from_env({**ENV, "EXECUTION_TIMEOUT_S": "100"}).poll_after_s == 160.0
    assert (
        PipelineSettings.from_env({**ENV, "EXECUTION_TIMEOUT_S": "100", "POLL_AFTER_S": "5"}).poll_after_s
        == 5
    )


def test_the_job_ttl_covers_the_execution_timeout():
    with pytest.raises(
        ConfigError, match=r"JOB_TTL_S=600 must be >= EXECUTION_TIMEOUT_S=900; example: JOB_TTL_S=3600"
    ):
        PipelineSettings.from_env({**ENV, "JOB_TTL_S": "600"})
    with pytest.raises(ConfigError, match=r"example: JOB_TTL_S=8000$"):
        PipelineSettings.from_env({**ENV, "EXECUTION_TIMEOUT_S": "2000", "JOB_TTL_S": "1000"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CALLBACK_URL", "ftp://x"),
        ("PIPELINE_CHANNELS", "video_clip,nope"),
        ("MAX_ATTEMPTS", "0"),
        ("RUNPOD_RUN_PER_S", "-1"),
    ],
)
def test_a_malformed_value_names_the_variable_and_an_example(name, value):
    with pytest.raises(ConfigError, match=rf"^{name}='{value}' is not valid; example: {name}=\S+$"):
        PipelineSettings.from_env({**ENV, name: value})
