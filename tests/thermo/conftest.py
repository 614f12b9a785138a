"""Fixtures for the thermodynamics tests: the authors' ft-regression data (SPEC §5)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="session")
def ft():
    """The authors' data and minimum (skips when ../shared/data/ft-regression is absent)."""
    from thermotrain.thermo import load_ft_regression

    if not (SHARED_DATA / "ft-regression").is_dir():
        pytest.skip(f"ft-regression data not found in {SHARED_DATA}")
    return load_ft_regression(SHARED_DATA)


@pytest.fixture
def one_thread():
    """Small-tensor loops run faster on one torch thread (and do not fight other processes
    for the 2 cores); restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
