import sys

import pytest

from thermotrain.perf import tune_malloc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tune_malloc_applies_on_glibc():
    assert tune_malloc() is True
    assert tune_malloc() is True  # idempotent
