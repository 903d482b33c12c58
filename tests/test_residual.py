"""The residual post-op: Conv2d(x, residual=r) = activation(conv(x) + bias + r), against the
convolution without activation followed by the add and the activation, for every algorithm
that takes the problem (forced in turn), both layouts, on every ISA."""

from __future__ import annotations

import numpy as np
import pytest

import cppconv

ACTIVATIONS = [None, "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "silu", "hardsigmoid", "hardswish"]
# (C, K, H, W, kernel, stride, padding, groups): around the microkernels' pixel blocks and vector
# widths (K 1, 15, 16, 17, 33; widths 7, 14, 17), the 1x1 flat paths, strided 1x1 (subsampled
# input), Winograd 3x3, depthwise and grouped problems, a long row (fold rows).
SHAPES = [
    (8, 16, 7, 7, 3, 1, 1, 1),
    (16, 17, 9, 14, 3, 1, 1, 1),
    (32, 33, 14, 14, 1, 1, 0, 1),
    (24, 15, 17, 17, 1, 2, 0, 1),
    (3, 1, 10, 11, 5, 2, 2, 1),
    (64, 64, 8, 8, 3, 1, 1, 1),
    (64, 160, 7, 9, 1, 1, 0, 1),
    (32, 32, 12, 12, 3, 1, 1, 32),
    (24, 24, 11, 13, (5, 5), 2, 2, 24),
    (16, 32, 9, 9, 3, 1, 1, 4),
    (16, 16, 9, 9, 3, 1, 1, 4),  # 4 channels a group: channels-last runs channels-first
    (8, 8, 1, 300, 1, 1, 0, 1),
    (8, 8, 1, 400, (1, 3), 1, (0, 1), 1),  # a long row: fold rows
    (4, 8, 1, 400, (1, 3), 1, (0, 1), 1),  # few (channel, tap) pairs: taps as channels
]


EXACT = (None, "relu", "relu6", "leaky_relu")


def _activate(v: np.ndarray, act, layout: str) -> np.ndarray:
    """The reference's activation of v: a 1x1 identity convolution (each sum exactly its one
    value) through the reference, with the activation fused."""
    if act is None:
        return v
    c = v.shape[1 if layout == "NCHW" else 3]
    eye = np.eye(c, dtype=v.dtype).reshape(c, c, 1, 1)
    return cppconv.Conv2d(eye, activation=act, layout=layout)._call_with_algorithm("conv_reference_f32", v)


def _case(shape, layout, rng):
    c, k, h, w, kern, stride, pad, groups = shape
    kh, kw = (kern, kern) if isinstance(kern, int) else kern
    weight = rng.standard_normal((k, c // groups, kh, kw)).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    # (precision "high": Winograd among the candidates)
    return x, weight, bias, dict(stride=stride, padding=pad, groups=groups, layout=layout, precision="high")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("shape", SHAPES)
def test_residual_every_algorithm(isa, shape, layout):
    rng = np.random.default_rng(abs(hash((shape, layout))) % 2**32)
    x, weight, bias, kw = _case(shape, layout, rng)
    plain = cppconv.Conv2d(weight, bias, **kw)
    info = plain.explain(x.shape)
    r = rng.standard_normal(info["output_shape"]).astype(np.float32)
    for algorithm in [*info["candidates"], "conv_reference_f32"]:
        total = plain._call_with_algorithm(algorithm, x) + r  # conv, then the add (float32)
        for act in ACTIVATIONS:
            layer = cppconv.Conv2d(weight, bias, activation=act, **kw)
            want = _activate(total, act, layout)
            one = layer._call_with_algorithm(algorithm, x, num_threads=1, residual=r)
            two = layer._call_with_algorithm(algorithm, x, num_threads=2, residual=r)
            assert np.array_equal(one, two, equal_nan=True), (algorithm, act)
            if act in EXACT:
                np.testing.assert_array_equal(one, want, err_msg=f"{algorithm} {act}")
            else:  # the kernels' formulas of these and the reference's differ by an ulp or two
                np.testing.assert_allclose(one, want, rtol=2e-6, atol=1e-6, err_msg=f"{algorithm} {act}")


def test_residual_must_not_share_out():
    # The kernels keep partial sums in the output before they add the residual, so an output
    # that is the residual (or overlaps it) is refused rather than computed wrong.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    layer = cppconv.Conv2d(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), padding=1, activation="relu")
    r = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="share memory"):
        layer(x, r, residual=r)
    with pytest.raises(ValueError, match="shape"):
        layer(x, residual=r[:, :8])
    for shape in [(1, 8, 8, 16), (16, 64), (1024,)]:  # the same number of values in another shape
        with pytest.raises(ValueError, match="residual has shape"):
            layer(x, residual=np.ascontiguousarray(r.reshape(shape)))
    with pytest.raises(TypeError):
        layer(x, residual=r.astype(np.float64))
    y = layer(x, residual=r)  # a fresh output: the residual stays as it was
    np.testing.assert_array_equal(y, np.maximum(layer_plain(layer, x) + r, 0))
    rounded = cppconv.Conv2d(layer.weight, padding=1, activation="relu", compute_dtype="bfloat16")
    with pytest.raises(TypeError, match="computes in bfloat16.*add it to the result"):
        rounded(x, residual=r)


def layer_plain(layer, x):
    return cppconv.Conv2d(layer.weight, layer.bias, padding=1)(x)
