"""What the installed distribution says about itself: version, licence, metadata; the sdist."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
from importlib import metadata

import pytest

import cppconv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_version_is_the_distributions():
    assert cppconv.__version__ == metadata.version("cppconv")
    major = cppconv.__version__.split(".")[0]
    assert major.isdigit()


def test_license_ships_with_the_distribution():
    meta = metadata.metadata("cppconv")
    assert meta["License-Expression"] == "MIT"
    licences = [f for f in metadata.files("cppconv") or [] if f.name == "LICENSE"]
    assert licences, "no LICENSE among the installed files"
    assert "MIT License" in licences[0].read_text()
    assert "the cppconv authors" in licences[0].read_text()


def test_metadata_for_the_index():
    meta = metadata.metadata("cppconv")
    classifiers = meta.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.13" in classifiers
    assert "Operating System :: Microsoft :: Windows" in classifiers
    assert meta["Keywords"] and "convolution" in meta["Keywords"]
    assert any(url.startswith("Changelog, ") for url in meta.get_all("Project-URL") or [])


def test_sdist_has_license_changelog_and_version(tmp_path):
    """The sdist (no compiling: a couple of seconds) from this checkout."""
    if not os.path.exists(os.path.join(REPO, "pyproject.toml")) or not os.path.exists(os.path.join(REPO, ".git")):
        pytest.skip("not a git checkout")
    for module in ("scikit_build_core", "setuptools_scm"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (the build runs isolated)")
    code = "import sys; from scikit_build_core.build import build_sdist; print(build_sdist(sys.argv[1]))"
    name = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / name) as sdist:
        root = sdist.getnames()[0].split("/")[0]
        names = set(sdist.getnames())
        for needed in ("LICENSE", "CHANGELOG.md", "PKG-INFO", "python/cppconv/_version.py", "CMakeLists.txt"):
            assert f"{root}/{needed}" in names, needed
        pkg_info = sdist.extractfile(f"{root}/PKG-INFO").read().decode()  # type: ignore[union-attr]
    assert "License-Expression: MIT" in pkg_info
    assert f"Version: {root.split('-', 1)[1]}" in pkg_info
