"""Fixtures of the experiment tests."""

from __future__ import annotations

import pytest
from _experiments_helpers import tiny_raw

from thermotrain.experiments import parse_study


@pytest.fixture
def tiny_study():
    """Factory: ``tiny_study(training={...}, methods=[...])`` → a validated study."""

    def make(**tables):
        return parse_study(tiny_raw(**tables), "tiny.toml")

    return make
