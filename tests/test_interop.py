"""Interop: arrays from other libraries are read without a copy; per-call num_threads."""

from __future__ import annotations

import numpy as np
import pytest

import cppconv
from cppconv import _args


class InterfaceOnly:
    """Exposes a NumPy buffer through ``__array_interface__`` only (no buffer protocol)."""

    def __init__(self, base: np.ndarray):
        self.base = base
        self.__array_interface__ = base.__array_interface__


class DLPackOnly:
    """Exposes a NumPy buffer through ``__dlpack__`` only, as a CPU tensor of another library does."""

    def __init__(self, base: np.ndarray):
        self.base = base

    def __dlpack__(self, **kwargs):
        return self.base.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.base.__dlpack_device__()


def _data():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    return x, w


@pytest.mark.parametrize("wrap", [InterfaceOnly, DLPackOnly, memoryview], ids=["array_interface", "dlpack", "buffer"])
def test_as_input_array_is_zero_copy(wrap):
    x, _ = _data()
    view = _args.as_input_array(wrap(x), "x")
    assert isinstance(view, np.ndarray)
    assert np.shares_memory(view, x)
    assert view.shape == x.shape and view.dtype == x.dtype


@pytest.mark.parametrize("wrap", [InterfaceOnly, DLPackOnly], ids=["array_interface", "dlpack"])
def test_conv2d_and_layer_accept_foreign_arrays(wrap):
    x, w = _data()
    expect = cppconv.conv2d(x, w, padding=1)
    y = cppconv.conv2d(wrap(x), wrap(w), padding=1)
    assert type(y) is np.ndarray
    np.testing.assert_array_equal(y, expect)
    np.testing.assert_array_equal(cppconv.Conv2d(wrap(w), padding=1)(wrap(x)), expect)


def test_dlpack_failure_falls_back_to_asarray():
    class BrokenDLPack:
        def __init__(self, base):
            self.base = base

        def __dlpack__(self, **kwargs):
            raise BufferError("cannot export")

        def __array__(self, dtype=None, copy=None):
            return self.base

    x, w = _data()
    np.testing.assert_array_equal(cppconv.conv2d(BrokenDLPack(x), w), cppconv.conv2d(x, w))


def test_torch_tensor_zero_copy():
    torch = pytest.importorskip("torch")
    x, w = _data()
    tx = torch.from_numpy(x)
    view = _args.as_input_array(tx, "x")
    assert np.shares_memory(view, x)
    y = cppconv.conv2d(tx, torch.from_numpy(w), padding=1)
    assert type(y) is np.ndarray
    np.testing.assert_array_equal(y, cppconv.conv2d(x, w, padding=1))


def test_per_call_num_threads_leaves_global_setting():
    x, w = _data()
    before = cppconv.get_num_threads()
    expect = cppconv.conv2d(x, w)
    for n in (1, 2, 3):
        np.testing.assert_array_equal(cppconv.conv2d(x, w, num_threads=n), expect)
        np.testing.assert_array_equal(cppconv.conv2d(x, w, num_threads=np.int64(n), stride=(1, 1)), expect)
        np.testing.assert_array_equal(cppconv.Conv2d(w)(x, num_threads=n), expect)
        out = np.empty_like(expect)
        assert cppconv.conv2d(x, w, out=out, num_threads=n) is out
        np.testing.assert_array_equal(out, expect)
    assert cppconv.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -2])
def test_per_call_num_threads_below_one(bad):
    x, w = _data()
    with pytest.raises(ValueError, match=f"num_threads must be between 1 and .*got {bad}"):
        cppconv.conv2d(x, w, num_threads=bad)
    with pytest.raises(ValueError, match=f"got {bad}"):
        cppconv.Conv2d(w)(x, num_threads=bad)


def test_per_call_num_threads_type():
    x, w = _data()
    with pytest.raises(TypeError, match="num_threads must be an integer"):
        cppconv.conv2d(x, w, num_threads=1.5)


def test_native_num_threads_negative():
    from cppconv import _native

    x, w = _data()
    out = np.empty((2, 4, 7, 7), np.float32)
    plan = _native.ConvPlan(w, None)
    params = _native.ConvParams(2, (1, 1), (1, 1), (0, 0, 0, 0), 1, 0, 0, 0, -1)
    with pytest.raises(ValueError, match="num_threads must be >= 0"):
        plan.run(x, out, params, "", -1)


# ------------------------------------------------------------------------------------------
# torch tensors NumPy cannot read as they are (issue 13, item 8)


def test_torch_tensor_requiring_grad_is_a_type_error():
    torch = pytest.importorskip("torch")
    x, w = _data()
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    grad_x, grad_w = tx.clone().requires_grad_(), tw.clone().requires_grad_()
    grad_b = torch.zeros(4, requires_grad=True)
    calls = {
        "x": [lambda: cppconv.conv2d(grad_x, w), lambda: cppconv.max_pool2d(grad_x, 2),
              lambda: cppconv.avg_pool2d(grad_x, 2), lambda: cppconv.global_avg_pool2d(grad_x),
              lambda: cppconv.conv_transpose2d(grad_x, w.transpose(1, 0, 2, 3)), lambda: cppconv.Conv2d(w)(grad_x)],
        "weight": [lambda: cppconv.conv2d(x, grad_w), lambda: cppconv.Conv2d(grad_w),
                   lambda: cppconv.ConvTranspose2d(grad_w)],
        "bias": [lambda: cppconv.conv2d(x, w, grad_b), lambda: cppconv.Conv2d(w, grad_b)],
    }
    for name, fns in calls.items():
        for fn in fns:
            with pytest.raises(TypeError, match=rf"{name} is a torch tensor that requires grad.*{name}\.detach\(\)"):
                fn()
    # What the message says works, and reads the tensor without a copy.
    np.testing.assert_array_equal(cppconv.conv2d(grad_x.detach(), grad_w.detach()), cppconv.conv2d(x, w))
    assert np.shares_memory(_args.as_input_array(grad_x.detach(), "x"), grad_x.detach().numpy())


def test_torch_negative_and_conjugate_bits_are_resolved():
    torch = pytest.importorskip("torch")
    x, w = _data()
    z = torch.complex(torch.zeros(x.shape), torch.from_numpy(x))
    neg = z.conj().imag  # a lazy negation of x's storage: its values are -x
    assert neg.is_neg()
    np.testing.assert_array_equal(neg.resolve_neg().numpy(), -x)
    np.testing.assert_array_equal(_args.as_input_array(neg, "x"), -x)
    np.testing.assert_array_equal(cppconv.conv2d(neg, w, padding=1), cppconv.conv2d(-x, w, padding=1))
    np.testing.assert_array_equal(cppconv.max_pool2d(neg, 2), cppconv.max_pool2d(-x, 2))
    wz = torch.complex(torch.zeros(w.shape), torch.from_numpy(w))
    neg_w = wz.conj().imag
    np.testing.assert_array_equal(cppconv.conv2d(x, neg_w), cppconv.conv2d(x, -w))
    np.testing.assert_array_equal(cppconv.Conv2d(neg_w)(x), cppconv.conv2d(x, -w))
    # A conjugated complex tensor is complex, which cppconv refuses: a TypeError, not torch's
    # RuntimeError about the conjugate bit.
    with pytest.raises(TypeError, match="complex"):
        cppconv.conv2d(z.conj(), w)


def test_foreign_array_runtime_error_is_a_type_error():
    class Refuses:
        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("cannot be read here")

    with pytest.raises(TypeError, match="x: NumPy cannot read this Refuses: cannot be read here"):
        cppconv.max_pool2d(Refuses(), 2)
