"""Small vision CNNs as plain torch modules (random weights, no downloads), for the ONNX tests
and bench/bench_networks.py: the blocks of ResNet, MobileNetV2, MobileNetV3 (SE, hard-swish),
SqueezeNet, ShuffleNet, DenseNet, GoogLeNet (Inception), a U-Net, and 1-D and 3-D
networks, at sizes that run in milliseconds."""

from __future__ import annotations

import io
import warnings
from typing import Any, Callable, Dict, Tuple


def _torch() -> Any:
    import torch

    return torch


def build(name: str) -> Tuple[Any, Tuple[int, ...]]:
    """(module in eval mode with random weights and BatchNorm statistics, input shape at batch 1)."""
    torch = _torch()
    torch.manual_seed(0)
    module, shape = NETWORKS[name]()
    for m in module.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            # Statistics other than (0, 1), so folding them into the weights is tested.
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return module.eval(), shape


def export(module: Any, shape: Tuple[int, ...], opset: int = 17, fold: bool = True) -> bytes:
    """The module as ONNX bytes (TorchScript exporter), with a free batch size; fold=False
    keeps the BatchNormalization nodes and shape arithmetic that torch would fold."""
    torch = _torch()
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice: chosen on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (torch.randn(*shape),), buffer, dynamo=False, opset_version=opset,
                          do_constant_folding=fold, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return buffer.getvalue()


def _bn_relu(nn: Any, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: Any = None) -> Any:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         act if act is not None else nn.ReLU())


def resnet() -> Tuple[Any, Tuple[int, ...]]:
    nn = _torch().nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.a = _bn_relu(nn, cin, cout, 3, stride)
            self.b = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.down = None if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: Any) -> Any:
            skip = x if self.down is None else self.down(x)
            return (self.b(self.a(x)) + skip).relu()

    net = nn.Sequential(
        nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        Block(16, 16, 1), Block(16, 32, 2), Block(32, 32, 1), Block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    return net, (1, 3, 64, 64)


def mobilenet_v2() -> Tuple[Any, Tuple[int, ...]]:
    nn = _torch().nn

    class Inverted(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int):
            super().__init__()
            mid = cin * expand
            self.body = nn.Sequential(
                _bn_relu(nn, cin, mid, 1, act=nn.ReLU6()), _bn_relu(nn, mid, mid, 3, stride, mid, act=nn.ReLU6()),
                nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.residual = stride == 1 and cin == cout

        def forward(self, x: Any) -> Any:
            y = self.body(x)
            return x + y if self.residual else y

    net = nn.Sequential(_bn_relu(nn, 3, 16, 3, 2, act=nn.ReLU6()), Inverted(16, 16, 1, 1), Inverted(16, 24, 2, 4),
                        Inverted(24, 24, 1, 4), Inverted(24, 32, 2, 4), _bn_relu(nn, 32, 64, 1, act=nn.ReLU6()),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, 10))
    return net, (1, 3, 64, 64)


def se_hardswish() -> Tuple[Any, Tuple[int, ...]]:
    """MobileNetV3-Small's block: depthwise conv with hard-swish, squeeze-and-excitation with
    hard-sigmoid, and an EfficientNet-style SiLU conv."""
    nn = _torch().nn

    class SE(nn.Module):
        def __init__(self, c: int):
            super().__init__()
            self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // 4, 1), nn.ReLU(),
                                    nn.Conv2d(c // 4, c, 1),
                                    nn.Hardsigmoid())

        def forward(self, x: Any) -> Any:
            return x * self.fc(x)

    net = nn.Sequential(_bn_relu(nn, 3, 16, 3, 2, act=nn.Hardswish()),
                        _bn_relu(nn, 16, 16, 3, 1, 16, act=nn.Hardswish()),
                        SE(16), _bn_relu(nn, 16, 24, 1, act=nn.SiLU()), _bn_relu(nn, 24, 24, 5, 2, 24, act=nn.SiLU()),
                        SE(24), nn.Conv2d(24, 32, 1), nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(32, 10), nn.Softmax(dim=1))
    return net, (1, 3, 48, 48)


def squeezenet() -> Tuple[Any, Tuple[int, ...]]:
    nn = _torch().nn
    torch = _torch()

    class Fire(nn.Module):
        def __init__(self, cin: int, squeeze: int, expand: int):
            super().__init__()
            self.s = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
            self.e1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
            self.e3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

        def forward(self, x: Any) -> Any:
            s = self.s(x)
            return torch.cat([self.e1(s), self.e3(s)], 1)

    net = nn.Sequential(nn.Conv2d(3, 32, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(32, 8, 16),
                        Fire(32, 8, 16), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(32, 16, 32),
                        nn.Dropout(0.5), nn.Conv2d(64, 10, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.LogSoftmax(dim=1))
    return net, (1, 3, 63, 63)


def shufflenet() -> Tuple[Any, Tuple[int, ...]]:
    nn = _torch().nn
    torch = _torch()

    class Unit(nn.Module):
        def __init__(self, c: int):
            super().__init__()
            half = c // 2
            self.branch = nn.Sequential(_bn_relu(nn, half, half, 1),
                                        nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False),
                                        nn.BatchNorm2d(half), _bn_relu(nn, half, half, 1))

        def forward(self, x: Any) -> Any:
            a, b = x.chunk(2, dim=1)
            y = torch.cat([a, self.branch(b)], 1)
            n, c, h, w = y.shape
            return y.view(-1, 2, c // 2, h, w).transpose(1, 2).reshape(-1, c, h, w)  # channel shuffle

    net = nn.Sequential(_bn_relu(nn, 3, 24, 3, 2), nn.MaxPool2d(3, 2, 1), Unit(24), Unit(24),
                        nn.Conv2d(24, 48, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 10))
    return net, (1, 3, 48, 48)


def unet() -> Tuple[Any, Tuple[int, ...]]:
    nn = _torch().nn
    torch = _torch()
    F = torch.nn.functional

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.e1, self.e2 = _bn_relu(nn, 3, 8), _bn_relu(nn, 8, 16)
            self.mid = _bn_relu(nn, 16, 32)
            self.up2 = nn.ConvTranspose2d(32, 16, 2, 2)
            self.d2 = _bn_relu(nn, 32, 16)
            self.d1 = _bn_relu(nn, 24, 8)
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x: Any) -> Any:
            a = self.e1(x)
            b = self.e2(F.max_pool2d(a, 2))
            m = self.mid(F.avg_pool2d(b, 2))
            u2 = self.d2(torch.cat([self.up2(m), b], 1))
            u1 = self.d1(torch.cat([F.interpolate(u2, scale_factor=2, mode="bilinear", align_corners=False), a], 1))
            return torch.sigmoid(F.interpolate(self.head(u1), scale_factor=2, mode="nearest"))

    return UNet(), (1, 3, 32, 32)


def densenet() -> Tuple[Any, Tuple[int, ...]]:
    nn = _torch().nn
    torch = _torch()

    class Dense(nn.Module):
        def __init__(self, cin: int, growth: int):
            super().__init__()
            self.f = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 2 * growth, 1, bias=False),
                                   nn.BatchNorm2d(2 * growth), nn.ReLU(),
                                   nn.Conv2d(2 * growth, growth, 3, 1, 1, bias=False))

        def forward(self, x: Any) -> Any:
            return torch.cat([x, self.f(x)], 1)

    transition = nn.Sequential(nn.BatchNorm2d(40), nn.ReLU(), nn.Conv2d(40, 20, 1, bias=False), nn.AvgPool2d(2, 2))
    net = nn.Sequential(_bn_relu(nn, 3, 16, 3, 2), Dense(16, 8), Dense(24, 8), Dense(32, 8), transition,
                        Dense(20, 8), nn.BatchNorm2d(28), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(28, 10))
    return net, (1, 3, 32, 32)


def inception() -> Tuple[Any, Tuple[int, ...]]:
    """GoogLeNet's stem and Inception blocks: four branches concatenated, one of them a
    stride-1 max pool; a ceil-mode pool between.  (torch exports LocalResponseNorm as a
    decomposition, not LRN: the hand-built graphs of test_onnx.py test LRN.)"""
    nn = _torch().nn
    torch = _torch()

    class Block(nn.Module):
        def __init__(self, cin: int):
            super().__init__()
            self.b1 = _bn_relu(nn, cin, 8, 1)
            self.b3 = nn.Sequential(_bn_relu(nn, cin, 8, 1), _bn_relu(nn, 8, 12, 3))
            self.b5 = nn.Sequential(_bn_relu(nn, cin, 4, 1), _bn_relu(nn, 4, 6, 3), _bn_relu(nn, 6, 6, 3))
            self.pool = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), _bn_relu(nn, cin, 6, 1))

        def forward(self, x: Any) -> Any:
            return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.pool(x)], 1)

    net = nn.Sequential(nn.Conv2d(3, 16, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                        Block(16), nn.AvgPool2d(3, 2, 1, ceil_mode=True),
                        Block(32), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(), nn.Linear(32, 10))
    return net, (1, 3, 56, 56)


def conv1d() -> Tuple[Any, Tuple[int, ...]]:
    """A 1-D (audio-like) network: Conv1d with BatchNorm and ReLU, strided and dilated, pools."""
    nn = _torch().nn
    net = nn.Sequential(nn.Conv1d(2, 16, 9, 2, 4, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(3, 2, 1),
                        nn.Conv1d(16, 16, 3, 1, 2, dilation=2, groups=4), nn.BatchNorm1d(16), nn.Tanh(),
                        nn.ConvTranspose1d(16, 8, 4, 2, 1), nn.ReLU(), nn.AvgPool1d(2), nn.AdaptiveAvgPool1d(1),
                        nn.Flatten(), nn.Linear(8, 4))
    return net, (1, 2, 200)


def conv3d() -> Tuple[Any, Tuple[int, ...]]:
    """A 3-D (video-like) network: Conv3d with BatchNorm and ReLU6, a max pool, a transposed
    convolution back up, and a residual."""
    nn = _torch().nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv3d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm3d(8), nn.ReLU6())
            self.down = nn.Sequential(nn.MaxPool3d(2), nn.Conv3d(8, 8, 3, 1, 1), nn.ReLU())
            self.up = nn.ConvTranspose3d(8, 8, 2, 2)
            self.head = nn.Conv3d(8, 2, 1)

        def forward(self, x: Any) -> Any:
            a = self.stem(x)
            return self.head(a + self.up(self.down(a)))

    return Net(), (1, 3, 4, 12, 12)


NETWORKS: Dict[str, Callable[[], Tuple[Any, Tuple[int, ...]]]] = {
    "resnet": resnet, "mobilenet_v2": mobilenet_v2, "se_hardswish": se_hardswish, "squeezenet": squeezenet,
    "shufflenet": shufflenet, "unet": unet, "densenet": densenet, "inception": inception, "conv1d": conv1d,
    "conv3d": conv3d,
}
