"""Benchmark cppconv.conv2d against NumPy, PyTorch, ONNX Runtime and SciPy.

Usage (the three are the same program; the suite ships inside the package)::

    cppconv bench [--quick] [--threads N] [--layers NAME,...] [--dtype f32|bf16|int8]
                  [--peers numpy,loop,torch,onnxruntime,scipy]
                  [--repeat R] [--json FILE] [--markdown FILE] [--plot FILE.png] [--list]
    python -m cppconv bench ...
    python bench/bench_conv.py ...      (from a source checkout; also records its git commit)
    cppconv bench --networks [NAMES] [--threads N] [--batches 1,16] [--quick]
                                        (whole networks instead: cppconv._netbench)

Progress goes to stderr as a text progress bar; the table goes to stdout.  ``--plot``
draws GFLOP/s per layer and library as a bar chart (needs matplotlib: the ``plot`` extra).

Methodology
-----------
* Layer suite: single float32 convolutions in NCHW taken from common networks (ResNet,
  MobileNet-style depthwise, ResNeXt grouped, dilated, batch 16) plus two single-channel
  image filters, and sanity rows: batch-64 depthwise layers on 1x1 planes padded and dilated
  300, 600 and 1000, whose windows skip nearly all they span (1.2 MFLOP each), which check that
  a call costs in proportion to its work and not to its padding; they are left out of the
  geometric means, and a run warns when one takes cppconv longer than SANITY_LIMIT_S.
  ``--quick`` skips the batch-16 and batch-64 layers and times for less long.
  Every layer has a bias, except ``seed5x5``, which uses cppconv's 2-D form
  (x of shape (H, W), weight (kh, kw)); its peers get the equivalent 4-D arrays.
* Precision: ``cppconv`` and ``Conv2d`` run in the default float32 precision mode,
  ``"highest"`` (the direct kernels); ``conv2d high`` and ``Conv2d high`` pass
  ``precision="high"`` (Winograd for 3x3 stride-1 layers) on the layers where that mode
  chooses another algorithm, and are ``n/a`` elsewhere (their speedups then count the
  ``"highest"`` time, which is what that mode runs there).
* Libraries ("runners"): each runner turns a layer and its data into a zero-argument
  callable that does one complete convolution call (output allocation included) and
  returns the result.  Set-up that a user would do once (building an ONNX session,
  making torch tensors with ``torch.from_numpy``, cppconv's ``Conv2d`` prepacking,
  reshaping the NumPy weight) is outside the timed call.

  - ``cppconv``: ``cppconv.conv2d(x, w, b, stride=, padding=, dilation=, groups=)``.
  - ``Conv2d``: the prepacked layer ``cppconv.Conv2d(w, b, ...)`` called as
    ``layer(x, out=out)`` with a preallocated ``out``: the steady-state inference path.
  - ``conv2d NHWC`` / ``Conv2d NHWC``: the same two with ``layout="NHWC"`` on x transposed
    to (N, H, W, C) once, outside the timed call (n/a for the 2-D ``seed5x5``): the twins of
    ``torch_cl``, as ``cppconv``/``Conv2d`` (NCHW) are of ``torch``.
  - ``numpy``: im2col + GEMM in plain NumPy: ``np.pad``, ``sliding_window_view`` over the
    padded input (stride and dilation by slicing the window view), one copy into
    (N, groups, C/groups*kh*kw, OH*OW) columns and one batched ``np.matmul`` (one GEMM
    per image and group), which writes NCHW directly; then the bias.  Skipped (n/a), like
    ``loop``, when the padded input would take more than PAD_LIMIT_BYTES.
  - ``loop``: the textbook vectorised loop over kernel taps: for each (i, j) accumulate
    W[:, :, i, j] @ (shifted, strided slice of the padded input).  Skipped (n/a) when
    one call is estimated (from one timed tap) to take more than 2 s.
  - ``torch``/``torch_cl``: ``torch.nn.functional.conv2d`` on NCHW-contiguous and on
    ``channels_last`` tensors, under ``torch.inference_mode()``.
  - ``onnxruntime``: a one-node ``Conv`` model, CPU provider, intra-op threads = T,
    inter-op threads = 1, ORT_SEQUENTIAL, default (full) graph optimisation.
  - ``scipy``: ``scipy.signal.correlate2d`` / ``scipy.ndimage.correlate`` on the
    single-channel layers only (single-threaded by design).
* ``--dtype bf16``: x and the weight are ml_dtypes' bfloat16 (the bias float32), the result
  bfloat16.  The columns are cppconv's (``cppconv``, ``Conv2d``, the "high" pair), ``Conv2d
  f32`` (the float32 layer on the same values, for the cost of the bfloat16 conversions),
  and PyTorch's bfloat16 ``torch``/``torch_cl`` (bias in bfloat16, as PyTorch needs); the
  other peers compute in float32 only and are left out; ``best fw`` is the better torch
  layout.  Outputs are compared with ``rtol = atol / max|ref| = 1e-2`` (bfloat16 keeps 8
  significant bits).  Needs ml_dtypes (and torch for the peers).
* ``--dtype int8``: the same values quantized as a quantized CNN's QLinearConv has them (uint8
  x with zero point 128, int8 weights with symmetric per-channel scales, int32 bias); the
  result uint8.  The columns are cppconv's ``qconv2d`` (``cppconv``) and ``QConv2d``
  (``Conv2d``) in both layouts, ``Conv2d f32`` (the float32 layer on the dequantized values,
  for int8's gain over float32) and ONNX Runtime's ``QLinearConv`` (``ort``, the ``best fw``);
  GF/s count integer operations alike.  Outputs may differ from ONNX Runtime's by one step at
  rounding ties.
* Threads: every library gets the same count T (default ``cppconv.get_num_threads()``;
  ``--threads`` sets it through ``cppconv.set_num_threads``, ``torch.set_num_threads``,
  the ORT session options and, when threadpoolctl is installed, NumPy's BLAS).
  Environment variables are not touched.
* Timing: per library and layer, warm up with at least 2 calls and at least 0.2 s, then
  take R samples (default: as many as fit in about 1 s, clamped to [5, 200];
  ``--repeat`` fixes R).  Each sample times one call with ``time.perf_counter``, or a
  batch of calls divided by the batch size when one call is shorter than 200 us.  The
  garbage collector is off while sampling.  All libraries of a layer are warmed up
  first, then sampled round-robin in ``--rounds`` blocks (default 3), each block after
  one untimed call, so that a burst of background load is shared rather than landing on
  one library.  The reported time is the median sample;
  GFLOP/s = 2*N*K*OH*OW*(C/groups)*kh*kw / time.  Record results on an idle machine:
  OpenMP thread pools degrade badly when another process competes for the cores.
* Correctness: each library's output is compared once per layer with cppconv's (or with
  the NumPy runner's when cppconv cannot run the layer) using
  ``np.allclose(out, ref, rtol=1e-3, atol=1e-3 * max|ref|)``.  A mismatch is printed
  loudly, marked with ``!`` in the table, and makes the script exit with status 1.
  A ``~`` after a GFLOP/s value marks an unsteady timing: the interquartile ratio
  q75/q25 of its samples exceeds 1.5 (the JSON has each timing's median, min and quartiles).
* Speedups are cppconv.conv2d's median time versus numpy, loop, and the best of
  torch / torch_cl / onnxruntime, plus the prepacked Conv2d layer versus that best
  framework (like for like with onnxruntime, which prepacks weights when the session is
  built); and each layout against its twin: cppconv NCHW (conv2d and Conv2d) versus
  ``torch``, cppconv NHWC versus ``torch_cl``.  The summary gives their geometric means.
* Peak: before the layers, ``cppconv._native.fma_peak_gflops(T)`` measures the float32
  multiply-add rate of the selected ISA's vectors on the T threads (independent FMA chains
  in registers, best round of about 0.5 s); ``% peak`` is cppconv.conv2d's GFLOP/s against
  it.  Winograd layers count the direct convolution's multiply-adds, so theirs can pass 100.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._conv import conv_output_size
from ._models.vision_models import ARCHITECTURES

# --------------------------------------------------------------------------------------
# Layers


@dataclass(frozen=True)
class Layer:
    """One float32 NCHW convolution: x (n, c, h, w) * weight (k, c/groups, kh, kw)."""

    name: str
    n: int
    c: int
    h: int
    w: int
    k: int
    kh: int
    kw: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    two_d: bool = False  # cppconv gets 2-D x (h, w) and 2-D weight (kh, kw), no bias
    sanity: bool = False  # checks cost, not speed: left out of the geometric means

    @property
    def bias(self) -> bool:
        return not self.two_d

    @property
    def batched(self) -> bool:
        return self.n > 1

    @property
    def out_hw(self) -> Tuple[int, int]:
        settings = (self.stride, self.padding, self.dilation)
        return conv_output_size(self.h, self.kh, *settings), conv_output_size(self.w, self.kw, *settings)

    @property
    def x_shape(self) -> Tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w)

    @property
    def w_shape(self) -> Tuple[int, int, int, int]:
        return (self.k, self.c // self.groups, self.kh, self.kw)

    @property
    def out_shape(self) -> Tuple[int, int, int, int]:
        return (self.n, self.k, *self.out_hw)

    @property
    def flops(self) -> int:
        oh, ow = self.out_hw
        return 2 * self.n * self.k * oh * ow * (self.c // self.groups) * self.kh * self.kw

    @property
    def conv_kwargs(self) -> Dict[str, int]:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def describe(self) -> str:
        s = f"{self.n}x{self.c}x{self.h}x{self.w} -> {self.k}, {self.kh}x{self.kw}"
        extras = [f"s{self.stride}" if self.stride > 1 else "", f"p{self.padding}" if self.padding else "",
                  f"d{self.dilation}" if self.dilation > 1 else "", f"g{self.groups}" if self.groups > 1 else ""]
        return s + "".join(" " + e for e in extras if e)


LAYERS: List[Layer] = [
    Layer("seed5x5", 1, 1, 5, 5, 1, 3, 3, two_d=True),
    Layer("image512", 1, 1, 512, 512, 1, 3, 3, padding=1),
    Layer("resnet_conv1", 1, 3, 224, 224, 64, 7, 7, stride=2, padding=3),
    Layer("resnet_3x3_64@56", 1, 64, 56, 56, 64, 3, 3, padding=1),
    Layer("resnet_3x3_128@28", 1, 128, 28, 28, 128, 3, 3, padding=1),
    Layer("resnet_3x3_256@14", 1, 256, 14, 14, 256, 3, 3, padding=1),
    Layer("resnet_3x3_512@7", 1, 512, 7, 7, 512, 3, 3, padding=1),
    Layer("1x1_256to64@56", 1, 256, 56, 56, 64, 1, 1),
    Layer("1x1_64to256@56", 1, 64, 56, 56, 256, 1, 1),
    Layer("1x1_512to1024_s2@28", 1, 512, 28, 28, 1024, 1, 1, stride=2),
    Layer("dw_144@56", 1, 144, 56, 56, 144, 3, 3, padding=1, groups=144),
    Layer("dw_384@14_s2", 1, 384, 14, 14, 384, 3, 3, stride=2, padding=1, groups=384),
    Layer("resnext_128@28_g32", 1, 128, 28, 28, 128, 3, 3, padding=1, groups=32),
    Layer("dilated_256@28_d2", 1, 256, 28, 28, 256, 3, 3, padding=2, dilation=2),
    Layer("b16_3x3_64@56", 16, 64, 56, 56, 64, 3, 3, padding=1),
    Layer("b16_3x3_256@14", 16, 256, 14, 14, 256, 3, 3, padding=1),
    Layer("resnet_7x7_512@7", 1, 512, 7, 7, 512, 7, 7, padding=3),
] + [
    Layer(f"dw_1024@1_p{d}_d{d}", 64, 1024, 1, 1, 1024, 3, 3, padding=d, dilation=d, groups=1024, sanity=True)
    for d in (300, 600, 1000)
]

# A sanity row that takes cppconv longer than this has a cost out of proportion to its work.
SANITY_LIMIT_S = 0.5


@dataclass
class LayerData:
    """The arrays of one layer: 4-D NCHW x, weight, bias (or None)."""

    x: np.ndarray
    w: np.ndarray
    b: Optional[np.ndarray]
    # dtype "int8": QLinearConv's other operands (x_scale, x_zero_point, w_scale, w_zero_point,
    # y_scale, y_zero_point), with x uint8, w int8 and b int32 above.
    quant: Optional[Dict[str, Any]] = None

    @classmethod
    def make(cls, layer: Layer, seed: int = 0, dtype: str = "f32") -> LayerData:
        """float32 data; with dtype "bf16" x and the weight in bfloat16 (the bias float32); with
        "int8" the same values quantized as a QLinearConv layer of a quantized CNN has them."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(layer.x_shape, dtype=np.float32)
        fan_in = (layer.c // layer.groups) * layer.kh * layer.kw
        w = rng.standard_normal(layer.w_shape, dtype=np.float32) / np.float32(math.sqrt(fan_in))
        b = (0.1 * rng.standard_normal(layer.k, dtype=np.float32)) if layer.bias else None
        if dtype == "bf16":
            bfloat16 = importlib.import_module("ml_dtypes").bfloat16  # the benchmark's option, not the package's
            x, w = x.astype(bfloat16), w.astype(bfloat16)
        if dtype == "int8":
            return cls.quantized(x, w, b)
        return cls(x, w, b)

    @classmethod
    def quantized(cls, x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray]) -> LayerData:
        """uint8 activations (x within +-4 sigma, zero point 128), int8 weights with symmetric
        per-output-channel scales, the bias in int32 at x_scale * w_scale, and the output scaled
        for +-6 (the float outputs have unit variance)."""
        x_scale, x_zero = np.float32(8.0 / 255), np.uint8(128)
        w_scale = (np.abs(w).reshape(len(w), -1).max(axis=1) / 127).astype(np.float32)
        w_scale[w_scale == 0] = 1
        xq = np.clip(np.rint(x / x_scale) + 128, 0, 255).astype(np.uint8)
        wq = np.clip(np.rint(w / w_scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
        bq = None if b is None else np.rint(b / (x_scale * w_scale)).astype(np.int32)
        quant = dict(x_scale=x_scale, x_zero_point=x_zero, w_scale=w_scale, w_zero_point=np.zeros(len(w), np.int8),
                     y_scale=np.float32(12.0 / 255), y_zero_point=np.uint8(128))
        return cls(xq, wq, bq, quant)

    def qconv_args(self, w: Optional[np.ndarray] = None) -> Tuple[Any, ...]:
        """qconv2d's / QConv2d's positional operands after x (the weight `w` if given)."""
        q = self.quant or {}
        return (q["x_scale"], q["x_zero_point"], self.w if w is None else w, q["w_scale"], q["w_zero_point"],
                q["y_scale"], q["y_zero_point"], self.b)


# --------------------------------------------------------------------------------------
# Runners: make(layer, data, threads) -> zero-argument callable returning the output


class Skip(Exception):
    """A runner does not apply to a layer (the message says why)."""


Runner = Callable[[Layer, LayerData, int], Callable[[], Any]]


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - an optional peer that fails to import (not only ImportError) is absent
        return None


def _cppconv_has_api(cppconv: Any) -> bool:
    return cppconv is not None and hasattr(cppconv, "conv2d")


def _cppconv_call(layer: Layer, d: LayerData, precision: str) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray],
                                                                       Dict[str, Any]]:
    """cppconv's x, weight, bias and keywords for a layer in a precision mode (the 2-D form for a
    two_d layer); Skip where "high" would choose the same algorithm as "highest" (its column
    would time the same code again)."""
    import cppconv

    kw: Dict[str, Any] = dict(layer.conv_kwargs)
    if precision != "highest":
        if not hasattr(cppconv, "set_float32_precision"):
            raise Skip("no precision modes in this cppconv")
        info = explain_layer(layer, "high") or {}
        if info.get("algorithm") == (explain_layer(layer, "highest") or {}).get("algorithm"):
            raise Skip("same algorithm as precision='highest'")
        kw["precision"] = precision
    if layer.two_d:
        kw.pop("groups")
        return d.x[0, 0], d.w[0, 0], None, kw
    return d.x, d.w, d.b, kw


def _int8_runner(layer: Layer, d: LayerData, precision: str, layer_class: bool, layout: str) -> Callable[[], Any]:
    """A --dtype int8 run's cppconv column: qconv2d, or the prepacked QConv2d layer, in `layout`."""
    import cppconv

    if precision != "highest":
        raise Skip("int8 has no precision modes")
    if layer.two_d:
        raise Skip("the 2-D form (H, W) has no channel axis")
    x = d.x if layout == "NCHW" else np.ascontiguousarray(d.x.transpose(0, 2, 3, 1))
    kw: Dict[str, Any] = dict(layer.conv_kwargs, layout=layout)
    if not layer_class:
        return lambda: cppconv.qconv2d(x, *d.qconv_args(), **kw)
    conv = cppconv.QConv2d(*d.qconv_args(), **kw)
    out_shape = layer.out_shape if layout == "NCHW" else (layer.n, *layer.out_hw, layer.k)
    out = np.empty(out_shape, np.uint8)
    return lambda: conv(x, out=out)


def _runner_cppconv(precision: str) -> Runner:
    def make(layer: Layer, d: LayerData, threads: int) -> Callable[[], Any]:
        import cppconv

        if d.quant is not None:
            return _int8_runner(layer, d, precision, layer_class=False, layout="NCHW")
        if not hasattr(cppconv, "conv2d"):
            raise Skip("cppconv.conv2d missing")
        x, w, b, kw = _cppconv_call(layer, d, precision)
        return lambda: cppconv.conv2d(x, w, b, **kw)

    return make


def _runner_cppconv_layer(precision: str) -> Runner:
    def make(layer: Layer, d: LayerData, threads: int) -> Callable[[], Any]:
        import cppconv

        if d.quant is not None:
            return _int8_runner(layer, d, precision, layer_class=True, layout="NCHW")
        if not hasattr(cppconv, "Conv2d"):
            raise Skip("cppconv.Conv2d missing")
        x, w, b, kw = _cppconv_call(layer, d, precision)
        conv = cppconv.Conv2d(w, b, **kw)
        out = np.empty(layer.out_hw if layer.two_d else layer.out_shape, x.dtype)
        return lambda: conv(x, out=out)

    return make


def _runner_cppconv_nhwc(layer_class: bool) -> Runner:
    """cppconv in NHWC, PyTorch's channels_last twin: x transposed to (N, H, W, C) once, outside
    the timed call; the result (N, OH, OW, K).  run_layer compares it through NHWC_COLUMNS."""

    def make(layer: Layer, d: LayerData, threads: int) -> Callable[[], Any]:
        import cppconv

        if d.quant is not None:
            return _int8_runner(layer, d, "highest", layer_class, layout="NHWC")
        if layer.two_d:
            raise Skip("the 2-D form (H, W) has no channel axis")
        x, w, b, kw = _cppconv_call(layer, d, "highest")
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        kw["layout"] = "NHWC"
        if not layer_class:
            return lambda: cppconv.conv2d(x, w, b, **kw)
        conv = cppconv.Conv2d(w, b, **kw)
        out = np.empty((layer.n, *layer.out_hw, layer.k), x.dtype)
        return lambda: conv(x, out=out)

    return make


def runner_cppconv_layer_f32(layer: Layer, d: LayerData, threads: int) -> Callable[[], Any]:
    """The float32 Conv2d layer on a bfloat16 run's values, or on an int8 run's dequantized
    values (--dtype bf16 and int8 only)."""
    import cppconv

    if d.x.dtype == np.float32:
        raise Skip("the Conv2d column in a float32 run")
    if d.quant is not None:
        q = d.quant
        x = (d.x.astype(np.float32) - np.float32(q["x_zero_point"])) * q["x_scale"]
        w = d.w.astype(np.float32) * q["w_scale"].reshape(-1, 1, 1, 1)
        b = None if d.b is None else (d.b * (q["x_scale"] * q["w_scale"])).astype(np.float32)
        kw: Dict[str, Any] = dict(layer.conv_kwargs)
        if layer.two_d:
            raise Skip("the 2-D form (H, W) has no channel axis")
    else:
        x, w, b, kw = _cppconv_call(layer, d, "highest")
        x, w = x.astype(np.float32), w.astype(np.float32)
    conv = cppconv.Conv2d(w, b, **kw)
    out = np.empty(layer.out_hw if layer.two_d else layer.out_shape, np.float32)
    return lambda: conv(x, out=out)


def _pad(x: np.ndarray, p: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x


# The numpy and loop runners pad the whole input first; past this they do not run.
PAD_LIMIT_BYTES = 1 << 30


def _check_padded_size(layer: Layer) -> None:
    padded = 4 * layer.n * layer.c * (layer.h + 2 * layer.padding) * (layer.w + 2 * layer.padding)
    if padded > PAD_LIMIT_BYTES:
        raise Skip(f"the padded input takes {padded / 2**30:.0f} GiB")


def runner_numpy(layer: Layer, d: LayerData, threads: int) -> Callable[[], Any]:
    """im2col with sliding_window_view + one batched matmul (a GEMM per image and group)."""
    _check_padded_size(layer)
    n, k, g = layer.n, layer.k, layer.groups
    cg, kg = layer.c // g, k // g
    oh, ow = layer.out_hw
    s, p, dil = layer.stride, layer.padding, layer.dilation
    eh, ew = dil * (layer.kh - 1) + 1, dil * (layer.kw - 1) + 1
    wg = d.w.reshape(g, kg, cg * layer.kh * layer.kw)  # a view: (groups, K/g, C/g*kh*kw)
    bias = None if d.b is None else d.b.reshape(k, 1, 1)
    x = d.x

    def conv() -> np.ndarray:
        win = sliding_window_view(_pad(x, p), (eh, ew), axis=(2, 3))[:, :, ::s, ::s, ::dil, ::dil]
        # (N, C, OH, OW, kh, kw) -> columns (N, g, C/g*kh*kw, OH*OW); a view when 1x1/stride 1
        cols = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, g, cg * layer.kh * layer.kw, oh * ow)
        y: np.ndarray = np.matmul(wg, cols).reshape(n, k, oh, ow)
        if bias is not None:
            y += bias
        return y

    return conv


LOOP_LIMIT_S = 2.0


def runner_loop(layer: Layer, d: LayerData, threads: int) -> Callable[[], Any]:
    """Textbook loop over kernel taps: y += W[:, :, i, j] @ shifted slice, per tap."""
    _check_padded_size(layer)
    n, k, g = layer.n, layer.k, layer.groups
    cg, kg = layer.c // g, k // g
    oh, ow = layer.out_hw
    s, p, dil = layer.stride, layer.padding, layer.dilation
    # Per-tap weight matrices (kh, kw, g, K/g, C/g), contiguous so that matmul uses BLAS.
    wtaps = np.ascontiguousarray(d.w.reshape(g, kg, cg, layer.kh, layer.kw).transpose(3, 4, 0, 1, 2))
    depthwise = cg == 1
    x, b = d.x, d.b

    def tap(xp: np.ndarray, y: np.ndarray, i: int, j: int) -> None:
        r0, c0 = i * dil, j * dil
        xs = xp[:, :, r0:r0 + s * (oh - 1) + 1:s, c0:c0 + s * (ow - 1) + 1:s]
        xs = xs.reshape(n, g, cg, oh * ow)
        if depthwise:
            y += wtaps[i, j] * xs  # (g, K/g, 1) * (N, g, 1, P) -> (N, g, K/g, P)
        else:
            y += wtaps[i, j] @ xs  # (g, K/g, C/g) @ (N, g, C/g, P)

    def conv() -> np.ndarray:
        xp = _pad(x, p)
        y = np.zeros((n, g, kg, oh * ow), np.float32)
        for i in range(layer.kh):
            for j in range(layer.kw):
                tap(xp, y, i, j)
        y = y.reshape(n, k, oh, ow)
        if b is not None:
            y += b.reshape(k, 1, 1)
        return y

    # Estimate one call from one tap (after one untimed tap to warm up).
    xp, y = _pad(x, p), np.zeros((n, g, kg, oh * ow), np.float32)
    tap(xp, y, 0, 0)
    t0 = time.perf_counter()
    tap(xp, y, 0, 0)
    estimate = (time.perf_counter() - t0) * layer.kh * layer.kw
    if estimate > LOOP_LIMIT_S:
        raise Skip(f"~{estimate:.1f} s per call")
    return conv


def _torch_runner(channels_last: bool) -> Runner:
    def make(layer: Layer, d: LayerData, threads: int) -> Callable[[], Any]:
        import torch
        import torch.nn.functional as F

        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x, w = _torch_tensor(d.x), _torch_tensor(d.w)
        b = None if d.b is None else _torch_tensor(d.b)
        if x.dtype == torch.bfloat16 and b is not None:
            b = b.to(torch.bfloat16)  # PyTorch's bfloat16 convolution takes a bfloat16 bias only
        x, w = x.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt)
        s, p, dil, g = layer.stride, layer.padding, layer.dilation, layer.groups
        # main() holds torch.inference_mode() for the whole run.
        return lambda: F.conv2d(x, w, b, s, p, dil, g)

    return make


def _torch_tensor(a: np.ndarray) -> Any:
    """A torch tensor sharing a float32 or bfloat16 array (torch.from_numpy knows no bfloat16)."""
    import torch

    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def runner_onnxruntime(layer: Layer, d: LayerData, threads: int) -> Callable[[], Any]:
    """A one-node Conv model, or with --dtype int8 a QLinearConv (uint8 x, int8 per-channel w)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    p, s, dil = layer.padding, layer.stride, layer.dilation
    geometry: Dict[str, Any] = dict(kernel_shape=[layer.kh, layer.kw], strides=[s, s], pads=[p, p, p, p],
                                    dilations=[dil, dil], group=layer.groups)
    if d.quant is not None:
        operands = dict(zip(["x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale", "y_zero_point",
                             "b"], d.qconv_args()))
        inputs = ["x", *[n for n, v in operands.items() if v is not None]]
        inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in operands.items() if v is not None]
        node = helper.make_node("QLinearConv", inputs, ["y"], **geometry)
        elem = TensorProto.UINT8
    else:
        inputs = ["x", "w"] + (["b"] if d.b is not None else [])
        node = helper.make_node("Conv", inputs, ["y"], **geometry)
        inits = [numpy_helper.from_array(d.w, "w")] + ([numpy_helper.from_array(d.b, "b")] if d.b is not None else [])
        elem = TensorProto.FLOAT
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", elem, d.x.shape)],
                              [helper.make_tensor_value_info("y", elem, layer.out_shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # understood by every onnxruntime that knows opset 17
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = {"x": d.x}
    return lambda: sess.run(None, feed)[0]


def runner_scipy(layer: Layer, d: LayerData, threads: int) -> Callable[[], Any]:
    from scipy import ndimage, signal

    if layer.c != 1 or layer.k != 1 or layer.groups != 1:
        raise Skip("multi-channel")
    if layer.stride != 1 or layer.dilation != 1:
        raise Skip("stride/dilation")
    x, w, p = d.x[0, 0], d.w[0, 0], layer.padding
    bias = 0.0 if d.b is None else d.b[0]
    if p == 0:
        return lambda: signal.correlate2d(x, w, mode="valid") + bias
    if layer.kh % 2 and layer.kw % 2 and layer.kh == layer.kw == 2 * p + 1:
        # "same" zero padding: ndimage centres odd kernels
        return lambda: ndimage.correlate(x, w, mode="constant", cval=0.0) + bias
    return lambda: signal.correlate2d(np.pad(x, p), w, mode="valid") + bias


# Column key -> (table header, peer group for --peers, runner).
RUNNERS: Dict[str, Tuple[str, str, Runner]] = {
    "cppconv": ("cppconv", "cppconv", _runner_cppconv("highest")),
    "Conv2d": ("Conv2d", "cppconv", _runner_cppconv_layer("highest")),
    "cppconv_high": ("conv2d high", "cppconv", _runner_cppconv("high")),
    "Conv2d_high": ("Conv2d high", "cppconv", _runner_cppconv_layer("high")),
    "cppconv_nhwc": ("conv2d NHWC", "cppconv", _runner_cppconv_nhwc(layer_class=False)),
    "Conv2d_nhwc": ("Conv2d NHWC", "cppconv", _runner_cppconv_nhwc(layer_class=True)),
    "Conv2d_f32": ("Conv2d f32", "cppconv", runner_cppconv_layer_f32),
    "numpy": ("numpy", "numpy", runner_numpy),
    "loop": ("loop", "loop", runner_loop),
    "torch": ("torch", "torch", _torch_runner(channels_last=False)),
    "torch_cl": ("torch_cl", "torch", _torch_runner(channels_last=True)),
    "onnxruntime": ("ort", "onnxruntime", runner_onnxruntime),
    "scipy": ("scipy", "scipy", runner_scipy),
}
PEERS = ["numpy", "loop", "torch", "onnxruntime", "scipy"]
NETWORK_NAMES = tuple(ARCHITECTURES)  # --networks (cppconv._netbench)
PEER_MODULES = {"numpy": "numpy", "loop": "numpy", "torch": "torch", "onnxruntime": "onnxruntime", "scipy": "scipy"}
FRAMEWORKS = ["torch", "torch_cl", "onnxruntime"]
CPPCONV_COLUMNS = ["cppconv", "Conv2d", "cppconv_high", "Conv2d_high", "cppconv_nhwc", "Conv2d_nhwc", "Conv2d_f32"]
# Columns whose output is NHWC (N, OH, OW, K): transposed to NCHW before the comparison.
NHWC_COLUMNS = ["cppconv_nhwc", "Conv2d_nhwc"]
# The columns of a --dtype bf16 run: the peers with a bfloat16 convolution.
BF16_COLUMNS = CPPCONV_COLUMNS + ["torch", "torch_cl"]
# Those of a --dtype int8 run (ONNX Runtime's QLinearConv is the peer).
INT8_COLUMNS = ["cppconv", "Conv2d", "cppconv_nhwc", "Conv2d_nhwc", "Conv2d_f32", "onnxruntime"]
# Speedup keys: (cppconv column, the column it falls back to where its runner skipped the layer,
# what it is compared with).  A "high" column skips layers where the mode changes nothing.
SPEEDUPS = {
    "numpy": ("cppconv", None, "numpy"),
    "loop": ("cppconv", None, "loop"),
    "best_fw": ("cppconv", None, "best_fw"),
    "Conv2d_best_fw": ("Conv2d", None, "best_fw"),
    "high_best_fw": ("cppconv_high", "cppconv", "best_fw"),
    "Conv2d_high_best_fw": ("Conv2d_high", "Conv2d", "best_fw"),
    # Each layout against its twin: NCHW with torch's NCHW, NHWC with torch's channels_last.
    "nchw_torch": ("cppconv", None, "torch"),
    "Conv2d_nchw_torch": ("Conv2d", None, "torch"),
    "nhwc_torch_cl": ("cppconv_nhwc", None, "torch_cl"),
    "Conv2d_nhwc_torch_cl": ("Conv2d_nhwc", None, "torch_cl"),
    # --dtype bf16 and int8: the reduced-precision layer against the float32 one on the same values.
    "Conv2d_f32": ("Conv2d", None, "Conv2d_f32"),
}

# --------------------------------------------------------------------------------------
# Timer


@dataclass
class TimerConfig:
    warmup_calls: int = 2
    warmup_s: float = 0.2
    budget_s: float = 1.0  # sampling time per library and layer (all rounds together)
    min_repeats: int = 5
    max_repeats: int = 200
    fixed_repeats: Optional[int] = None
    rounds: int = 3  # samples are taken in this many round-robin blocks across libraries
    min_sample_s: float = 200e-6  # batch calls shorter than this into one sample


@dataclass
class Timing:
    median_s: float
    min_s: float
    repeats: int
    inner: int
    samples_s: List[float] = field(repr=False)

    @property
    def spread(self) -> float:
        """Interquartile ratio q75/q25 of the samples (1.0 = perfectly steady)."""
        q25, q75 = np.percentile(self.samples_s, [25, 75])
        return float(q75 / q25) if q25 > 0 else float("inf")


UNSTEADY_SPREAD = 1.5  # q75/q25 above this marks a timing "~" (unsteady) in the table


class Timer:
    """Times one callable: warm-up and calibration on creation, then samples in blocks."""

    def __init__(self, fn: Callable[[], Any], cfg: TimerConfig):
        self.fn = fn
        calls: List[float] = []
        start = time.perf_counter()
        while len(calls) < cfg.warmup_calls or time.perf_counter() - start < cfg.warmup_s:
            t0 = time.perf_counter()
            fn()
            calls.append(time.perf_counter() - t0)
        per_call = float(np.median(calls[-max(cfg.warmup_calls, len(calls) // 2):]))
        self.inner = max(1, math.ceil(cfg.min_sample_s / max(per_call, 1e-9)))
        if cfg.fixed_repeats:
            self.repeats = cfg.fixed_repeats
        else:
            fit = int(cfg.budget_s / (per_call * self.inner))
            self.repeats = min(max(fit, cfg.min_repeats), cfg.max_repeats)
        self.samples: List[float] = []

    def block(self, count: int) -> None:
        """One untimed call (caches and thread pools may have gone cold), then `count` samples."""
        if count <= 0:
            return
        fn, inner = self.fn, self.inner
        fn()
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            for _ in range(count):
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                self.samples.append((time.perf_counter() - t0) / inner)
        finally:
            if gc_was_on:
                gc.enable()

    def block_sizes(self, rounds: int) -> List[int]:
        rounds = max(1, min(rounds, self.repeats))
        return [self.repeats // rounds + (i < self.repeats % rounds) for i in range(rounds)]

    def timing(self) -> Timing:
        return Timing(float(np.median(self.samples)), float(min(self.samples)), len(self.samples), self.inner,
                      self.samples)


def time_interleaved(fns: Dict[str, Callable[[], Any]], cfg: TimerConfig) -> Dict[str, Timing]:
    """Time several callables, sampling them round-robin so that load bursts hit all alike."""
    timers = {k: Timer(fn, cfg) for k, fn in fns.items()}
    sizes = {k: t.block_sizes(cfg.rounds) for k, t in timers.items()}
    for r in range(max((len(v) for v in sizes.values()), default=0)):
        for k, t in timers.items():
            if r < len(sizes[k]):
                t.block(sizes[k][r])
    return {k: t.timing() for k, t in timers.items()}


def time_callable(fn: Callable[[], Any], cfg: TimerConfig) -> Timing:
    """Warm up, then the median over R samples of the per-call time."""
    return time_interleaved({"fn": fn}, cfg)["fn"]


# --------------------------------------------------------------------------------------
# Running the suite


@dataclass
class Result:
    """One library on one layer."""

    status: str  # "ok", "n/a" (skipped), "error"
    note: str = ""
    timing: Optional[Timing] = None
    gflops: Optional[float] = None
    match: Optional[bool] = None
    max_abs_err: Optional[float] = None

    @property
    def median_s(self) -> float:
        """The median sample of an "ok" result (one with a timing)."""
        assert self.timing is not None, f"no timing for a result of status {self.status!r}"
        return self.timing.median_s

    @property
    def gflops_ok(self) -> float:
        """The GFLOP/s of an "ok" result."""
        assert self.gflops is not None, f"no GFLOP/s for a result of status {self.status!r}"
        return self.gflops


def _call_if(module: Any, name: str, *args: Any) -> Any:
    """module.name(*args), or None where the module (an optional import) or the name is missing."""
    fn = getattr(module, name, None)
    return None if fn is None else fn(*args)


def to_numpy(out: Any) -> np.ndarray:
    if isinstance(out, np.ndarray):
        return out
    if hasattr(out, "numpy"):  # torch.Tensor (NumPy has no bfloat16 of its own)
        out = out.float() if str(getattr(out, "dtype", "")) == "torch.bfloat16" else out
        return np.asarray(out.numpy())
    return np.asarray(out)


def compare(out: np.ndarray, ref: np.ndarray, tol: float = 1e-3) -> Tuple[bool, float]:
    """allclose with rtol `tol` and atol `tol` relative to ref's largest magnitude."""
    if out.size != ref.size:
        return False, float("inf")
    out, ref = out.reshape(ref.shape).astype(np.float64), ref
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    ok = bool(np.allclose(out, ref, rtol=tol, atol=tol * max(scale, 1e-30)))
    return ok, float(np.max(np.abs(out.astype(np.float64) - ref))) if ref.size else 0.0


def _jsonable(v: Any) -> Any:
    if isinstance(v, (int, float, str, bool, type(None))):
        return v
    if isinstance(v, (tuple, list)):
        return [_jsonable(e) for e in v]
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def explain_layer(layer: Layer, precision: str = "highest", dtype: str = "f32") -> Optional[Dict[str, Any]]:
    cppconv = _import("cppconv")
    explain = getattr(cppconv, "explain", None)
    if explain is None:
        return None
    mode: Dict[str, Any] = {"precision": precision} if hasattr(cppconv, "set_float32_precision") else {}
    if dtype == "bf16":  # the bfloat16 problem's own algorithm (a kernel of its own, or the widened one)
        mode["dtype"] = importlib.import_module("ml_dtypes").bfloat16
    try:
        if dtype == "int8":
            if layer.two_d or precision != "highest":
                return None
            d = LayerData.quantized(np.zeros(layer.x_shape, np.float32), np.ones(layer.w_shape, np.float32), None)
            info = cppconv.QConv2d(*d.qconv_args(), **layer.conv_kwargs).explain(layer.x_shape)
        elif layer.two_d:
            info = explain((layer.h, layer.w), (layer.kh, layer.kw), stride=layer.stride,
                           padding=layer.padding, dilation=layer.dilation, **mode)
        else:
            info = explain(layer.x_shape, layer.w_shape, **layer.conv_kwargs, **mode)
        return {k: _jsonable(v) for k, v in dict(info).items()}
    except Exception as e:  # noqa: BLE001 - a bench must not die on an explain bug
        return {"error": f"{type(e).__name__}: {e}"}


def run_layer(layer: Layer, columns: Sequence[str], threads: int, cfg: TimerConfig,
              log: Callable[[str], None], dtype: str = "f32") -> Dict[str, Result]:
    data = LayerData.make(layer, dtype=dtype)
    results: Dict[str, Result] = {}
    outputs: Dict[str, np.ndarray] = {}
    fns: Dict[str, Callable[[], Any]] = {}
    for col in columns:
        try:
            fn = RUNNERS[col][2](layer, data, threads)
            first = to_numpy(fn())  # first call; also the check
            outputs[col] = np.array(first.transpose(0, 3, 1, 2) if col in NHWC_COLUMNS else first, copy=True)
            fns[col] = fn
        except Skip as e:
            results[col] = Result("n/a", str(e))
        except Exception as e:  # noqa: BLE001 - report and go on with the other libraries
            results[col] = Result("error", f"{type(e).__name__}: {e}")
            log(f"  ERROR {layer.name} / {col}: {type(e).__name__}: {e}")
    try:
        timings = time_interleaved(fns, cfg)
    except Exception as e:  # noqa: BLE001 - a runner that passed its first call failed later
        log(f"  ERROR {layer.name} while timing: {type(e).__name__}: {e}")
        timings = {}
        for col in fns:
            try:
                timings[col] = time_callable(fns[col], cfg)
            except Exception as e2:  # noqa: BLE001
                results[col] = Result("error", f"{type(e2).__name__}: {e2}")
    for col, timing in timings.items():
        results[col] = Result("ok", timing=timing, gflops=layer.flops / timing.median_s / 1e9)
    del fns
    results = {col: results[col] for col in columns if col in results}
    ref_col = "cppconv" if "cppconv" in timings else ("numpy" if "numpy" in timings else None)
    if ref_col is not None:
        ref = outputs[ref_col].astype(np.float64)
        for col in timings:
            if col == ref_col or (dtype == "int8" and col == "Conv2d_f32"):  # int8 steps against float values
                continue
            # bfloat16 keeps 8 significant bits; int8 results may differ by one step at rounding ties.
            ok, err = compare(outputs[col], ref, 1e-3 if dtype == "f32" else 1e-2)
            results[col].match, results[col].max_abs_err = ok, err
            if not ok:
                log(f"  !!! MISMATCH {layer.name}: {col} differs from {ref_col} (max abs err {err:.3g}, "
                    f"max |ref| {float(np.max(np.abs(ref))):.3g})")
        results[ref_col].match = True
    return results


# --------------------------------------------------------------------------------------
# Machine info, thread set-up


def _lscpu_model() -> Optional[str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return None
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return None


def _git_info(root: Optional[str]) -> Dict[str, Any]:
    """Commit and dirtiness of the source checkout at `root` (None: an installed package, no git)."""
    if root is None:
        return {}
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip() != ""
        return {"commit": head or None, "dirty": dirty if head else None}
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return {}


def machine_info(threads: int, git_root: Optional[str] = None) -> Dict[str, Any]:
    cppconv = _import("cppconv")
    native = getattr(cppconv, "_native", None)
    versions = {"python": platform.python_version()}
    for mod in ["numpy", "scipy", "torch", "onnxruntime", "onnx", "threadpoolctl"]:
        m = sys.modules.get(mod) or _import(mod)
        if m is not None:
            versions[mod] = getattr(m, "__version__", "?")
    info: Dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_model": _lscpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "threads": threads,
        "cppconv_version": getattr(cppconv, "__version__", getattr(native, "__version__", None)),
        "cppconv_isa": _call_if(native, "selected_isa"),
        "cppconv_openmp": _call_if(native, "openmp"),
        # The machine limit the GFLOP/s compare against: float32 multiply-adds of the selected
        # ISA's vectors on the same threads, measured now.
        "fma_peak_gflops": _call_if(native, "fma_peak_gflops", threads, 0.5),
        "versions": versions,
        "git": _git_info(git_root),
        # How OpenMP threads wait at barriers: on a loaded machine libgomp's default spinning
        # slowed networks 20x (docs/tuning.md, "Whole networks"), so it belongs with the timings.
        "openmp_env": {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
                       if k in os.environ},
    }
    tpc = sys.modules.get("threadpoolctl")
    if tpc is not None:
        info["threadpools"] = [{k: v for k, v in p.items() if k != "filepath"} for p in tpc.threadpool_info()]
    return info


def setup_threads(requested: Optional[int], peers: Sequence[str], stack: contextlib.ExitStack,
                  log: Callable[[str], None]) -> int:
    cppconv = _import("cppconv")
    if requested is not None and hasattr(cppconv, "set_num_threads"):
        cppconv.set_num_threads(requested)
    if requested is not None:
        threads = requested
    elif hasattr(cppconv, "get_num_threads"):
        threads = int(cppconv.get_num_threads())
    else:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if "torch" in peers:
        import torch

        torch.set_num_threads(threads)
        stack.enter_context(torch.inference_mode())
    tpc = _import("threadpoolctl")
    if tpc is not None:
        stack.enter_context(tpc.threadpool_limits(limits=threads, user_api="blas"))
    elif "numpy" in peers or "loop" in peers:
        log("note: threadpoolctl not installed; NumPy's BLAS uses its default thread count")
    return threads


# --------------------------------------------------------------------------------------
# Report


def _fmt_num(v: float) -> str:
    """Three significant figures for small values, one decimal for large ones."""
    return f"{v:.1f}" if v >= 100 else f"{v:.3g}"


def _fmt_gf(r: Optional[Result]) -> str:
    if r is None:
        return ""
    if r.status != "ok":
        return r.status
    unsteady = r.timing is not None and r.timing.spread > UNSTEADY_SPREAD
    return _fmt_num(r.gflops_ok) + ("~" if unsteady else "") + ("!" if r.match is False else "")


def _fmt_x(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.2f}x"


def speedups(res: Dict[str, Result]) -> Dict[str, Optional[float]]:
    def t(col: str) -> Optional[float]:
        r = res.get(col)
        return r.median_s if r is not None and r.status == "ok" else None

    fw = [v for v in (t(c) for c in FRAMEWORKS) if v is not None]
    times = {"best_fw": min(fw) if fw else None, "numpy": t("numpy"), "loop": t("loop"), "torch": t("torch"),
             "torch_cl": t("torch_cl"), "Conv2d_f32": t("Conv2d_f32")}
    result: Dict[str, Optional[float]] = {}
    for key, (col, fallback, other) in SPEEDUPS.items():
        mine = t(col) or (t(fallback) if fallback else None)
        theirs = times[other]
        result[key] = theirs / mine if mine and theirs else None
    return result


def geomean(xs: Sequence[float]) -> Optional[float]:
    xs = [x for x in xs if x]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def build_table(rows: Sequence[Tuple[Layer, Dict[str, Result], Any]],
                columns: Sequence[str], peak_gflops: Optional[float] = None
                ) -> Tuple[List[str], List[List[str]], List[str]]:
    peer_cols = [c for c in columns if c not in CPPCONV_COLUMNS]
    own_cols = [c for c in CPPCONV_COLUMNS[1:] if c in columns]
    header = ["layer", "cppconv us", "cppconv GF/s"]
    if peak_gflops:
        header.append("% peak")
    header += [f"{RUNNERS[c][0]} GF/s" for c in own_cols]
    header += [f"{RUNNERS[c][0]} GF/s" for c in peer_cols]
    sp_cols = ["numpy", "loop", "best_fw", "Conv2d_best_fw", "high_best_fw", "Conv2d_high_best_fw", "nchw_torch",
               "Conv2d_nchw_torch", "nhwc_torch_cl", "Conv2d_nhwc_torch_cl", "Conv2d_f32"]
    header += ["x numpy", "x loop", "x best fw", "Conv2d x best fw", "high x best fw", "Conv2d high x best fw",
               "NCHW x torch", "Conv2d NCHW x torch", "NHWC x torch_cl", "Conv2d NHWC x torch_cl", "Conv2d x f32",
               "algorithm", "algorithm (high)"]
    body: List[List[str]] = []
    sp_all: Dict[str, List[float]] = {k: [] for k in sp_cols}
    for layer, res, info in rows:
        c = res.get("cppconv")
        us = _fmt_num(c.median_s * 1e6) if c is not None and c.status == "ok" else (c.status if c else "")
        row = [layer.name, us, _fmt_gf(c)]
        if peak_gflops:
            row.append(f"{100 * c.gflops_ok / peak_gflops:.0f}" if c is not None and c.status == "ok" else "")
        row += [_fmt_gf(res.get(col)) for col in own_cols]
        row += [_fmt_gf(res.get(col)) for col in peer_cols]
        sp = speedups(res)
        for k, v in sp.items():
            if v and not layer.sanity:
                sp_all[k].append(v)
        row += [_fmt_x(sp[k]) for k in sp_cols]
        for mode_info in (info or {}).get("highest"), (info or {}).get("high"):
            row.append(str(mode_info.get("algorithm", mode_info.get("error", ""))) if mode_info else "")
        body.append(row)
    g = {k: geomean(v) for k, v in sp_all.items()}
    fw = "the best of torch/torch_cl/onnxruntime"
    summary = [f"geometric mean speedup of {who} over {name}: "
               + (f"{g[k]:.2f}x over {len(sp_all[k])} layers" if g[k] else "n/a")
               for k, who, name in (("numpy", "cppconv.conv2d", "numpy (im2col+matmul)"),
                                    ("loop", "cppconv.conv2d", "loop (tap loop)"),
                                    ("best_fw", "cppconv.conv2d (precision 'highest', the default)", fw),
                                    ("Conv2d_best_fw", "cppconv.Conv2d (prepacked, 'highest')", fw),
                                    ("high_best_fw", "cppconv.conv2d (precision 'high')", fw),
                                    ("Conv2d_high_best_fw", "cppconv.Conv2d (prepacked, 'high')", fw),
                                    ("nchw_torch", "cppconv.conv2d NCHW", "torch NCHW (its twin layout)"),
                                    ("Conv2d_nchw_torch", "cppconv.Conv2d NCHW", "torch NCHW"),
                                    ("nhwc_torch_cl", "cppconv.conv2d NHWC",
                                     "torch channels_last (its twin layout)"),
                                    ("Conv2d_nhwc_torch_cl", "cppconv.Conv2d NHWC", "torch channels_last"),
                                    ("Conv2d_f32", "cppconv.Conv2d", "its float32 twin (Conv2d f32)"))]
    if peak_gflops:
        summary.append(f"measured FMA peak (float32, these threads): {peak_gflops:.0f} GFLOP/s; `% peak` is "
                       "cppconv.conv2d's GFLOP/s against it (Winograd layers count the direct "
                       "convolution's multiply-adds, so they can pass 100)")
    return header, body, summary


def format_text(header: List[str], body: List[List[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    lines = []
    for n, r in enumerate([header] + body):
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, len(r) - 1)] + [r[-1]]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(header: List[str], body: List[List[str]], summary: List[str], info: Dict[str, Any],
                    argv: Sequence[str]) -> str:
    v = info.get("versions", {})
    lines = [
        "# cppconv conv2d benchmark",
        "",
        f"- date: {info.get('date')}",
        f"- CPU: {info.get('cpu_model') or info.get('processor')} ({info.get('cpus_usable')} usable CPUs), "
        f"load average at start {info.get('loadavg_at_start')}",
        f"- threads: {info.get('threads')}; cppconv {info.get('cppconv_version')} (ISA {info.get('cppconv_isa')}); "
        f"dtype {info.get('dtype', 'f32')}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- command: `cppconv bench {' '.join(argv)}`".rstrip(),
        "",
        "GF/s = 2*N*K*OH*OW*(C/groups)*kh*kw / median time. `x ...` columns: speedup of cppconv.conv2d "
        "(of the prepacked Conv2d layer in `Conv2d x best fw`) over that library; best fw = fastest of "
        "torch, torch_cl, onnxruntime; `NCHW x torch` and `NHWC x torch_cl` compare each cppconv layout with "
        "PyTorch's in the same layout (its twin); `Conv2d x f32` (--dtype bf16, int8) the layer against the "
        "float32 layer on the same values. `~` marks an unsteady timing (q75/q25 of the samples > "
        f"{UNSTEADY_SPREAD}), `!` an output mismatch.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i in (0, len(header) - 1) else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    lines += [""] + [f"- {s}" for s in summary] + [""]
    return "\n".join(lines)


def result_json(r: Result) -> Dict[str, Any]:
    d: Dict[str, Any] = {"status": r.status}
    if r.note:
        d["note"] = r.note
    if r.timing is not None:
        q25, q75 = np.percentile(r.timing.samples_s, [25, 75])
        d.update(median_s=r.timing.median_s, min_s=r.timing.min_s, q25_s=float(q25), q75_s=float(q75),
                 spread_q75_q25=r.timing.spread, repeats=r.timing.repeats, calls_per_sample=r.timing.inner,
                 gflops=r.gflops)
    if r.match is not None:
        d.update(match=r.match, max_abs_err=r.max_abs_err)
    return d


# --------------------------------------------------------------------------------------
# Main


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The benchmark's options, shared by ``cppconv bench`` and bench/bench_conv.py."""
    ap.add_argument("--quick", action="store_true",
                    help="fewer repeats, skip the batched layers (batch 16, the batch-64 sanity rows)")
    ap.add_argument("--threads", type=int, help="threads for every library (default: cppconv.get_num_threads())")
    ap.add_argument("--layers", help="comma-separated layer names (see --list)")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}")
    ap.add_argument("--repeat", type=int, help="fixed number of timed samples per library and layer")
    ap.add_argument("--rounds", type=int, help="round-robin sampling blocks per layer (default 3, --quick 2)")
    ap.add_argument("--json", metavar="FILE", help="write all raw numbers and machine info as JSON")
    ap.add_argument("--markdown", metavar="FILE", help="write the table as markdown")
    ap.add_argument("--plot", metavar="FILE.png", help="bar chart of GFLOP/s per layer and library (needs matplotlib)")
    ap.add_argument("--list", action="store_true", help="list the layers and exit")
    ap.add_argument("--dtype", choices=("f32", "bf16", "int8"), default="f32",
                    help="f32 (default); bf16: bfloat16 x and weight (needs ml_dtypes) against PyTorch's bfloat16; "
                         "int8: QLinearConv (uint8 x, int8 w) against ONNX Runtime's")
    ap.add_argument("--networks", nargs="?", const="all", metavar="NAMES",
                    help="the whole-network suite instead of the layers: cppconv.onnx against ONNX Runtime and "
                         "PyTorch channels-last on all (the default) or the comma-separated networks of "
                         f"{', '.join(NETWORK_NAMES)}; takes --threads, --batches and --quick")
    ap.add_argument("--batches", default="1,16", help="--networks' batch sizes, comma-separated (default 1,16)")


def check_arguments(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Rejects bad values before any timing starts (argparse's error: usage and exit status 2)."""
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    if args.repeat is not None and args.repeat < 1:
        ap.error(f"--repeat must be >= 1, got {args.repeat}")
    if args.rounds is not None and args.rounds < 1:
        ap.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.dtype == "bf16" and not _has_module("ml_dtypes"):
        ap.error("--dtype bf16 needs ml_dtypes, which is not installed: pip install ml_dtypes")
    if args.plot and not _has_module("matplotlib"):
        ap.error("--plot needs matplotlib, which is not installed: pip install 'cppconv[plot]' (or matplotlib)")
    if args.networks is not None:
        others = [f"--{k}" for k in ("layers", "repeat", "rounds", "json", "markdown", "plot") if getattr(args, k)]
        if args.dtype != "f32" or args.list:
            others.append("--dtype" if args.dtype != "f32" else "--list")
        if others:
            ap.error(f"--networks takes --threads, --batches and --quick, not {', '.join(others)}")
        unknown = [n for n in args.networks.split(",") if n not in (*NETWORK_NAMES, "all")]
        if unknown:
            ap.error(f"--networks: unknown {', '.join(unknown)}; the networks: {', '.join(NETWORK_NAMES)}")
        missing = [m for m in ("torch", "onnx", "onnxruntime") if not _has_module(m)]
        if missing:
            ap.error(f"--networks needs {', '.join(missing)}, not installed: pip install 'cppconv[peers]'")
        try:
            batches = [int(b) for b in args.batches.split(",")]
        except ValueError:
            batches = []
        if not batches or min(batches) < 1:
            ap.error(f"--batches must be comma-separated positive integers, got {args.batches!r}")


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def make_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    return ap


def parse_args(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> argparse.Namespace:
    ap = make_parser(prog)
    args = ap.parse_args(argv)
    check_arguments(ap, args)
    return args


def select_layers(args: argparse.Namespace) -> List[Layer]:
    if args.layers:
        by_name = {layer.name: layer for layer in LAYERS}
        names = [n.strip() for n in args.layers.split(",") if n.strip()]
        unknown = [n for n in names if n not in by_name]
        if unknown:
            sys.exit(f"unknown layer(s) {unknown}; known: {', '.join(by_name)}")
        return [by_name[n] for n in names]
    return [layer for layer in LAYERS if not (args.quick and layer.batched)]


def select_columns(args: argparse.Namespace, log: Callable[[str], None]) -> List[str]:
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        sys.exit(f"unknown peer(s) {unknown}; known: {', '.join(PEERS)}")
    available = []
    for p in peers:
        if _import(PEER_MODULES[p]) is None:
            log(f"note: peer {p} skipped ({PEER_MODULES[p]} is not installed)")
        elif p == "onnxruntime" and _import("onnx") is None:
            log("note: peer onnxruntime skipped (onnx is not installed)")
        else:
            available.append(p)
    columns = [col for col, (_, group, _) in RUNNERS.items() if group == "cppconv" or group in available]
    if getattr(args, "dtype", "f32") == "bf16":
        return [col for col in columns if col in BF16_COLUMNS]
    if getattr(args, "dtype", "f32") == "int8":
        return [col for col in columns if col in INT8_COLUMNS]
    return [col for col in columns if col != "Conv2d_f32"]


# --------------------------------------------------------------------------------------
# Progress and chart


class Progress:
    """A plain-text progress bar on stderr; log lines printed through it do not garble it.

    On a terminal the bar redraws in place (carriage return); otherwise (a log file, CI) each
    update is one line, so the output stays readable.
    """

    WIDTH = 28

    def __init__(self, total: int, stream: Any = None):
        self.total = max(total, 1)
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.line = ""

    def log(self, msg: str) -> None:
        self._clear()
        print(msg, file=self.stream, flush=True)
        self._draw()

    def update(self, done: int, label: str) -> None:
        filled = round(self.WIDTH * done / self.total)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        elapsed = time.perf_counter() - self.start
        self._clear()
        self.line = f"[{bar}] {done}/{self.total} {elapsed:5.1f} s  {label}"
        if self.tty:
            self._draw()
        else:
            print(self.line, file=self.stream, flush=True)

    def close(self) -> None:
        self._clear()
        self.line = ""

    def _clear(self) -> None:
        if self.tty and self.line:
            self.stream.write("\r" + " " * len(self.line) + "\r")

    def _draw(self) -> None:
        if self.tty and self.line:
            self.stream.write(self.line)
            self.stream.flush()


def plot_gflops(rows: Sequence[Tuple[Layer, Dict[str, Result], Any]], columns: Sequence[str], path: str,
                title: str) -> None:
    """Grouped bar chart: one group per layer, one bar per library, GFLOP/s on a log axis."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    names = [layer.name for layer, _, _ in rows]
    width = 0.8 / max(len(columns), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(names) + 2.0), 4.8))
    for i, col in enumerate(columns):
        heights = []
        for _, res, _ in rows:
            r = res.get(col)
            heights.append(r.gflops if r is not None and r.status == "ok" and r.gflops else 0.0)
        offsets = [g - 0.4 + width * (i + 0.5) for g in range(len(names))]
        ax.bar(offsets, heights, width, label=RUNNERS[col][0])
    ax.set_xticks(list(range(len(names))))
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    ax.set_yscale("log")  # the suite spans from the tiny seed image to large layers
    ax.set_ylabel("GFLOP/s (log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None, git_root: Optional[str] = None) -> int:
    """Runs the suite from command-line arguments; returns the exit status (1 on a mismatch)."""
    args = parse_args(argv)
    return run(args, list(sys.argv[1:] if argv is None else argv), git_root)


def run(args: argparse.Namespace, argv: Sequence[str], git_root: Optional[str] = None) -> int:
    """Runs the suite for parsed arguments (``cppconv bench`` and bench/bench_conv.py).

    `git_root` is a source checkout whose commit goes into the JSON's machine info.
    """
    if args.networks is not None:
        from . import _netbench

        names = "" if args.networks == "all" else args.networks
        threads = args.threads or _import("cppconv").get_num_threads()
        return _netbench.main(["--threads", str(threads), "--batches", args.batches, "--networks", names,
                               "--budget", "0.3" if args.quick else "1.0"])
    if args.list:
        for layer in LAYERS:
            print(f"{layer.name:22s} {layer.describe():40s} {layer.flops / 1e9:8.3f} GFLOP")
        return 0

    layers = select_layers(args)
    progress = Progress(len(layers))
    log = progress.log
    cppconv = _import("cppconv")
    if not _cppconv_has_api(cppconv):
        log("WARNING: cppconv (or cppconv.conv2d) is not importable; timing the peers only, "
            "checked against the numpy runner")
    columns = select_columns(args, log)
    cfg = TimerConfig(fixed_repeats=args.repeat)
    if args.quick:
        cfg = dataclasses.replace(cfg, warmup_s=0.1, budget_s=0.4, min_repeats=3, max_repeats=60, rounds=2)
    if args.rounds:
        cfg = dataclasses.replace(cfg, rounds=args.rounds)

    with contextlib.ExitStack() as stack:
        threads = setup_threads(args.threads, [RUNNERS[c][1] for c in columns], stack, log)
        info = machine_info(threads, git_root)
        info["dtype"] = args.dtype
        log(f"cppconv {info['cppconv_version']} isa={info['cppconv_isa']} threads={threads} "
            f"cpu={info['cpu_model'] or info['processor']} load={info['loadavg_at_start']}")
        log(f"columns: {', '.join(columns)}")
        load, cpus = info.get("loadavg_at_start"), info.get("cpus_usable") or info.get("cpu_count") or 1
        if load and load[0] > 0.5 * cpus:
            log(f"WARNING: the machine is busy (load average {load[0]:.2f} on {cpus} CPUs): "
                "timings will be noisy")
        rows = []
        t_start = time.perf_counter()
        for done, layer in enumerate(layers):
            progress.update(done, f"{layer.name} ({layer.describe()})")
            t0 = time.perf_counter()
            res = run_layer(layer, columns, threads, cfg, log, args.dtype)
            expl = {mode: explain_layer(layer, mode, args.dtype) for mode in ("highest", "high")}
            flops = (expl["highest"] or {}).get("flops")
            if isinstance(flops, (int, float)) and flops != layer.flops:
                log(f"  note: explain() flops {flops} != bench flops {layer.flops} for {layer.name}")
            rows.append((layer, res, expl))
            c = res.get("cppconv")
            c_txt = f"{c.gflops:.1f} GF/s" if c and c.status == "ok" else (c.status if c else "-")
            log(f"[{layer.name}] {layer.describe()}: cppconv {c_txt} ({time.perf_counter() - t0:.1f} s)")
            if layer.sanity and c and c.status == "ok" and c.median_s > SANITY_LIMIT_S:
                log(f"  WARNING: sanity row {layer.name} took cppconv {c.median_s:.2f} s (limit "
                    f"{SANITY_LIMIT_S} s): its cost is out of proportion to its work")
        progress.update(len(layers), "done")
        progress.close()
        total_s = time.perf_counter() - t_start

    # The float32 peak says nothing of int8's rate (VNNI: 4 multiply-adds a lane).
    peak = info.get("fma_peak_gflops") if args.dtype != "int8" else None
    header, body, summary = build_table(rows, columns, peak)
    print()
    print(format_text(header, body))
    print()
    for s in summary:
        print(s)
    print(f"(~ = unsteady timing, q75/q25 > {UNSTEADY_SPREAD}; ! = output mismatch)")
    print(f"(threads={threads}, {len(layers)} layers in {total_s:.0f} s; "
          f"load average now {os.getloadavg() if hasattr(os, 'getloadavg') else '?'})")
    mismatches = [(layer.name, col) for layer, res, _ in rows for col, r in res.items() if r.match is False]
    errors = [(layer.name, col, r.note) for layer, res, _ in rows for col, r in res.items() if r.status == "error"]
    if mismatches:
        print(f"\n!!! OUTPUT MISMATCHES: {', '.join(f'{n}/{c}' for n, c in mismatches)}")
    if errors:
        print("\nerrors: " + "; ".join(f"{n}/{c}: {e}" for n, c, e in errors))

    if args.json:
        doc = {
            "machine": info,
            "argv": list(argv),
            "timer": dataclasses.asdict(cfg),
            "columns": columns,
            "total_s": total_s,
            "layers": [
                {"layer": dataclasses.asdict(layer), "flops": layer.flops, "out_shape": layer.out_shape,
                 "explain": expl, "speedup": speedups(res),
                 "results": {col: result_json(r) for col, r in res.items()}}
                for layer, res, expl in rows
            ],
            "summary": summary,
            "mismatches": mismatches,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(format_markdown(header, body, summary, info, argv))
        print(f"wrote {args.markdown}", file=sys.stderr)
    if args.plot:
        title = (f"cppconv {info['cppconv_version']} conv2d, {threads} thread(s), ISA {info['cppconv_isa']}, "
                 f"{info['cpu_model'] or info['machine']}")
        plot_gflops(rows, columns, args.plot, title)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 1 if mismatches else 0
