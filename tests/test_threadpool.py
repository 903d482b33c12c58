"""threadpoolctl sees and limits cppconv's thread pool (skipped without threadpoolctl)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import cppconv

threadpoolctl = pytest.importorskip("threadpoolctl")
if not hasattr(threadpoolctl, "register"):
    pytest.skip("threadpoolctl < 3.5 has no controller registration", allow_module_level=True)


def _cppconv_pools():
    return [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "cppconv"]


def test_threadpool_info_lists_cppconv():
    pools = _cppconv_pools()
    assert len(pools) == 1, pools
    assert pools[0]["num_threads"] == cppconv.get_num_threads()
    assert pools[0]["version"] == cppconv.__version__
    assert "_native" in pools[0]["filepath"]


def test_threadpool_limits_limits_and_restores():
    before = cppconv.get_num_threads()
    with threadpoolctl.threadpool_limits(limits=1, user_api="cppconv"):
        assert cppconv.get_num_threads() == 1
        assert _cppconv_pools()[0]["num_threads"] == 1
    assert cppconv.get_num_threads() == before
    with threadpoolctl.threadpool_limits(limits=1):  # every pool, cppconv's included
        assert cppconv.get_num_threads() == 1
    assert cppconv.get_num_threads() == before


def test_threadpoolctl_imported_after_cppconv():
    # The registration waits for threadpoolctl's import; a fresh interpreter checks that order.
    code = (
        "import sys, cppconv\n"
        "assert 'threadpoolctl' not in sys.modules\n"
        "import threadpoolctl\n"
        "pools = [p for p in threadpoolctl.threadpool_info() if p['user_api'] == 'cppconv']\n"
        "assert len(pools) == 1, pools\n"
        "with threadpoolctl.threadpool_limits(1, user_api='cppconv'):\n"
        "    assert cppconv.get_num_threads() == 1\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
