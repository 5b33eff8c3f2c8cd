"""Fixtures for the text-handler unit tests."""

from __future__ import annotations

import pytest

from tests.unit.lambda_text.fakes import Harness, make_harness


@pytest.fixture
def harness() -> Harness:
    """A handler over a FakeTextModel with default settings and its own captured log stream."""
    return make_harness()
