"""Bad input to cppconv.conv2d / Conv2d / conv_output_size: clear errors that name the argument.
Also the edge cases that are not errors: an empty batch, NaN and Inf."""

from __future__ import annotations

import numpy as np
import pytest

import cppconv
from cppconv._conv import _conv_with_algorithm

from conftest import assert_close, make_rng
from reference import ACTIVATIONS, PADDING_MODES, conv2d_abs_bound, conv2d_ref, resolve_padding

X_NAME = r"\bx\b"


def f32(*shape):
    return np.ones(shape, np.float32)


X = f32(2, 4, 8, 8)
W = f32(6, 4, 3, 3)
B = f32(6)


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("x", [f32(8), f32(1, 2, 4, 8, 8), np.float32(1.0), f32(0)], ids=lambda a: str(a.shape))
def test_x_wrong_ndim(x):
    with pytest.raises(ValueError, match=X_NAME):
        cppconv.conv2d(x, W)


@pytest.mark.parametrize("w", [f32(6, 4, 3), f32(6, 4, 3, 3, 1), f32(6), f32(6, 4)], ids=lambda a: str(a.shape))
def test_weight_wrong_ndim(w):
    with pytest.raises(ValueError, match="weight"):
        cppconv.conv2d(X, w)


def test_2d_x_needs_2d_weight_and_back():
    with pytest.raises(ValueError, match=rf"{X_NAME}|weight"):
        cppconv.conv2d(f32(8, 8), W)
    with pytest.raises(ValueError, match=rf"{X_NAME}|weight"):
        cppconv.conv2d(X, f32(3, 3))
    with pytest.raises(ValueError, match=rf"{X_NAME}|weight"):
        cppconv.conv2d(f32(4, 8, 8), f32(3, 3))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_channel_mismatch(layout):
    x = f32(2, 5, 8, 8) if layout == "NCHW" else f32(2, 8, 8, 5)
    with pytest.raises(ValueError, match=rf"{X_NAME}|weight|channel"):
        cppconv.conv2d(x, W, layout=layout)
    with pytest.raises(ValueError, match=rf"{X_NAME}|weight|channel"):
        cppconv.conv2d(x[0], W, layout=layout)
    # NHWC input passed as NCHW (the usual mistake): C would be 8.
    with pytest.raises(ValueError, match=rf"{X_NAME}|weight|channel"):
        cppconv.conv2d(f32(2, 8, 8, 4), W)
    # groups=2: weight must have C // 2 = 2 input channels.
    with pytest.raises(ValueError, match=rf"{X_NAME}|weight|channel|groups"):
        cppconv.conv2d(X, f32(6, 4, 3, 3), groups=2)


def test_groups_not_dividing():
    # groups does not divide C (6): weight (4, 1, ...) claims C // groups = 1.
    with pytest.raises(ValueError, match="groups"):
        cppconv.conv2d(f32(1, 6, 5, 5), f32(4, 1, 3, 3), groups=4)
    with pytest.raises(ValueError, match="groups"):
        cppconv.conv2d(f32(1, 6, 5, 5), f32(4, 2, 3, 3), groups=4)
    # groups divides C but not K.
    with pytest.raises(ValueError, match="groups"):
        cppconv.conv2d(f32(1, 4, 5, 5), f32(3, 2, 3, 3), groups=2)


@pytest.mark.parametrize("groups", [0, -1, -2])
def test_groups_below_one(groups):
    with pytest.raises(ValueError, match="groups"):
        cppconv.conv2d(X, W, groups=groups)


@pytest.mark.parametrize("bias", [f32(5), f32(7), f32(0), f32(1, 6), f32(6, 1)], ids=lambda a: str(a.shape))
def test_bias_wrong_shape(bias):
    with pytest.raises(ValueError, match="bias"):
        cppconv.conv2d(X, W, bias)


# --------------------------------------------------------------------------------------------
# stride, dilation, padding, padding_mode, layout, activation
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["stride", "dilation"])
@pytest.mark.parametrize("value", [0, -1, (1, 0), (0, 1), (2, -3)], ids=repr)
def test_stride_dilation_below_one(name, value):
    with pytest.raises(ValueError, match=name):
        cppconv.conv2d(X, W, **{name: value})


@pytest.mark.parametrize("name", ["stride", "dilation"])
def test_stride_dilation_wrong_length(name):
    with pytest.raises(ValueError, match=name):
        cppconv.conv2d(X, W, **{name: (1, 1, 1)})


@pytest.mark.parametrize("padding", [-1, (0, -1), (-2, 0), ((0, 0), (-1, 0)), ((0, -1), (0, 0))], ids=repr)
def test_negative_padding(padding):
    with pytest.raises(ValueError, match="padding"):
        cppconv.conv2d(X, W, padding=padding)


@pytest.mark.parametrize("padding", ["full", "SAME ", "", "causal"])
def test_unknown_padding_word(padding):
    with pytest.raises(ValueError, match="padding"):
        cppconv.conv2d(X, W, padding=padding)


@pytest.mark.parametrize("padding_mode", ["mirror", "", "zero", "periodic", "Reflect "])
def test_unknown_padding_mode(padding_mode):
    with pytest.raises(ValueError, match="padding_mode"):
        cppconv.conv2d(X, W, padding=1, padding_mode=padding_mode)


def test_unknown_layout_and_activation():
    with pytest.raises(ValueError, match="layout"):
        cppconv.conv2d(X, W, layout="CHWN")
    with pytest.raises(ValueError, match="activation"):
        cppconv.conv2d(X, W, activation="gelu_tanh_whatever")


@pytest.mark.parametrize("padding,H,W", [
    (4, 4, 6), (((0, 4), (0, 0)), 4, 6), ((0, 6), 4, 6), ((1, 9), 4, 6), (((0, 0), (6, 0)), 4, 6),
], ids=repr)
def test_reflect_padding_too_large(padding, H, W):
    """reflect needs padding < the input size on that axis."""
    with pytest.raises(ValueError, match="padding"):
        cppconv.conv2d(f32(1, 4, H, W), f32(2, 4, 3, 3), padding=padding, padding_mode="reflect")


@pytest.mark.parametrize("padding,H,W", [
    (5, 4, 6), (((0, 5), (0, 0)), 4, 6), ((0, 7), 4, 6), (((0, 0), (0, 7)), 4, 6),
], ids=repr)
def test_circular_padding_too_large(padding, H, W):
    """circular needs padding <= the input size on that axis."""
    with pytest.raises(ValueError, match="padding"):
        cppconv.conv2d(f32(1, 4, H, W), f32(2, 4, 3, 3), padding=padding, padding_mode="circular")


def test_reflect_same_padding_too_large():
    # 'same' with a 7x7 kernel on a 2x2 input asks for 3 pixels each side: too many for reflect.
    with pytest.raises(ValueError, match="padding"):
        cppconv.conv2d(f32(1, 4, 2, 2), f32(2, 4, 7, 7), padding="same", padding_mode="reflect")


@pytest.mark.parametrize("x_hw,k_hw,kw", [
    ((5, 5), (7, 7), dict()),
    ((5, 5), (3, 3), dict(dilation=3)),
    ((5, 9), (3, 3), dict(dilation=(3, 1))),
    ((9, 5), (3, 3), dict(dilation=(1, 3))),
    ((5, 5), (8, 1), dict(padding=1)),
    ((5, 5), (4, 4), dict(dilation=2)),
    ((4, 5), (4, 4), dict(dilation=2, padding=1)),
    ((1, 1), (2, 2), dict()),
], ids=repr)
def test_kernel_larger_than_padded_input(x_hw, k_hw, kw):
    with pytest.raises(ValueError, match="kernel"):
        cppconv.conv2d(f32(1, 2, *x_hw), f32(3, 2, *k_hw), **kw)
    with pytest.raises(ValueError, match="kernel"):
        cppconv.conv2d(f32(*x_hw), f32(*k_hw), **kw)


def test_empty_spatial_input():
    # H = 0 padded by 1 on each side is 2 rows: less than the 3x3 kernel.
    with pytest.raises(ValueError, match=rf"kernel|{X_NAME}"):
        cppconv.conv2d(f32(1, 4, 0, 8), W, padding=1)


# --------------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, object, "U3", "S3"], ids=str)
@pytest.mark.parametrize("which", ["x", "weight", "bias"])
def test_unsupported_dtype(dtype, which):
    args = {"x": X, "weight": W, "bias": B}
    if np.dtype(dtype).kind in "US":
        args[which] = np.full(args[which].shape, "1", dtype)
    else:
        args[which] = args[which].astype(dtype)
    with pytest.raises(TypeError):
        cppconv.conv2d(args["x"], args["weight"], args["bias"])


def test_unsupported_dtype_2d_and_layer():
    with pytest.raises(TypeError):
        cppconv.conv2d(np.ones((4, 4), np.complex64), f32(3, 3))
    with pytest.raises(TypeError):
        cppconv.Conv2d(W.astype(np.complex128))(X)
    with pytest.raises(TypeError):
        cppconv.Conv2d(W)(X.astype(object))


# --------------------------------------------------------------------------------------------
# out=
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 6, 6, 5), (2, 6, 5, 6), (1, 6, 6, 6), (2, 6, 6, 6, 1), (6, 6, 6), (2, 6, 36)],
                         ids=str)
def test_out_wrong_shape(shape):
    # the result is (2, 6, 6, 6)
    with pytest.raises(ValueError, match="out"):
        cppconv.conv2d(X, W, B, out=np.empty(shape, np.float32))


def test_out_wrong_shape_nhwc_and_2d():
    x = f32(2, 8, 9, 4)                 # NHWC result (2, 6, 7, 6); NCHW would be (2, 6, 6, 7)
    with pytest.raises(ValueError, match="out"):
        cppconv.conv2d(x, W, layout="NHWC", out=np.empty((2, 6, 6, 7), np.float32))
    with pytest.raises(ValueError, match="out"):
        cppconv.conv2d(f32(8, 8), f32(3, 3), out=np.empty((1, 6, 6), np.float32))


@pytest.mark.parametrize("dtype,x_dtype", [
    (np.float64, np.float32), (np.float16, np.float32), (np.float32, np.float64),
    (np.float32, np.float16), (np.int32, np.float32), (np.complex64, np.float32),
    (np.float32, np.int32),
], ids=str)
def test_out_wrong_dtype(dtype, x_dtype):
    x = X.astype(x_dtype)
    w = W.astype(np.float16) if x_dtype == np.float16 else W
    w = W.astype(np.float64) if x_dtype == np.int32 else w
    with pytest.raises(TypeError):
        cppconv.conv2d(x, w, out=np.empty((2, 6, 6, 6), dtype))


NON_NATIVE = ">" if np.little_endian else "<"


@pytest.mark.parametrize("char", ["f4", "f8"])
def test_out_in_non_native_byte_order(char):
    """Refused by every op (its fast paths too), with a message about byte order, not one that
    reads like a dtype mismatch (issue 13, item 8)."""
    x, w = X.astype(char), W.astype(char)
    swapped = np.dtype(NON_NATIVE + char)

    def out(shape):
        return np.zeros(shape, swapped)

    xi = x[:, :, :4, :4]  # (2, 4, 4, 4): pools to (2, 4, 2, 2)
    calls = [
        lambda: cppconv.conv2d(x, w, out=out((2, 6, 6, 6))),
        lambda: cppconv.conv2d(x, w, stride=(1, 1), out=out((2, 6, 6, 6))),
        lambda: cppconv.conv2d(x[0, 0], w[0, 0], out=out((6, 6))),
        lambda: cppconv.Conv2d(w)(x, out=out((2, 6, 6, 6))),
        lambda: cppconv.Conv2d(w, padding="same")(x, out=out((2, 6, 8, 8))),
        lambda: cppconv.conv_transpose2d(xi, w.transpose(1, 0, 2, 3)[:4], out=out((2, 6, 6, 6))),
        lambda: cppconv.max_pool2d(xi, 2, out=out((2, 4, 2, 2))),
        lambda: cppconv.max_pool2d(xi, 2, return_indices=True,
                                   out=(out((2, 4, 2, 2)), np.zeros((2, 4, 2, 2), np.int64))),
        lambda: cppconv.max_pool2d(xi, 2, return_indices=True,
                                   out=(np.zeros((2, 4, 2, 2), x.dtype), np.zeros((2, 4, 2, 2), NON_NATIVE + "i8"))),
        lambda: cppconv.avg_pool2d(xi, 2, out=out((2, 4, 2, 2))),
        lambda: cppconv.adaptive_avg_pool2d(xi, 2, out=out((2, 4, 2, 2))),
        lambda: cppconv.global_avg_pool2d(xi, out=out((2, 4, 1, 1))),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(TypeError, match="byte order") as info:
            call()
        assert "out" in str(info.value), i


@pytest.mark.parametrize("char", ["f2", "f4", "f8", "i4"])
def test_inputs_in_non_native_byte_order(char):
    """Read as their values, whichever byte order (the kernels take the machine's)."""
    rng = make_rng("byte order", char)
    x = (4 * rng.standard_normal((2, 4, 8, 8))).astype(char)
    w = (4 * rng.standard_normal((6, 4, 3, 3))).astype(char)
    b = rng.standard_normal(6).astype(char)
    sx, sw, sb = (a.astype(a.dtype.newbyteorder()) for a in (x, w, b))
    assert not sx.dtype.isnative
    pairs = [
        (lambda x, w, b: cppconv.conv2d(x, w, b, padding=1)),
        (lambda x, w, b: cppconv.conv2d(x[0, 0], w[0, 0])),
        (lambda x, w, b: cppconv.Conv2d(w, b, padding=1)(x)),
        (lambda x, w, b: cppconv.conv_transpose2d(x, w.transpose(1, 0, 2, 3)[:4])),
        (lambda x, w, b: cppconv.max_pool2d(x, 3, 2, 1, return_indices=True)),
        (lambda x, w, b: cppconv.avg_pool2d(x, 2)),
        (lambda x, w, b: cppconv.adaptive_max_pool2d(x, 3)),
        (lambda x, w, b: cppconv.global_avg_pool2d(x)),
    ]
    for i, fn in enumerate(pairs):
        want, got = fn(x, w, b), fn(sx, sw, sb)
        for a, g in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)):
            assert g.dtype == a.dtype and g.dtype.isnative, i
            np.testing.assert_array_equal(g, a, err_msg=str(i))


def test_out_read_only():
    out = np.empty((2, 6, 6, 6), np.float32)
    out.setflags(write=False)
    with pytest.raises((ValueError, TypeError), match="out"):
        cppconv.conv2d(X, W, out=out)


def test_errors_leave_out_untouched():
    out = np.full((2, 6, 6, 6), 3.0, np.float32)
    with pytest.raises(ValueError):
        cppconv.conv2d(X, W, f32(5), out=out)
    assert (out == 3.0).all()


# --------------------------------------------------------------------------------------------
# The Conv2d layer
# --------------------------------------------------------------------------------------------

def test_layer_errors():
    with pytest.raises(ValueError, match="weight"):
        cppconv.Conv2d(f32(6, 4, 3))(X)
    with pytest.raises(ValueError, match="bias"):
        cppconv.Conv2d(W, f32(5))(X)
    with pytest.raises(ValueError, match="stride"):
        cppconv.Conv2d(W, stride=0)(X)
    with pytest.raises(ValueError, match="dilation"):
        cppconv.Conv2d(W, dilation=(1, -1))(X)
    with pytest.raises(ValueError, match="padding"):
        cppconv.Conv2d(W, padding=-1)(X)
    with pytest.raises(ValueError, match="padding"):
        cppconv.Conv2d(W, padding="full")(X)
    with pytest.raises(ValueError, match="padding_mode"):
        cppconv.Conv2d(W, padding=1, padding_mode="mirror")(X)
    with pytest.raises(ValueError, match="groups"):
        cppconv.Conv2d(f32(3, 2, 3, 3), groups=2)(X)
    with pytest.raises(ValueError, match="groups"):
        cppconv.Conv2d(W, groups=0)(X)
    with pytest.raises(ValueError, match="layout"):
        cppconv.Conv2d(W, layout="HWCN")(X)
    with pytest.raises(ValueError, match="activation"):
        cppconv.Conv2d(W, activation="swishy")(X)
    with pytest.raises(TypeError):
        cppconv.Conv2d(W.astype(object))(X)


def test_layer_call_errors():
    layer = cppconv.Conv2d(W, B, padding=1)
    with pytest.raises(ValueError, match=rf"{X_NAME}|weight|channel"):
        layer(f32(2, 5, 8, 8))
    with pytest.raises(ValueError, match=X_NAME):
        layer(f32(8))
    with pytest.raises(ValueError, match="kernel"):
        cppconv.Conv2d(W)(f32(1, 4, 2, 2))
    with pytest.raises(ValueError, match="out"):
        layer(X, out=np.empty((2, 6, 8, 7), np.float32))
    with pytest.raises(TypeError):
        layer(X, out=np.empty((2, 6, 8, 8), np.float64))
    with pytest.raises(TypeError):
        layer(X.astype(np.complex64))
    with pytest.raises(ValueError, match="padding"):
        cppconv.Conv2d(W, padding=4, padding_mode="reflect")(f32(1, 4, 4, 4))
    # The layer still works after the errors.
    assert layer(X).shape == (2, 6, 8, 8)


# --------------------------------------------------------------------------------------------
# conv_output_size
# --------------------------------------------------------------------------------------------

def test_conv_output_size_values():
    assert cppconv.conv_output_size(5, 3) == 3
    assert cppconv.conv_output_size(5, 3, 2) == 2
    assert cppconv.conv_output_size(5, 3, 1, 1) == 5
    assert cppconv.conv_output_size(7, 3, 2, 1, 2) == 3
    assert cppconv.conv_output_size(1, 1) == 1
    assert cppconv.conv_output_size(224, 7, stride=2, padding=3) == 112
    assert cppconv.conv_output_size(input_size=10, kernel_size=3, stride=3, padding=0, dilation=1) == 3
    for I in range(1, 12):
        for K in range(1, 6):
            for S in range(1, 4):
                for P in range(0, 3):
                    for D in range(1, 3):
                        expected = (I + 2 * P - D * (K - 1) - 1) // S + 1
                        if expected >= 1:
                            got = cppconv.conv_output_size(I, K, S, P, D)
                            assert got == expected and isinstance(got, int), (I, K, S, P, D)
                        else:
                            with pytest.raises(ValueError):
                                cppconv.conv_output_size(I, K, S, P, D)


def test_conv_output_size_matches_conv2d():
    for I, K, S, P, D in [(9, 3, 2, 1, 1), (10, 4, 3, 2, 2), (5, 5, 1, 0, 1), (6, 2, 4, 3, 1)]:
        y = cppconv.conv2d(f32(I, I + 1), f32(K, K), stride=S, padding=P, dilation=D)
        assert y.shape == (cppconv.conv_output_size(I, K, S, P, D),
                           cppconv.conv_output_size(I + 1, K, S, P, D))


@pytest.mark.parametrize("args", [(2, 3), (5, 7), (5, 3, 1, 0, 3), (1, 2, 5, 0, 1)], ids=str)
def test_conv_output_size_errors(args):
    with pytest.raises(ValueError):
        cppconv.conv_output_size(*args)


@pytest.mark.parametrize("args", [(5, 3, 0), (5, 3, 1, -1), (5, 3, 1, 0, 0), (5, 0), (0, 1)], ids=str)
def test_conv_output_size_bad_arguments(args):
    with pytest.raises(ValueError):
        cppconv.conv_output_size(*args)


# --------------------------------------------------------------------------------------------
# Empty batch
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32])
def test_empty_batch(layout, dtype):
    x = np.zeros((0, 4, 8, 9) if layout == "NCHW" else (0, 8, 9, 4), dtype)
    w = np.ones((6, 2, 3, 3), dtype)
    expect = (0, 6, 4, 5) if layout == "NCHW" else (0, 4, 5, 6)
    result_dtype = np.float64 if np.dtype(dtype).kind == "i" else dtype
    y = cppconv.conv2d(x, w, np.ones(6, dtype), layout=layout, groups=2, stride=2, padding=1)
    assert y.shape == expect and y.dtype == result_dtype
    out = np.empty(expect, result_dtype)
    assert cppconv.conv2d(x, w, layout=layout, groups=2, stride=2, padding=1, out=out) is out
    assert cppconv.Conv2d(w, layout=layout, groups=2, stride=2, padding=1)(x).shape == expect
    with pytest.raises(ValueError, match="out"):
        cppconv.conv2d(x, w, layout=layout, groups=2, stride=2, padding=1,
                       out=np.empty((1,) + expect[1:], result_dtype))


def test_empty_batch_still_checks_arguments():
    with pytest.raises(ValueError, match=rf"{X_NAME}|weight|channel"):
        cppconv.conv2d(f32(0, 5, 8, 8), W)
    with pytest.raises(ValueError, match="kernel"):
        cppconv.conv2d(f32(0, 4, 2, 2), W)


# --------------------------------------------------------------------------------------------
# NaN and Inf propagate as arithmetic says
# --------------------------------------------------------------------------------------------

def _nonfinite_case(rng, dtype, layout, where):
    x = rng.standard_normal((2, 3, 9, 11)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    if where == "x":
        x[0, 1, 4, 5] = np.inf
        x[0, 2, 1, 1] = -np.inf
        x[1, 0, 7, 2] = np.nan
        x[1, 0, 0, 10] = np.inf
    elif where == "weight":
        w[2, 1, 0, 0] = np.inf
        w[3, 0, 1, 1] = np.nan
    else:
        b[1] = np.nan
        b[3] = -np.inf
    return x, w, b


@pytest.mark.parametrize("where", ["x", "weight", "bias"])
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_inf_propagation(isa, where, padding_mode, dtype):
    rng = make_rng("nonfinite", where, padding_mode, np.dtype(dtype).name)
    x, w, b = _nonfinite_case(rng, dtype, "NCHW", where)
    geometries = [(1, 1), (2, "same"), (1, ((2, 0), (1, 2)))]
    combos = [(None, layout, g) for layout in ("NCHW", "NHWC") for g in geometries]
    combos += [(a, ("NCHW", "NHWC")[i % 2], geometries[i % 3]) for i, a in enumerate(ACTIVATIONS[1:])]
    for activation, layout, (stride, padding) in combos:
        pads = resolve_padding(padding, x.shape[2:], w.shape[2:], stride)
        args = (stride, pads, 1, 1, padding_mode, activation)
        ref = conv2d_ref(x, w, b, *args)
        bound = conv2d_abs_bound(x, w, b, *args)
        xin = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        y = cppconv.conv2d(xin, w, b, stride=stride, padding=padding, padding_mode=padding_mode,
                           activation=activation, layout=layout)
        if layout == "NHWC":
            y = np.ascontiguousarray(y.transpose(0, 3, 1, 2))
        assert_close(y, ref, bound, np.dtype(dtype),
                     context=f"{activation} {layout} stride={stride} padding={padding}")
        if where == "x" and activation is None:
            # inf reaches the outputs whose window covers it; everything else stays finite.
            assert np.isfinite(y).any() and not np.isfinite(y).all()


def test_inf_in_x_window(isa):
    """A single inf in x: +-inf (or NaN) exactly in the outputs whose 3x3 window covers it."""
    x = np.ones((1, 1, 7, 7), np.float32)
    x[0, 0, 3, 4] = np.inf
    w = np.ones((1, 1, 3, 3), np.float32)
    y = cppconv.conv2d(x, w)[0, 0]                      # 5x5 output
    covered = np.zeros((5, 5), bool)
    covered[1:4, 2:5] = True
    assert np.isposinf(y[covered]).all()
    np.testing.assert_array_equal(y[~covered], 9.0)
    w[0, 0, 1, 1] = -1.0                 # the output centred on the inf gets -inf
    y = cppconv.conv2d(x, w)[0, 0]
    centre = np.zeros((5, 5), bool)
    centre[2, 3] = True
    assert y[2, 3] == -np.inf
    assert np.isposinf(y[covered & ~centre]).all()
    np.testing.assert_array_equal(y[~covered], 7.0)
    # 0 * inf is NaN: a zero weight tap that meets the inf.
    w = np.ones((1, 1, 3, 3), np.float32)
    w[0, 0, 0, 0] = 0.0
    y = cppconv.conv2d(x, w)[0, 0]
    assert np.isnan(y[3, 4]) and np.isposinf(y[2, 3])
    assert np.isfinite(y[~covered]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.inf, np.nan, None])
def test_nonfinite_weight_meets_padding_in_channel_blocks(isa, dtype, bad):
    """Kernel rows that read only zero padding are skipped when the weights are finite; an inf or
    NaN weight must still meet those zeros (0 * inf is NaN), as in the reference."""
    rng = make_rng("nonfinite-channel-blocks", np.dtype(dtype).name, str(bad))
    x = rng.standard_normal((1, 24, 7, 7)).astype(dtype)
    w = rng.standard_normal((70, 24, 7, 7)).astype(dtype)
    b = rng.standard_normal(70).astype(dtype)
    if bad is not None:
        w[40, 3, 0, 6] = bad                 # a top kernel row: meets padding for the top output rows
    pads = resolve_padding(3, x.shape[2:], w.shape[2:], 1)
    ref = conv2d_ref(x, w, b, 1, pads, 1, 1, "zeros", None)
    bound = conv2d_abs_bound(x, w, b, 1, pads, 1, 1, "zeros", None)
    for y in (cppconv.conv2d(x, w, b, padding=3), cppconv.Conv2d(w, b, padding=3)(x)):
        assert_close(y, ref, bound, np.dtype(dtype), context=f"bad={bad}")
    if bad is not None:
        assert np.isnan(y[0, 40]).any()


WINOGRAD = [a for a in cppconv._native.conv_algorithms() if a.startswith("conv2d_winograd")]


@pytest.mark.skipif(not WINOGRAD, reason="no Winograd algorithm on this machine")
@pytest.mark.parametrize("algorithm", WINOGRAD)
@pytest.mark.parametrize("bad", ["x_inf", "x_nan", "w_inf", "w_nan", "huge"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dilation", [1, 2])
def test_winograd_leaves_special_values_to_the_direct_kernel(algorithm, bad, batch, dilation):
    """Winograd's transforms mix the values of a patch, so one inf would become inf - inf = NaN
    in outputs whose window never meets it, and large finite values can overflow in the sums
    where the direct sum does not.  Such calls must come out as the direct convolution: NaN and
    inf exactly where the reference has them.  batch 1 transforms the weights inside the work
    items, batch 3 packs them first; the layer path packs them once.  Dilated, a block's tiles
    come from several phases of the input."""
    rng = make_rng("winograd-special", bad, batch, dilation)
    x = rng.standard_normal((batch, 20, 7, 9) if dilation == 1 else (batch, 20, 8, 12)).astype(np.float32)
    w = rng.standard_normal((24, 20, 3, 3)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    if bad == "x_inf":
        x[-1, 5, 3, 4] = np.inf
    elif bad == "x_nan":
        x[0, 19, 6, 8] = np.nan
    elif bad == "w_inf":
        w[23, 7, 1, 2] = -np.inf
    elif bad == "w_nan":
        w[0, 0, 0, 0] = np.nan
    else:
        # |x| |w| = 1e36 per product: direct sums of 180 stay finite (<= 1.8e38), but the
        # transformed ones (inputs x4, weights x2.25, 9 sums added) could overflow.
        x = (np.sign(x) * 1e18).astype(np.float32)
        w = (np.sign(w) * 1e18).astype(np.float32)
    d = dilation
    pads = resolve_padding(d, x.shape[2:], w.shape[2:], d)
    ref = conv2d_ref(x, w, b, 1, pads, d, 1, "zeros", None)
    bound = conv2d_abs_bound(x, w, b, 1, pads, d, 1, "zeros", None)
    layer = cppconv.Conv2d(w, b, padding=d, dilation=d)
    for y in (_conv_with_algorithm(algorithm, x, w, b, padding=d, dilation=d),
              layer._call_with_algorithm(algorithm, x)):
        assert_close(y, ref, bound, np.float32, context=f"{algorithm} {bad}")
    if bad.startswith("x"):
        assert np.isfinite(y).any() and not np.isfinite(y).all()
    if bad == "huge":
        assert np.isfinite(ref).all() and np.abs(ref).max() > 1e37


# --------------------------------------------------------------------------------------------
# Calls as PyTorch writes them (issue 17): positional order and words in any case
# --------------------------------------------------------------------------------------------

def test_conv2d_takes_pytorchs_positional_order():
    # F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    rng = make_rng("positional conv2d")
    x = rng.standard_normal((1, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    want = cppconv.conv2d(x, w, b, stride=2, padding=1, dilation=2, groups=2)
    np.testing.assert_array_equal(cppconv.conv2d(x, w, b, 2, 1, 2, 2), want)
    np.testing.assert_array_equal(cppconv.conv2d(x, w, None, 2, 1, 2, 2), cppconv.conv2d(x, w, None, 2, 1, 2, 2))
    with pytest.raises(TypeError):  # the rest stay keyword-only
        cppconv.conv2d(x, w, b, 2, 1, 2, 2, "zeros")


WORDS = [
    dict(padding="SAME"), dict(padding="Valid"), dict(padding_mode="Reflect", padding=1),
    dict(padding_mode="CIRCULAR", padding=1), dict(activation="ReLU"), dict(activation="Leaky_ReLU"),
    dict(precision="HIGH"), dict(precision="Highest"), dict(layout="nhwc"),
]


@pytest.mark.parametrize("kw", WORDS, ids=repr)
def test_string_options_in_any_case(kw):
    rng = make_rng("words", repr(kw))
    x = rng.standard_normal((1, 8, 8, 3) if "layout" in kw else (1, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    canonical = {k: v.upper() if k == "layout" else v.lower() if isinstance(v, str) else v for k, v in kw.items()}
    want = cppconv.conv2d(x, w, **canonical)
    np.testing.assert_array_equal(cppconv.conv2d(x, w, **kw), want)
    np.testing.assert_array_equal(cppconv.Conv2d(w, **kw)(x), want)
    assert cppconv.explain(x.shape, w.shape, **kw)["output_shape"] == want.shape
