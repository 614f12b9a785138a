"""The samplers' docstring examples run."""

import doctest

import pytest

import thermotrain.samplers.optimizer as optimizer_mod
import thermotrain.samplers.presets as presets_mod


@pytest.mark.parametrize("module", [optimizer_mod, presets_mod])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
