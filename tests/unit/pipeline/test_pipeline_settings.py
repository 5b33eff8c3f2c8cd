"""PipelineSettings: the reprocess read streams are bounded."""

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
