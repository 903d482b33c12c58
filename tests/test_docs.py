"""Every public function and class has a docstring with an example, and the examples run."""

from __future__ import annotations

import doctest
import glob
import inspect
import os
import re

import pytest

import cppconv
from cppconv import _conv

PUBLIC = [name for name in cppconv.__all__ if not name.startswith("_")]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_has_an_example(name):
    obj = getattr(cppconv, name)
    doc = inspect.getdoc(obj) or ""
    assert ">>>" in doc, f"cppconv.{name} has no example in its docstring"


def _api_reference_names():
    """The names the API reference (docs/api/*.rst) documents, by their Sphinx directives."""
    names = set()
    for path in glob.glob(os.path.join(API_DOCS, "*.rst")):
        with open(path) as f:
            names.update(re.findall(r"^\.\. (?:autofunction|autoclass|data):: (\w+)", f.read(), re.MULTILINE))
    return names


API_DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "api")


@pytest.mark.skipif(not os.path.isdir(API_DOCS), reason="not a source checkout")
def test_every_public_name_is_in_the_api_reference():
    missing = sorted(set(cppconv.__all__) - _api_reference_names())
    assert not missing, f"not in docs/api: {missing}"


@pytest.mark.parametrize("module", [cppconv, _conv], ids=lambda m: m.__name__)
def test_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0
