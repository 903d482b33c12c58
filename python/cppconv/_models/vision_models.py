"""The real vision CNNs of issue 15 as plain torch modules (random weights, no downloads; the
CPU torch here cannot load torchvision): ResNet-18/50, MobileNetV2, MobileNetV3-Small,
EfficientNet-B0, SqueezeNet 1.1, ShuffleNetV2 x1.0, GoogLeNet, DenseNet-121, RegNetX-400MF and
a U-Net, following torchvision's definitions layer for layer (the U-Net: Ronneberger et al.
with ConvTranspose and bilinear Resize up-sampling).  tests/test_onnx.py runs them at small
resolutions against torch and ONNX Runtime; bench/bench_networks.py at 224x224.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence, Tuple

from .onnx_networks import _torch


def _divisible(v: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible: the channel count rounded to a multiple of 8, never
    below 90 % of v."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _cbn(nn: Any, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: Any = "relu",
         eps: float = 1e-5) -> Any:
    """Conv (padding k // 2, no bias) + BatchNorm + activation (None for none)."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout, eps=eps)]
    if act is not None:
        layers.append({"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "silu": nn.SiLU}[act]())
    return nn.Sequential(*layers)


def _resnet(block: str, depths: Sequence[int], classes: int = 1000) -> Any:
    nn = _torch().nn
    expansion = 4 if block == "bottleneck" else 1

    class Basic(nn.Module):
        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            self.body = nn.Sequential(_cbn(nn, cin, width, 3, stride), _cbn(nn, width, width, 3, act=None))
            self.down = _cbn(nn, cin, width, 1, stride, act=None) if stride != 1 or cin != width else None

        def forward(self, x: Any) -> Any:
            return (self.body(x) + (x if self.down is None else self.down(x))).relu()

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            cout = width * 4
            self.body = nn.Sequential(_cbn(nn, cin, width, 1), _cbn(nn, width, width, 3, stride),
                                      _cbn(nn, width, cout, 1, act=None))
            self.down = _cbn(nn, cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None

        def forward(self, x: Any) -> Any:
            return (self.body(x) + (x if self.down is None else self.down(x))).relu()

    unit = Bottleneck if block == "bottleneck" else Basic
    layers: List[Any] = [_cbn(nn, 3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for stage, depth in enumerate(depths):
        width = 64 << stage
        for i in range(depth):
            layers.append(unit(cin, width, 2 if i == 0 and stage > 0 else 1))
            cin = width * expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def resnet18() -> Any:
    return _resnet("basic", (2, 2, 2, 2))


def resnet50() -> Any:
    return _resnet("bottleneck", (3, 4, 6, 3))


def mobilenet_v2() -> Any:
    nn = _torch().nn

    class Inverted(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int):
            super().__init__()
            mid = cin * expand
            layers = [_cbn(nn, cin, mid, 1, act="relu6")] if expand != 1 else []
            layers += [_cbn(nn, mid, mid, 3, stride, mid, act="relu6"), _cbn(nn, mid, cout, 1, act=None)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x: Any) -> Any:
            return x + self.body(x) if self.residual else self.body(x)

    layers: List[Any] = [_cbn(nn, 3, 32, 3, 2, act="relu6")]
    cin = 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)]:
        for i in range(n):
            layers.append(Inverted(cin, c, s if i == 0 else 1, t))
            cin = c
    layers += [_cbn(nn, cin, 1280, 1, act="relu6"), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
               nn.Linear(1280, 1000)]
    return nn.Sequential(*layers)


def _squeeze_excitation(nn: Any, channels: int, squeeze: int, act: Any, gate: Any) -> Any:
    class SE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, squeeze, 1), act(),
                                    nn.Conv2d(squeeze, channels, 1), gate())

        def forward(self, x: Any) -> Any:
            return x * self.fc(x)

    return SE()


def mobilenet_v3_small() -> Any:
    nn = _torch().nn

    class Block(nn.Module):
        def __init__(self, cin: int, k: int, mid: int, cout: int, se: bool, act: str, stride: int):
            super().__init__()
            layers = [_cbn(nn, cin, mid, 1, act=act)] if mid != cin else []
            layers.append(_cbn(nn, mid, mid, k, stride, mid, act=act))
            if se:
                layers.append(_squeeze_excitation(nn, mid, _divisible(mid // 4), nn.ReLU, nn.Hardsigmoid))
            layers.append(_cbn(nn, mid, cout, 1, act=None))
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x: Any) -> Any:
            return x + self.body(x) if self.residual else self.body(x)

    config = [(3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
              (5, 96, 40, True, "hardswish", 2), (5, 240, 40, True, "hardswish", 1), (5, 240, 40, True, "hardswish", 1),
              (5, 120, 48, True, "hardswish", 1), (5, 144, 48, True, "hardswish", 1),
              (5, 288, 96, True, "hardswish", 2),
              (5, 576, 96, True, "hardswish", 1), (5, 576, 96, True, "hardswish", 1)]
    layers: List[Any] = [_cbn(nn, 3, 16, 3, 2, act="hardswish", eps=1e-3)]
    cin = 16
    for k, mid, cout, se, act, stride in config:
        layers.append(Block(cin, k, mid, cout, se, act, stride))
        cin = cout
    layers += [_cbn(nn, cin, 576, 1, act="hardswish"), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(576, 1024),
               nn.Hardswish(), nn.Dropout(0.2), nn.Linear(1024, 1000)]
    return nn.Sequential(*layers)


def efficientnet_b0() -> Any:
    nn = _torch().nn

    class MBConv(nn.Module):
        def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
            super().__init__()
            mid = cin * expand
            layers = [_cbn(nn, cin, mid, 1, act="silu")] if expand != 1 else []
            layers += [_cbn(nn, mid, mid, k, stride, mid, act="silu"),
                       _squeeze_excitation(nn, mid, max(1, cin // 4), nn.SiLU, nn.Sigmoid),
                       _cbn(nn, mid, cout, 1, act=None)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x: Any) -> Any:  # (stochastic depth is the identity in eval mode)
            return x + self.body(x) if self.residual else self.body(x)

    layers: List[Any] = [_cbn(nn, 3, 32, 3, 2, act="silu")]
    cin = 32
    for expand, k, stride, cout, n in [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                                        (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]:
        for i in range(n):
            layers.append(MBConv(cin, cout, k, stride if i == 0 else 1, expand))
            cin = cout
    layers += [_cbn(nn, cin, 1280, 1, act="silu"), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
               nn.Linear(1280, 1000)]
    return nn.Sequential(*layers)


def squeezenet1_1() -> Any:
    nn = _torch().nn
    torch = _torch()

    class Fire(nn.Module):
        def __init__(self, cin: int, squeeze: int, e1: int, e3: int):
            super().__init__()
            self.s = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
            self.e1 = nn.Sequential(nn.Conv2d(squeeze, e1, 1), nn.ReLU())
            self.e3 = nn.Sequential(nn.Conv2d(squeeze, e3, 3, padding=1), nn.ReLU())

        def forward(self, x: Any) -> Any:
            s = self.s(x)
            return torch.cat([self.e1(s), self.e3(s)], 1)

    def pool() -> Any:
        return nn.MaxPool2d(3, 2, ceil_mode=True)

    return nn.Sequential(
        nn.Conv2d(3, 64, 3, 2), nn.ReLU(), pool(), Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), pool(),
        Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), pool(), Fire(256, 48, 192, 192), Fire(384, 48, 192, 192),
        Fire(384, 64, 256, 256), Fire(512, 64, 256, 256), nn.Dropout(0.5), nn.Conv2d(512, 1000, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten())


def shufflenet_v2() -> Any:
    nn = _torch().nn
    torch = _torch()

    class Unit(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            half = cout // 2
            self.stride = stride
            self.left = nn.Sequential(_cbn(nn, cin, cin, 3, stride, cin, act=None), _cbn(nn, cin, half, 1)) \
                if stride > 1 else None
            first = cin if stride > 1 else half
            self.right = nn.Sequential(_cbn(nn, first, half, 1), _cbn(nn, half, half, 3, stride, half, act=None),
                                       _cbn(nn, half, half, 1))

        def forward(self, x: Any) -> Any:
            if self.stride == 1:
                a, b = x.chunk(2, dim=1)
                y = torch.cat([a, self.right(b)], 1)
            else:
                y = torch.cat([self.left(x), self.right(x)], 1)
            n, c, h, w = y.shape
            return y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle

    layers: List[Any] = [_cbn(nn, 3, 24, 3, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 24
    for repeats, cout in [(4, 116), (8, 232), (4, 464)]:
        for i in range(repeats):
            layers.append(Unit(cin, cout, 2 if i == 0 else 1))
            cin = cout
    layers += [_cbn(nn, cin, 1024, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, 1000)]
    return nn.Sequential(*layers)


def googlenet() -> Any:
    nn = _torch().nn
    torch = _torch()

    def basic(cin: int, cout: int, k: int, stride: int = 1) -> Any:
        return _cbn(nn, cin, cout, k, stride, eps=1e-3)

    class Inception(nn.Module):
        # (torchvision's "5x5" branch is a 3x3 convolution; so is this one)
        def __init__(self, cin: int, c1: int, r3: int, c3: int, r5: int, c5: int, proj: int):
            super().__init__()
            self.b1 = basic(cin, c1, 1)
            self.b2 = nn.Sequential(basic(cin, r3, 1), basic(r3, c3, 3))
            self.b3 = nn.Sequential(basic(cin, r5, 1), basic(r5, c5, 3))
            self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), basic(cin, proj, 1))

        def forward(self, x: Any) -> Any:
            return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)

    def pool(k: int = 3) -> Any:
        return nn.MaxPool2d(k, 2, ceil_mode=True)

    return nn.Sequential(
        basic(3, 64, 7, 2), pool(), basic(64, 64, 1), basic(64, 192, 3), pool(),
        Inception(192, 64, 96, 128, 16, 32, 32), Inception(256, 128, 128, 192, 32, 96, 64), pool(),
        Inception(480, 192, 96, 208, 16, 48, 64), Inception(512, 160, 112, 224, 24, 64, 64),
        Inception(512, 128, 128, 256, 24, 64, 64), Inception(512, 112, 144, 288, 32, 64, 64),
        Inception(528, 256, 160, 320, 32, 128, 128), pool(2),
        Inception(832, 256, 160, 320, 32, 128, 128), Inception(832, 384, 192, 384, 48, 128, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(1024, 1000))


def densenet121() -> Any:
    nn = _torch().nn
    torch = _torch()
    growth, width = 32, 4

    class Dense(nn.Module):
        def __init__(self, cin: int):
            super().__init__()
            self.f = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, width * growth, 1, bias=False),
                                   nn.BatchNorm2d(width * growth), nn.ReLU(),
                                   nn.Conv2d(width * growth, growth, 3, 1, 1, bias=False))

        def forward(self, x: Any) -> Any:
            return torch.cat([x, self.f(x)], 1)

    layers: List[Any] = [_cbn(nn, 3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
    c = 64
    for i, n in enumerate((6, 12, 24, 16)):
        for _ in range(n):
            layers.append(Dense(c))
            c += growth
        if i < 3:
            layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2, 2)]
            c //= 2
    layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 1000)]
    return nn.Sequential(*layers)


def regnet_x_400mf() -> Any:
    nn = _torch().nn

    class XBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, group_width: int):
            super().__init__()
            self.body = nn.Sequential(_cbn(nn, cin, cout, 1), _cbn(nn, cout, cout, 3, stride, cout // group_width),
                                      _cbn(nn, cout, cout, 1, act=None))
            self.down = _cbn(nn, cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None

        def forward(self, x: Any) -> Any:
            return (self.body(x) + (x if self.down is None else self.down(x))).relu()

    layers: List[Any] = [_cbn(nn, 3, 32, 3, 2)]
    cin = 32
    for depth, width in [(1, 32), (2, 64), (7, 160), (12, 400)]:
        for i in range(depth):
            layers.append(XBlock(cin, width, 2 if i == 0 else 1, 16))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1000)]
    return nn.Sequential(*layers)


def unet() -> Any:
    """Four levels of two 3x3 convolutions; up-sampling by ConvTranspose 2x2/2 in the two lower
    levels and by bilinear Resize in the upper ones; skip connections concatenated."""
    nn = _torch().nn
    torch = _torch()
    F = torch.nn.functional

    def double(cin: int, cout: int) -> Any:
        return nn.Sequential(_cbn(nn, cin, cout, 3), _cbn(nn, cout, cout, 3))

    class UNet(nn.Module):
        def __init__(self, widths: Tuple[int, ...] = (32, 64, 128, 256, 512), classes: int = 2):
            super().__init__()
            self.down = nn.ModuleList([double(3, widths[0])] + [double(a, b) for a, b in zip(widths, widths[1:])])
            self.up = nn.ModuleList()
            self.merge = nn.ModuleList()
            for level, (a, b) in enumerate(zip(reversed(widths[1:]), reversed(widths[:-1]))):
                self.up.append(nn.ConvTranspose2d(a, b, 2, 2) if level < 2 else nn.Conv2d(a, b, 1))
                self.merge.append(double(2 * b, b))
            self.head = nn.Conv2d(widths[0], classes, 1)

        def forward(self, x: Any) -> Any:
            skips = []
            for i, block in enumerate(self.down):
                x = block(x if i == 0 else F.max_pool2d(x, 2))
                skips.append(x)
            skips.pop()
            for level, (up, merge) in enumerate(zip(self.up, self.merge)):
                if level < 2:
                    x = up(x)
                else:
                    x = up(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
                x = merge(torch.cat([x, skips.pop()], 1))
            return self.head(x)

    return UNet()


# name -> (constructor, the smallest input side length the tests use: it keeps every
# pooled map at least 1x1 where the full network expects 224)
ARCHITECTURES: Dict[str, Tuple[Callable[[], Any], int]] = {
    "resnet18": (resnet18, 64), "resnet50": (resnet50, 64), "mobilenet_v2": (mobilenet_v2, 64),
    "mobilenet_v3_small": (mobilenet_v3_small, 64), "efficientnet_b0": (efficientnet_b0, 64),
    "squeezenet1_1": (squeezenet1_1, 64), "shufflenet_v2": (shufflenet_v2, 64), "googlenet": (googlenet, 64),
    "densenet121": (densenet121, 64), "regnet_x_400mf": (regnet_x_400mf, 64), "unet": (unet, 64),
}


def build(name: str, size: int = 224) -> Tuple[Any, Tuple[int, ...]]:
    """(module in eval mode with random weights and BatchNorm statistics, input shape at batch 1)."""
    torch = _torch()
    torch.manual_seed(0)
    module = ARCHITECTURES[name][0]()
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return module.eval(), (1, 3, size, size)
