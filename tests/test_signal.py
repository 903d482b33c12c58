"""correlate2d and convolve2d against scipy.signal (same shapes, values within float tolerance)."""

from __future__ import annotations

import numpy as np
import pytest

import cppconv

from conftest import make_rng

ss = pytest.importorskip("scipy.signal")

SHAPES = [((7, 9), (3, 3)), ((8, 8), (2, 4)), ((5, 6), (4, 1)), ((6, 5), (1, 1)), ((9, 4), (5, 2)), ((33, 17), (7, 6))]


@pytest.mark.parametrize("image_shape,kernel_shape", SHAPES)
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("boundary,fillvalue", [("fill", 0), ("fill", 1.5), ("wrap", 0), ("symm", 0)])
@pytest.mark.parametrize("name", ["correlate2d", "convolve2d"])
def test_matches_scipy(isa, image_shape, kernel_shape, mode, boundary, fillvalue, name):
    rng = make_rng("signal", image_shape, kernel_shape, mode, boundary, fillvalue, name)
    x, k = rng.random(image_shape), rng.standard_normal(kernel_shape)
    if boundary == "wrap" and mode == "full" and any(s - 1 > i for s, i in zip(kernel_shape, image_shape)):
        pytest.skip("wrap padding beyond the image")
    ours = getattr(cppconv, name)(x, k, mode, boundary, fillvalue)
    ref = getattr(ss, name)(x, k, mode, boundary, fillvalue)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    ours32 = getattr(cppconv, name)(x.astype(np.float32), k.astype(np.float32), mode, boundary, fillvalue)
    assert ours32.dtype == np.float32
    np.testing.assert_allclose(ours32, ref, rtol=1e-5, atol=1e-5 * np.abs(k).sum() * (1 + abs(fillvalue)))


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_channels_each_get_the_kernel(mode):
    rng = make_rng("signal_channels", mode)
    x, k = rng.random((12, 10, 3)), rng.standard_normal((3, 4))
    y = cppconv.convolve2d(x, k, mode, "symm")
    for c in range(3):
        np.testing.assert_allclose(y[..., c], ss.convolve2d(x[..., c], k, mode, "symm"), rtol=1e-12, atol=1e-12)


def test_symm_is_ndimage_reflect():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = make_rng("ndimage")
    x, k = rng.random((20, 30)), rng.standard_normal((5, 5))
    np.testing.assert_allclose(cppconv.correlate2d(x, k, "same", "symm"), ndimage.correlate(x, k, mode="reflect"),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("call,message", [
    (lambda: cppconv.correlate2d(np.ones((3, 3)), np.ones((2, 2)), mode="middle"), "mode must be one of"),
    (lambda: cppconv.correlate2d(np.ones((3, 3)), np.ones((2, 2)), boundary="reflect"), "boundary must be one of"),
    (lambda: cppconv.correlate2d(np.ones((3, 3)), np.ones((4, 2)), mode="valid"), "no larger than in1"),
    (lambda: cppconv.correlate2d(np.ones((3, 3)), np.ones((2, 2, 2))), "in2 must be a 2-D kernel"),
    (lambda: cppconv.convolve2d(np.ones(3), np.ones((2, 2))), "in1 must be a 2-D image"),
    (lambda: cppconv.correlate2d(np.ones((2, 2)), np.ones((5, 5)), boundary="wrap"), "boundary='wrap' pads"),
])
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
