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


@pytest.fixture
def follows_openmp(restore_threads):
    """cppconv's default thread count (no set_num_threads), put back afterwards."""
    if not cppconv.info()["openmp"]:
        pytest.skip("a build without OpenMP has no OpenMP setting to follow")
    cppconv._native.reset_num_threads()
    if not [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "openmp"]:
        pytest.skip("threadpoolctl finds no OpenMP runtime in this process")


def test_openmp_limits_limit_cppconv(follows_openmp):
    before = cppconv.get_num_threads()
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert cppconv.get_num_threads() == 1
        assert cppconv.explain((8, 64, 56, 56), (64, 64, 3, 3), padding=1)["threads"] == 1
        assert _cppconv_pools()[0]["num_threads"] == 1
    assert cppconv.get_num_threads() == before


def test_set_num_threads_wins_over_openmp_limits(follows_openmp):
    cppconv.set_num_threads(3)
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert cppconv.get_num_threads() == 3
    cppconv._native.reset_num_threads()
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert cppconv.get_num_threads() == 1


def test_limits_on_every_pool_leave_cppconv_following_openmp(follows_openmp):
    # Leaving threadpool_limits(1) restores cppconv's default, not a count pinned at the
    # value it had then: the openmp API still limits cppconv afterwards.
    before = cppconv.get_num_threads()
    with threadpoolctl.threadpool_limits(limits=1):
        assert cppconv.get_num_threads() == 1
    assert cppconv.get_num_threads() == before and not cppconv._native.num_threads_is_set()
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert cppconv.get_num_threads() == 1
    # A count set with set_num_threads is restored as set.
    cppconv.set_num_threads(3)
    with threadpoolctl.threadpool_limits(limits=1):
        assert cppconv.get_num_threads() == 1
    assert cppconv.get_num_threads() == 3 and cppconv._native.num_threads_is_set()
