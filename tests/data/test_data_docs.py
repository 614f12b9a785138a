"""The data package documents itself: runnable docstring examples, docstrings everywhere."""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

import thermotrain.data as data

MODULES = ["batching", "cifar", "download", "errors", "idx", "mnist", "registry", "regression",
           "specs", "status", "storage", "synthetic"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"thermotrain.data.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


@pytest.mark.parametrize("name", MODULES)
def test_modules_cite_the_science_docs(name):
    module = importlib.import_module(f"thermotrain.data.{name}")
    assert "docs/science.md §" in (module.__doc__ or "")
    assert "SPEC" not in (module.__doc__ or "")  # the science lives in the repository


def test_every_public_callable_has_a_docstring():
    undocumented = [
        name
        for name in data.__all__
        if callable(obj := getattr(data, name))
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and not (obj.__doc__ or "").strip()
    ]
    assert undocumented == []
