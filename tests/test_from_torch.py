"""Layer.from_torch (issue 17): every layer class built from the torch.nn module of the same
name computes what the module computes; unsupported modules and settings are clear errors; torch
is never imported at package import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import cppconv

from conftest import make_rng


def test_package_import_does_not_import_torch():
    code = "import sys, cppconv; cppconv.Conv2d(__import__('numpy').ones((1, 1, 3, 3))); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


torch = pytest.importorskip("torch")
nn = torch.nn

# (module, input shape): the settings PyTorch's modules take, each class with several.
CASES = [
    (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2), (2, 4, 17)),
    (lambda: nn.Conv1d(4, 6, 4, padding="same", padding_mode="circular", bias=False), (2, 4, 9)),
    (lambda: nn.Conv2d(3, 8, 3, padding="same", padding_mode="reflect", dilation=2), (2, 3, 10, 11)),
    (lambda: nn.Conv2d(4, 4, (3, 5), stride=(2, 1), padding=(1, 2), groups=4, padding_mode="replicate"), (1, 4, 9, 9)),
    (lambda: nn.Conv2d(3, 6, 2, padding="valid"), (2, 3, 7, 7)),
    (lambda: nn.Conv3d(4, 6, 3, stride=(1, 2, 2), padding=1, groups=2), (1, 4, 5, 8, 7)),
    (lambda: nn.Conv3d(2, 3, (1, 3, 3), padding="same", padding_mode="zeros", bias=False), (2, 2, 3, 6, 6)),
    (lambda: nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), (2, 4, 9)),
    (lambda: nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1, bias=False), (2, 4, 5, 6)),
    (lambda: nn.ConvTranspose2d(4, 6, 3, stride=(2, 3), dilation=2, output_padding=(1, 0)), (1, 4, 4, 5)),
    (lambda: nn.ConvTranspose3d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), (1, 4, 3, 4, 3)),
    (lambda: nn.MaxPool1d(3, 2, 1, dilation=2, ceil_mode=True), (2, 3, 16)),
    (lambda: nn.MaxPool2d(3, 2, 1), (2, 3, 11, 10)),
    (lambda: nn.MaxPool2d((2, 3), ceil_mode=True, return_indices=True), (1, 2, 9, 10)),
    (lambda: nn.MaxPool3d(2, 2, return_indices=True), (1, 2, 6, 6, 6)),
    (lambda: nn.AvgPool1d(4, 2, 1, ceil_mode=True, count_include_pad=False), (2, 3, 15)),
    (lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 3, 11, 10)),
    (lambda: nn.AvgPool2d(2, divisor_override=3), (1, 2, 8, 8)),
    (lambda: nn.AvgPool3d((1, 2, 2), ceil_mode=True), (1, 2, 3, 7, 7)),
    (lambda: nn.AdaptiveAvgPool1d(5), (2, 3, 17)),
    (lambda: nn.AdaptiveMaxPool1d(4, return_indices=True), (2, 3, 13)),
    (lambda: nn.AdaptiveAvgPool3d((2, None, 3)), (1, 2, 5, 6, 7)),
    (lambda: nn.AdaptiveMaxPool3d(2), (1, 2, 5, 6, 7)),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_layer_matches_the_module(case):
    make, shape = CASES[case]
    torch.manual_seed(case)
    module = make().eval()
    layer = getattr(cppconv, type(module).__name__).from_torch(module)
    x = make_rng("from_torch", case).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x))
    got = layer(x)
    if isinstance(expected, tuple):  # return_indices: the same flat indices
        np.testing.assert_allclose(got[0], expected[0].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got[1], expected[1].numpy())
    else:
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5)
    if hasattr(module, "weight"):  # copied: later changes to the module do not reach the layer
        with torch.no_grad():
            module.weight.add_(1.0)
        np.testing.assert_array_equal(layer(x), got)


def test_extra_settings_and_float64():
    module = nn.Conv2d(3, 5, 3, padding=1).double()
    layer = cppconv.Conv2d.from_torch(module, layout="NHWC", activation=("leaky_relu", 0.2))
    x = make_rng("from_torch-nhwc").standard_normal((2, 6, 7, 3))
    with torch.no_grad():
        expected = nn.functional.leaky_relu(module(torch.from_numpy(x).permute(0, 3, 1, 2)), 0.2)
    y = layer(x)
    assert y.dtype == np.float64 and layer.weight.dtype == np.float64
    np.testing.assert_allclose(y, expected.permute(0, 2, 3, 1).numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls, module, kwargs, error, message", [
    (cppconv.Conv2d, lambda: nn.Conv1d(3, 3, 3), {}, TypeError,
     "Conv2d.from_torch takes a torch.nn.Conv2d, got torch.nn.modules.conv.Conv1d"),
    (cppconv.MaxPool2d, lambda: nn.AvgPool2d(2), {}, TypeError, "takes a torch.nn.MaxPool2d"),
    (cppconv.Conv2d, lambda: "conv", {}, TypeError, "takes a torch.nn.Conv2d, got builtins.str"),
    (cppconv.Conv2d, lambda: nn.Conv2d(3, 3, 3), {"stride": 2}, TypeError, "the module sets stride"),
    (cppconv.Conv2d, lambda: nn.Conv2d(3, 3, 3).to(torch.bfloat16), {}, TypeError,
     "weight has dtype torch.bfloat16.*module.float"),
    (cppconv.Conv2d, lambda: nn.LazyConv2d(3, 3), {}, ValueError, "not initialised"),
    (cppconv.AvgPool2d, lambda: nn.AvgPool2d(2), {"activation": "relu"}, TypeError, "activation"),
])
def test_errors(cls, module, kwargs, error, message):
    with pytest.raises(error, match=message):
        cls.from_torch(module(), **kwargs)
