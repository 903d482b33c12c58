"""Error messages users can act on: each names what was expected and what was given."""

from __future__ import annotations

import re

import numpy as np
import pytest

import cppconv
from cppconv import _conv


def _raises(exc, *fragments):
    """pytest.raises that checks every fragment appears (literally) in the message."""

    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(exc)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *args):
            handled = self.ctx.__exit__(*args)
            message = str(self.info.value)
            for fragment in fragments:
                assert fragment in message, f"{fragment!r} not in message {message!r}"
            return handled

    return _Check()


def f32(*shape):
    return np.zeros(shape, np.float32)


def test_channel_mismatch_names_both_counts():
    with _raises(ValueError, "weight expects 64 input channels per group", "x has 3 channels"):
        cppconv.conv2d(f32(1, 3, 8, 8), f32(16, 64, 3, 3))


def test_channel_mismatch_with_groups():
    with _raises(ValueError, "8 input channels per group", "16 in all with groups=2", "x has 12 channels"):
        cppconv.conv2d(f32(1, 12, 8, 8), f32(4, 8, 3, 3), groups=2)


def test_groups_must_divide_channels():
    with _raises(ValueError, "groups=4", "6 input channels"):
        cppconv.conv2d(f32(1, 6, 8, 8), f32(4, 1, 3, 3), groups=4)
    with _raises(ValueError, "groups=2", "3 output channels"):
        cppconv.conv2d(f32(1, 4, 8, 8), f32(3, 2, 3, 3), groups=2)


def test_bias_length():
    with _raises(ValueError, "bias must have shape (16,)", "16 output channels", "got (15,)"):
        cppconv.conv2d(f32(1, 3, 8, 8), f32(16, 3, 3, 3), f32(15))
    with _raises(ValueError, "(4,)", "got (5,)"):
        cppconv.Conv2d(f32(4, 3, 3, 3), f32(5))


def test_kernel_larger_than_input():
    with _raises(ValueError, "kernel (7, 7)", "spans (7, 7)", "padded input (5, 5)"):
        cppconv.conv2d(f32(1, 1, 5, 5), f32(1, 1, 7, 7))
    with _raises(ValueError, "dilation (2, 2)", "spans (5, 5)", "padded input (4, 4)"):
        cppconv.conv2d(f32(1, 1, 4, 4), f32(1, 1, 3, 3), dilation=2)


def test_conv_output_size_below_one():
    with _raises(ValueError, "kernel_size 7", "spans 7", "padded input size 5"):
        cppconv.conv_output_size(5, 7)
    with _raises(ValueError, "stride must be >= 1, got 0"):
        cppconv.conv_output_size(5, 3, stride=0)


def test_weight_rank():
    with _raises(ValueError, "weight must be 4-D (K, C/groups, kh, kw)", "got shape (3, 3, 3)"):
        cppconv.conv2d(f32(1, 3, 8, 8), f32(3, 3, 3))
    with _raises(ValueError, "2-D image needs a 2-D kernel", "x has shape (5, 5)", "weight has shape (1, 1, 3, 3)"):
        cppconv.conv2d(f32(5, 5), f32(1, 1, 3, 3))


def test_input_rank_names_layout():
    with _raises(ValueError, "(N, C, H, W) or (C, H, W)", "x is 1-D with shape (8,)"):
        cppconv.conv2d(f32(8), f32(1, 1, 3, 3))
    with _raises(ValueError, "(N, H, W, C) or (H, W, C)", "x is 5-D with shape (1, 1, 1, 8, 8): use conv3d"):
        cppconv.conv2d(f32(1, 1, 1, 8, 8), f32(1, 1, 3, 3), layout="NHWC")


def test_empty_input_and_kernel():
    with _raises(ValueError, "spatial sizes >= 1", "(0, 4) (HW)"):
        cppconv.conv2d(f32(1, 1, 0, 4), f32(1, 1, 1, 1))
    with _raises(ValueError, "at least 1 per axis", "got 0x3"):
        cppconv.explain((1, 1, 4, 4), (1, 1, 0, 3))


def test_out_shape_and_dtype():
    with _raises(ValueError, "out has shape (1, 2, 6, 6)", "result has shape (1, 2, 8, 8)"):
        cppconv.conv2d(f32(1, 3, 8, 8), f32(2, 3, 1, 1), out=f32(1, 2, 6, 6))
    with _raises(TypeError, "out has dtype float64", "needs float32"):
        cppconv.conv2d(f32(1, 3, 8, 8), f32(2, 3, 1, 1), out=np.zeros((1, 2, 8, 8)))
    ro = f32(1, 2, 8, 8)
    ro.flags.writeable = False
    with _raises(ValueError, "must be writable", "read-only"):
        cppconv.conv2d(f32(1, 3, 8, 8), f32(2, 3, 1, 1), out=ro)


def test_padding_too_large_for_mode():
    with _raises(ValueError, "padding (4, 4, 4, 4)", "padding_mode='reflect'", "input size (4, 4)"):
        cppconv.conv2d(f32(1, 1, 4, 4), f32(1, 1, 3, 3), padding=4, padding_mode="reflect")


def test_words_list_the_choices():
    with _raises(ValueError, "'NCHW' or 'NHWC'", "'NCWH'"):
        cppconv.conv2d(f32(1, 1, 4, 4), f32(1, 1, 3, 3), layout="NCWH")
    with _raises(ValueError, "'circular'", "'reflect'", "got 'mirror'"):
        cppconv.conv2d(f32(1, 1, 4, 4), f32(1, 1, 3, 3), padding_mode="mirror")
    with _raises(ValueError, "'relu'", "got 'gelu'"):
        cppconv.conv2d(f32(1, 1, 4, 4), f32(1, 1, 3, 3), activation="gelu")
    with _raises(ValueError, "'valid' or 'same'", "got 'full'"):
        cppconv.conv2d(f32(1, 1, 4, 4), f32(1, 1, 3, 3), padding="full")


def test_integer_arguments():
    with _raises(TypeError, "stride must be an integer", "float 1.5"):
        cppconv.conv2d(f32(1, 1, 4, 4), f32(1, 1, 3, 3), stride=1.5)
    with _raises(ValueError, "stride must be an int or 2 ints (h, w)", "(1, 2, 3)"):
        cppconv.conv2d(f32(1, 1, 4, 4), f32(1, 1, 3, 3), stride=(1, 2, 3))
    with _raises(ValueError, "dilation must be >= 1", "got 0"):
        cppconv.conv2d(f32(1, 1, 4, 4), f32(1, 1, 3, 3), dilation=0)
    with _raises(ValueError, "n must be between 1 and", "got 0"):
        cppconv.set_num_threads(0)


def test_unsupported_dtype():
    with _raises(TypeError, "x has unsupported dtype complex64"):
        cppconv.conv2d(np.zeros((4, 4), np.complex64), f32(3, 3))


def test_unknown_algorithm_lists_available():
    names = cppconv._native.conv_algorithms()
    with _raises(ValueError, "no conv algorithm named 'nope'", names[0]):
        _conv._conv_with_algorithm("nope", f32(1, 1, 4, 4), f32(1, 1, 3, 3))


def test_every_value_error_in_the_python_layer_has_a_got_or_numbers():
    """A lint over the source: each ValueError message shows what was given (an f-string)."""
    import inspect

    from cppconv import _args

    for module in (_args, _conv, cppconv):
        source = inspect.getsource(module)
        for message in re.findall(r"raise ValueError\(\s*(.*?)\)\n", source, flags=re.S):
            assert message.lstrip().startswith("f") or "read-only" in message, (module.__name__, message)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_tensorflow_hwio_weight_is_named_with_its_fix(layout):
    """A TensorFlow HWIO weight (kh, kw, C/groups, K) that fits x only as HWIO: the error says
    weights are OIHW in both layouts and how to convert (issue 17)."""
    def x(c):
        return f32(1, 8, 8, c) if layout == "NHWC" else f32(1, c, 8, 8)

    fix = "w.transpose(3, 2, 0, 1)"
    with _raises(ValueError, "OIHW (K, C/groups, kh, kw) in both layouts", "HWIO", "(3, 3, 16, 32)", fix):
        cppconv.conv2d(x(16), f32(3, 3, 16, 32), layout=layout)  # channel counts disagree
    with _raises(ValueError, "OIHW", "(3, 3, 3, 64)", fix):
        cppconv.conv2d(x(3), f32(3, 3, 3, 64), layout=layout)  # channels fit; the "kernel" 3x64 does not
    with _raises(ValueError, "OIHW", "(3, 3, 4, 6)", fix):
        cppconv.conv2d(x(8), f32(3, 3, 4, 6), groups=2, layout=layout)
    with _raises(ValueError, "OIHW", fix):
        cppconv.Conv2d(f32(3, 3, 16, 32), layout=layout)(x(16))
    y = cppconv.conv2d(x(16), f32(3, 3, 16, 32).transpose(3, 2, 0, 1), layout=layout)
    assert y.shape == ((1, 6, 6, 32) if layout == "NHWC" else (1, 32, 6, 6))
    with pytest.raises(ValueError) as info:  # a plain channel mismatch gets no HWIO hint
        cppconv.conv2d(x(16), f32(32, 8, 3, 3), layout=layout)
    assert "HWIO" not in str(info.value)
