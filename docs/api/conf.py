"""Sphinx configuration of cppconv's API reference, generated from the docstrings.

Build (warnings are errors, as in CI): ``python -m sphinx -W --keep-going -b html docs/api build/docs``
with cppconv and the ``docs`` extra installed.
"""

import cppconv

project = "cppconv"
author = "the cppconv authors"
copyright = "the cppconv authors"
release = version = cppconv.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
# Google-style sections (Args:, Returns:) as the docstrings write them.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
# Signatures show the annotations; the descriptions stay the docstrings' own words.
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
html_theme = "alabaster"
exclude_patterns = ["_build"]
