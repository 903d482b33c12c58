"""Run whole ONNX networks on cppconv: ``cppconv.onnx.load(model)`` gives a :class:`cppconv.Network`.

The ``onnx`` package parses the model (``pip install "cppconv[onnx]"``); cppconv itself does
not need it.  The convolutions run on cppconv's kernels, with BatchNormalization folded into
their weights and the activation that follows fused; the other operators run in NumPy for now.
"""

from __future__ import annotations

from typing import Any, Optional

from ._network import SUPPORTED_OPERATORS, ModelError, Network

__all__ = ["ModelError", "Network", "SUPPORTED_OPERATORS", "load"]


def load(model: Any, *, num_threads: Optional[int] = None, precision: Optional[str] = None,
         compute_dtype: Optional[str] = None) -> Network:
    """Load an ONNX model and plan it once for cppconv.

    Args:
        model: a path to a ``.onnx`` file, its bytes, or an ``onnx.ModelProto``.
        num_threads: threads for the convolutions (default None: ``cppconv.get_num_threads()``
            at each call).
        precision: float32 precision of the convolutions, ``"highest"`` or ``"high"`` (default
            None: ``cppconv.get_float32_precision()`` at each call).
        compute_dtype: ``"bfloat16"`` runs the float model's convolutions in bfloat16 (weights
            rounded once, activations rounded at each convolution, float32 accumulation, as the
            layers' ``compute_dtype``); None or ``"float32"``: float32.

    Returns:
        A :class:`cppconv.Network`: ``net(x)`` for one input and output, ``net.run(feeds)`` in
        general, ``net.summary()`` for the plan.  The batch size is free.

    Raises:
        ModelError: (a ValueError) an operator or attribute cppconv does not support, or a
            malformed model (an undefined input, a cycle, mismatched shapes), naming the node.
        ImportError: the ``onnx`` package is not installed.
    """
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError('cppconv.onnx.load needs the onnx package: pip install "cppconv[onnx]"') from None
    return Network(model, num_threads=num_threads, precision=precision, compute_dtype=compute_dtype)
