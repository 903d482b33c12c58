"""Every public function and class has a docstring with an example, and the examples run."""

from __future__ import annotations

import doctest
import inspect

import pytest

import cppconv
from cppconv import _conv

PUBLIC = [name for name in cppconv.__all__ if not name.startswith("_")]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_has_an_example(name):
    obj = getattr(cppconv, name)
    doc = inspect.getdoc(obj) or ""
    assert ">>>" in doc, f"cppconv.{name} has no example in its docstring"


@pytest.mark.parametrize("module", [cppconv, _conv], ids=lambda m: m.__name__)
def test_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0
