"""Typing: mypy --strict accepts tests/typing_check.py; the native stub is what tools/gen_stub.py makes."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

import cppconv

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
PACKAGE = os.path.dirname(os.path.abspath(cppconv.__file__))


def test_typing_check_runs():
    sys.path.insert(0, TESTS)
    try:
        import typing_check
    finally:
        sys.path.remove(TESTS)
    typing_check.main()


def test_package_ships_type_information():
    assert os.path.exists(os.path.join(PACKAGE, "py.typed"))
    assert os.path.exists(os.path.join(PACKAGE, "_native.pyi"))


# The package's public modules and the command line's, checked with everything they import.
PUBLIC_MODULES = ["cppconv", "cppconv.dask", "cppconv.onnx", "cppconv.bench", "cppconv._cli", "cppconv._demo",
                  "cppconv._netrun", "cppconv._tunecmd"]


def test_mypy_strict_on_public_api_use_and_public_modules(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it is in the test extra)")
    config = os.path.join(REPO, "pyproject.toml")
    if not os.path.exists(config):
        pytest.skip("not a source checkout (the mypy settings are in pyproject.toml)")
    # Run from an empty folder so that mypy sees the installed package, stub and py.typed.
    modules = [arg for name in ["typing_check", *PUBLIC_MODULES] for arg in ("-m", name)]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", os.devnull,
         "--config-file", config, *modules],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "MYPYPATH": TESTS},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_native_stub_is_generated():
    stub_path = os.path.join(REPO, "python", "cppconv", "_native.pyi")
    tool_path = os.path.join(REPO, "tools", "gen_stub.py")
    if not (os.path.exists(stub_path) and os.path.exists(tool_path)):
        pytest.skip("not a source checkout")
    spec = importlib.util.spec_from_file_location("gen_stub", tool_path)
    gen_stub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_stub)
    installed = gen_stub.stubgen_version()
    if installed is None:
        pytest.skip("pybind11-stubgen is not installed (it is in the test extra)")
    with open(stub_path) as f:
        checked_in = f.read()
    made_by = gen_stub.header_version(checked_in)
    if made_by != installed:
        pytest.skip(f"the checked-in stub was made by pybind11-stubgen {made_by}, this is {installed}")
    assert gen_stub.generate() == checked_in, "python/cppconv/_native.pyi is out of date: run tools/gen_stub.py"
    # The installed package ships the same stub.
    with open(os.path.join(PACKAGE, "_native.pyi")) as f:
        assert f.read() == checked_in
