"""Uses the public API as the tests do; ``mypy --strict`` must accept it (tests/test_typing.py).

Not a test module itself (no ``test_`` prefix): it is only type-checked, and imported once
by test_typing.py to make sure it also runs.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np
import numpy.typing as npt

import cppconv
from cppconv import _native


def one_image() -> Tuple[int, ...]:
    image: npt.NDArray[np.float32] = np.arange(25, dtype=np.float32).reshape(5, 5)
    edge = np.array([[1, 0, -1]] * 3, np.float32)
    y: np.ndarray = cppconv.conv2d(image, edge, stride=2, padding=1)
    return y.shape


def volume_and_layer() -> np.ndarray:
    rgb = np.ones((3, 16, 16), np.float32)
    kernels = np.ones((8, 3, 3, 3), np.float32)
    bias = np.zeros(8, np.float32)
    maps = cppconv.conv2d(rgb, kernels, bias, padding="same", activation="relu", num_threads=1)
    layer = cppconv.Conv2d(kernels, bias, stride=(1, 1), padding=((1, 1), (1, 1)), groups=1, layout="NCHW")
    out = np.empty((1, 8, 16, 16), np.float32)
    result: np.ndarray = layer(rgb[None], out=out, num_threads=2)
    layer.weight = kernels * 2  # assignment is validated and repacked
    weight: np.ndarray = layer.weight
    assert weight.shape == kernels.shape
    plan: Dict[str, Any] = layer.explain((1, 3, 16, 16))
    assert plan["output_shape"] == (1, 8, 16, 16)
    total: np.ndarray = maps + result[0]
    return total


def helpers() -> List[str]:
    size: int = cppconv.conv_output_size(5, 3, stride=1, padding=1, dilation=1)
    details: Dict[str, Any] = cppconv.explain((1, 3, 32, 32), (8, 3, 3, 3), padding=1)
    threads: int = cppconv.get_num_threads()
    cppconv.set_num_threads(threads)
    info: Dict[str, Any] = cppconv.info()
    version: str = cppconv.__version__
    isas: List[str] = _native.available_isas()
    return [str(size), str(details["algorithm"]), str(info["isa"]), version, *isas]


def pools_and_options() -> Tuple[int, ...]:
    x = np.ones((1, 3, 8, 8), np.float32)
    pooled: npt.NDArray[Any] = cppconv.max_pool2d(x, 2)  # return_indices=False: an array
    values, indices = cppconv.max_pool2d(x, 2, return_indices=True)  # True: a pair
    adaptive, where = cppconv.adaptive_max_pool1d(x[0], 3, True)
    smoothed = cppconv.conv2d(x, np.ones((2, 3, 3, 3), np.float32), padding="same", padding_mode="constant",
                              padding_value=1.0, activation=("leaky_relu", 0.2), layout="NCHW", precision="high")
    layer: cppconv.MaxPool2d = cppconv.MaxPool2d(2, layout="NHWC")
    assert layer.layout == "NHWC"
    return (pooled + values).shape + indices.shape + adaptive.shape + where.shape + smoothed.shape


def main() -> None:
    assert pools_and_options()[:4] == (1, 3, 4, 4)
    assert one_image() == (3, 3)
    assert volume_and_layer().shape == (8, 16, 16)
    assert helpers()[0] == "5"


if __name__ == "__main__":
    main()
