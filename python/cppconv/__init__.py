"""cppconv: fast 2-D convolution and pooling on NumPy arrays, with a C++/OpenMP/SIMD core.

>>> import numpy as np, cppconv
>>> image = np.random.rand(3, 64, 64).astype(np.float32)       # C, H, W
>>> kernels = np.random.rand(8, 3, 3, 3).astype(np.float32)    # 8 kernels -> 8 feature maps
>>> cppconv.conv2d(image, kernels, padding="same").shape
(8, 64, 64)
"""

from __future__ import annotations

from typing import Any, Dict

from . import _native
from . import onnx as onnx  # cppconv.onnx.load; the onnx package is imported only when a model is loaded
from ._buffers import release_buffers
from ._conv import Conv1d, Conv2d, Conv3d, conv1d, conv2d, conv3d, conv_output_size, explain
from ._conv_transpose import (
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
    conv_transpose_output_size,
)
from ._network import Network
from ._pool import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool3d,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_avg_pool3d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    adaptive_max_pool3d,
    avg_pool1d,
    avg_pool2d,
    avg_pool3d,
    global_avg_pool1d,
    global_avg_pool2d,
    global_avg_pool3d,
    max_pool1d,
    max_pool2d,
    max_pool3d,
    pool_output_size,
)
from ._quant import QConv1d, QConv2d, QConv3d, dequantize_linear, qconv1d, qconv2d, qconv3d, quantize_linear
from ._signal import convolve2d, correlate2d
from ._tuning import get_tuning, set_tuning
from ._version import __version__  # written by the build from git (setuptools-scm)


def _check_isa_cap() -> None:
    """A CPPCONV_MAX_ISA that names no ISA available here caps nothing: say so, once."""
    import os
    import warnings

    cap = os.environ.get("CPPCONV_MAX_ISA")
    available = list(_native.max_isa_levels())
    if cap and cap not in available:
        warnings.warn(
            f"CPPCONV_MAX_ISA={cap!r} names no ISA or feature level available on this machine "
            f"({', '.join(available)}); "
            f"it caps nothing, so cppconv uses {_native.selected_isa()}",
            RuntimeWarning,
            stacklevel=2,
        )


_check_isa_cap()


def set_num_threads(n: int) -> None:
    """Set how many threads cppconv's kernels use, process-wide.

    First wins: a call's ``num_threads=`` (:func:`conv2d`, a :class:`Conv2d` call), this
    setting (``threadpoolctl.threadpool_limits(n)`` makes it too), OpenMP's setting
    (``OMP_NUM_THREADS``, ``threadpool_limits(n, user_api="openmp")``), the CPUs this process
    may use.  One thread in a process forked after cppconv was loaded.

    >>> import cppconv
    >>> before = cppconv.get_num_threads()
    >>> cppconv.set_num_threads(1); cppconv.get_num_threads()
    1
    >>> cppconv.set_num_threads(before)
    """
    from ._args import thread_count

    n = thread_count(n, "n")
    if n == 0:
        raise TypeError("n must be an integer, got None")
    _native.set_num_threads(n)


def get_num_threads() -> int:
    """How many threads cppconv's kernels use (at most; small problems use fewer): the setting,
    within the calling thread's cap (a network's lane, a Dask task; see ``cppconv.onnx.load``).

    >>> import cppconv
    >>> cppconv.get_num_threads() >= 1
    True
    """
    return int(_native.get_num_threads())


def set_float32_precision(mode: str) -> None:
    """Set the process-wide float32 precision mode, as ``torch.set_float32_matmul_precision``.

    ``"highest"`` (the default): every float32 convolution stays within the direct sum's
    rounding bound, ``1e-5 * sum |w| |x|`` per output.  ``"high"``: 3x3 stride-1 convolutions
    may also run Winograd F(2x2, 3x3), about 1.5-2x faster, whose error scales with the
    output's 4x4 input patch and the largest weights instead (README, "Guarantees").
    A ``precision=`` argument of a call or layer overrides this setting.

    >>> import cppconv
    >>> cppconv.set_float32_precision("high"); cppconv.get_float32_precision()
    'high'
    >>> cppconv.set_float32_precision("highest")
    """
    from ._args import precision_code

    _native.set_float32_precision(precision_code(mode, "mode", allow_none=False))


def get_float32_precision() -> str:
    """The process-wide float32 precision mode: ``"highest"`` or ``"high"``.

    >>> import cppconv
    >>> cppconv.get_float32_precision()
    'highest'
    """
    from ._args import code_word

    return str(code_word(_native.PRECISIONS, _native.get_float32_precision()))


def info() -> Dict[str, Any]:
    """Version, the ISA in use, the ISAs and CPU features available on this machine, threads
    and OpenMP.

    ``default_isa`` is the one chosen at import: the strongest this CPU runs, capped by the
    ``CPPCONV_MAX_ISA`` environment variable (``avx512``, ``avx2`` or ``baseline``).
    ``cpu_features`` are the extensions some AVX-512 kernels use (``avx512_vnni``,
    ``avx512_bf16``, ``amx_int8``, ``amx_bf16``); ``CPPCONV_MAX_ISA`` set to an ISA turns them
    all off, set to a feature level (``avx512_vnni``, ``avx512_bf16``, ``amx``) keeps those up
    to it.

    >>> import cppconv
    >>> sorted(cppconv.info())
    ['available_isas', 'cpu_features', 'default_isa', 'isa', 'openmp', 'threads', 'version']
    """
    return {
        "version": __version__,
        "isa": _native.selected_isa(),
        "default_isa": _native.default_isa(),
        "available_isas": list(_native.available_isas()),
        "cpu_features": list(_native.cpu_features()),
        "threads": get_num_threads(),
        "openmp": bool(_native.openmp()),
    }


__all__ = [
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool3d",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "Network",
    "QConv1d",
    "QConv2d",
    "QConv3d",
    "__version__",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_output_size",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "conv_transpose_output_size",
    "convolve2d",
    "correlate2d",
    "dequantize_linear",
    "explain",
    "get_float32_precision",
    "get_num_threads",
    "get_tuning",
    "global_avg_pool1d",
    "global_avg_pool2d",
    "global_avg_pool3d",
    "info",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "pool_output_size",
    "qconv1d",
    "qconv2d",
    "qconv3d",
    "quantize_linear",
    "release_buffers",
    "set_float32_precision",
    "set_num_threads",
    "set_tuning",
]

# threadpoolctl sees and limits cppconv's threads (registered once threadpoolctl is imported).
from . import _threadpool  # noqa: E402

_threadpool.install()
